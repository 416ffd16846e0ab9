"""Inbox files under a name no format has are reported, not ignored forever (review F24).

``shipment_20261203.csv`` (one letter off) or ``shipments-x.txt`` used to sit in the inbox
with every check green while no shipment reached Next Engine. Now each gets a log line and
one ``file_not_taken`` item names them with the accepted patterns, closed once they are gone.
Hidden and ``.part``/``.tmp`` files (a WMS still writing) stay quiet. The real CLI over a
real installation signed in to the sandbox.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory
from tests.ne_world import SHIP_HEADER, World, make_world


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path)


def cli(world: World, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(world.config), *args])


def stray(world: World, name: str) -> Path:
    path = world.inbox / name
    path.write_text(SHIP_HEADER + "\n", encoding="utf-8")
    past = time.time() - 60  # finished a minute ago
    os.utime(path, (past, past))
    return path


def not_taken(world: World) -> list[dict[str, Any]]:
    items = json.loads(cli(world, "attention", "--json").stdout)["items"]
    return [i for i in items if i["kind"] == "file_not_taken"]


def test_unknown_names_are_told_until_they_are_gone(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.inbox.mkdir(parents=True, exist_ok=True)
    strays = [stray(world, "shipment_20261203.csv"), stray(world, "shipments-x.txt")]
    for quiet in (".shipments-hidden.csv", "shipments-2.csv.part", "receipts-3.tmp"):
        stray(world, quiet)
    with caplog.at_level(logging.WARNING):
        cli(world, "run", "--once")
    [item] = not_taken(world)
    assert "shipment_20261203.csv" in item["reason"] and "shipments-x.txt" in item["reason"]
    assert "hidden" not in item["reason"] and ".part" not in item["reason"]
    assert "shipments*.csv" in item["fix"] and "stock*.csv" in item["fix"]
    told = [r.getMessage() for r in caplog.records if "matches no file kind" in r.getMessage()]
    assert len(told) == 2 and any("shipments-x.txt" in m for m in told), told

    doctor = json.loads(cli(world, "doctor", "--offline", "--json").stdout)
    warned = [c for c in doctor["checks"] if c["status"] == "warn"]
    assert any("file not taken" in json.dumps(c).replace("_", " ") for c in warned), warned

    for path in strays:
        path.unlink()
    cli(world, "run", "--once")
    assert not_taken(world) == []
