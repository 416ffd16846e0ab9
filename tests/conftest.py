"""Shared fixtures: configurations in tmp folders, both databases, the fake plugin site."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from daemon.testing.installation import DEFAULT_PLUGINS, DEFAULT_WAREHOUSES, dump_yaml, write_config

__all__ = ["DEFAULT_PLUGINS", "DEFAULT_WAREHOUSES", "ConfigFactory", "dump_yaml"]

FAKE_SITE = Path(__file__).parent / "fakes" / "site"
PG_ENV = "NEBRIDGE_TEST_DATABASE_URL"
PG_SKIP = (
    f"PostgreSQL tests need {PG_ENV} (e.g. "
    "postgresql+psycopg://postgres@127.0.0.1/test); .ci/run sets it"
)

ConfigFactory = Callable[..., Path]


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """Write a daemon.yaml into tmp_path; keyword arguments override top-level sections."""

    def factory(migrate: bool = True, **overrides: Any) -> Path:
        return write_config(tmp_path, migrate=migrate, **overrides)

    return factory


@pytest.fixture
def fake_site(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Put the fake third-party distribution on sys.path (and PYTHONPATH for subprocesses)."""
    monkeypatch.syspath_prepend(str(FAKE_SITE))
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(p for p in (str(FAKE_SITE), os.environ.get("PYTHONPATH", "")) if p),
    )
    yield FAKE_SITE
    for name in [m for m in sys.modules if m.startswith("nbfake_")]:
        del sys.modules[name]


def pg_base() -> str:
    """The test PostgreSQL server's URL (the test is skipped without one)."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    return base


def schema_url(base: str, schema: str) -> str:
    """``base`` with every session's search_path set to ``schema``."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def fresh_schema(prefix: str, *statements: str) -> Iterator[str]:
    """A new schema named ``prefix`` + a random tail on the test server, dropped with all it
    holds after; ``statements`` run in it first (``{schema}`` stands for its name)."""
    base = pg_base()
    schema = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        for statement in statements:
            conn.execute(text(statement.format(schema=schema)))
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with fresh_schema("nbtest_") as schema:
        yield schema_url(pg_base(), schema)
