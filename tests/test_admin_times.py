"""Times the new-admin review found outside the configured zone (F1, F28).

``stock diff``'s explanation carried Next Engine's own record time (JST) and ``run --once``
listed attention in UTC, while every other listing shows daemon.yaml's ``timezone``.
Asia/Kolkata (+05:30) is neither. A real installation on the sandbox over HTTP, the real CLI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world

ZONE = "Asia/Kolkata"
OFFSETS = ("+09:00", "+00:00", "Z ")


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path, timezone=ZONE)


def cli(world: World, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(world.config), *args], env={"COLUMNS": "400"})


def test_stock_diff_explanation_shows_next_engines_time_in_the_zone(world: World) -> None:
    world.sandbox.state.create_goods("A-1", quantity=3)
    world.products([("P-A", "A-1")])
    world.drop(
        "stock-1.csv",
        "warehouse,product_code,quantity,counted_at",
        ["ITAKU,P-A,3,2026-11-27T12:00:00+09:00"],
    )
    world.run_once()
    reply = requests.post(
        f"{world.sandbox.base_url}/_sandbox/human_edit/stock",
        json={"goods_id": "A-1", "quantity": 5},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    for args in (("stock", "diff"), ("stock", "reconcile")):
        result = cli(world, *args)
        assert "stock record" in result.stdout, result.output
        moment = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30"  # a table cell may wrap before it
        assert re.search(moment, result.stdout), result.stdout
        assert not any(offset in result.stdout for offset in OFFSETS), result.stdout


def test_run_once_lists_attention_in_the_zone(world: World) -> None:
    world.drop("shipments-bad.csv", "no,such,columns", ["1,2,3"])
    result = cli(world, "run", "--once")
    assert result.exit_code == 1, result.output
    assert "rejected_file" in result.stdout and "(since " in result.stdout, result.stdout
    since = result.stdout.split("(since ", 1)[1].split(")", 1)[0]
    assert since.endswith("+05:30"), result.stdout
