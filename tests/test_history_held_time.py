"""``history`` gives the "plugins decided: held" row the time it was held (review F5): a
shipment for an order nebridge never imported is held, and its row had no time ("-"). Real
sandbox over HTTP, real CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.admin import run_once
from daemon.cli import app
from tests.conftest import ConfigFactory
from tests.ne_world import AT, SHIP_HEADER, World, make_world


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path)


def test_the_held_row_of_a_shipment_has_its_time(world: World) -> None:
    world.sandbox.state.create_goods("A-1", quantity=50)
    world.products([("P-A", "A-1")])
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-9,ITAKU,4242,TRK-9,{AT},P-A,1"])
    rt = world.runtime()
    try:
        run_once(rt)
    finally:
        rt.close()
    for args in (["--shipment", "S-9"], ["--order", "4242"]):
        result = CliRunner().invoke(
            app, ["--config", str(world.config), "history", *args, "--json"]
        )
        assert result.exit_code == 0, result.output
        [held] = [s for s in json.loads(result.stdout)["steps"] if s["what"].endswith("held")]
        assert held["what"] == "plugins decided: held" and held["at"] is not None
        table = CliRunner().invoke(app, ["--config", str(world.config), "history", *args])
        [row] = [line for line in table.stdout.splitlines() if "decided: held" in line]
        assert not row.strip(" │|").startswith("-")
