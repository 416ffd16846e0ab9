"""The usual ``postgresql://`` URL reaches PostgreSQL through psycopg 3 (the driver shipped)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.config import DaemonConfig
from daemon.store.engine import driver_problem

PG_URL = os.environ.get("NEBRIDGE_TEST_DATABASE_URL", "")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgresql_url_means_psycopg3(scheme: str) -> None:
    config = DaemonConfig.model_validate({"database_url": f"{scheme}://nb@db.example/nebridge"})
    assert config.resolved_database_url == "postgresql+psycopg://nb@db.example/nebridge"
    assert driver_problem(config.resolved_database_url) is None


def test_psycopg2_url_is_told_to_write_psycopg() -> None:
    problem = driver_problem("postgresql+psycopg2://nb@db.example/nebridge")
    assert problem is not None
    assert "postgresql+psycopg://" in problem
    assert "pip install" not in problem


@pytest.mark.skipif(not PG_URL, reason="needs NEBRIDGE_TEST_DATABASE_URL (PostgreSQL)")
def test_status_on_a_plain_postgresql_url_reaches_the_server(tmp_path: Path) -> None:
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    assert plain.startswith("postgresql://")
    (tmp_path / "daemon.yaml").write_text(
        f"state_dir: {tmp_path / 'state'}\ndatabase_url: {plain}\n", encoding="utf-8"
    )
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "daemon.yaml"), "status"])
    assert "database:" in result.output, result.output  # it connected and read the migration
    assert "driver" not in result.output, result.output
