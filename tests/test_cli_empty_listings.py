"""Every listing with nothing to show says so in one line on stdout (never an empty table), and
its ``--json`` is the empty list or the object with empty lists. Real CLI, real installation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world

#: (command, its one line when empty, its --json when empty).
EMPTY: list[tuple[list[str], str, Any]] = [
    (["outbox", "list"], "no outbox items", []),
    (["outbox", "list", "--state", "failed"], "no outbox items in state failed", []),
    (["orders", "list"], "no orders", []),
    (
        ["orders", "list", "--state", "held", "--warehouse", "ITAKU"],
        "no orders in state held of warehouse ITAKU",
        [],
    ),
    (["notify", "list"], "no notifications", []),
    (
        ["plugins", "commands"],
        "no enabled plugin adds a command (`nebridge plugins list` shows the plugins)",
        [],
    ),
    (
        ["attention"],
        "nothing waits for a person",
        {"total": 0, "counts": {}, "limit": 50, "items": []},
    ),
    (
        ["inbox", "list", "--state", "rejected"],
        "no rejected batches",
        {"limit": 50, "rejected": {"total": 0, "items": []}},
    ),
]


def cli(config: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(config), *args])


@pytest.mark.parametrize(
    ("command", "line", "as_json"), EMPTY, ids=[" ".join(c) for c, _, _ in EMPTY]
)
def test_an_empty_listing_says_so_in_one_line(
    make_config: ConfigFactory, command: list[str], line: str, as_json: Any
) -> None:
    config = make_config()
    human = cli(config, *command)
    assert (human.exit_code, human.stdout) == (0, line + "\n"), human.output
    machine = cli(config, *command, "--json")
    assert (machine.exit_code, json.loads(machine.stdout)) == (0, as_json)


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path)


def test_stock_without_drift_says_so_in_one_line(world: World) -> None:
    world.sandbox.state.create_goods("A-1", quantity=3)
    world.products([("P-A", "A-1")])
    world.drop(
        "stock-1.csv",
        "warehouse,product_code,quantity,counted_at",
        ["ITAKU,P-A,3,2026-11-27 12:00:00"],
    )
    world.run_once()
    diff = cli(world.config, "stock", "diff")
    assert (diff.exit_code, diff.stdout) == (0, "no drift (1 goods compared)\n"), diff.output
    assert json.loads(cli(world.config, "stock", "diff", "--json").stdout)["drifts"] == []
    for apply in ([], ["--apply", "--yes"]):
        plan = cli(world.config, "stock", "reconcile", *apply)
        assert (plan.exit_code, plan.stdout) == (0, "no corrections: nothing drifts\n"), plan.output
        machine = json.loads(cli(world.config, "stock", "reconcile", *apply, "--json").stdout)
        assert machine == {"applied": bool(apply), "corrections": []}
