"""Human output shows every time in daemon.yaml's ``timezone``, as ISO 8601 with its offset.

A zone that is neither UTC, nor Japan's, nor (likely) the machine's: Asia/Kolkata, +05:30.
A real installation signed in to the Next Engine sandbox over HTTP, the real CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world

ZONE = "Asia/Kolkata"
#: An ISO 8601 time to the second in that zone.
IN_ZONE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30"


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path, timezone=ZONE)


def cli(world: World, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(world.config), *args])


def test_status_doctor_and_stock_diff_show_times_in_the_configured_zone(world: World) -> None:
    status = cli(world, "status")
    assert status.exit_code == 0, status.output
    assert re.search(
        rf"^  access token until {IN_ZONE}, refresh token until {IN_ZONE}$",
        status.stdout,
        re.M,
    ), status.stdout

    doctor = cli(world, "doctor", "--offline", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    horizon = checks["refresh-token horizon"]["detail"]
    assert re.fullmatch(rf"refresh token valid for \d+[dhms]( \d+[hms])?, until {IN_ZONE}", horizon)

    world.sandbox.state.create_goods("A-1", quantity=3)
    world.products([("P-A", "A-1")])
    world.drop(
        "stock-1.csv",
        "warehouse,product_code,quantity,counted_at",
        ["ITAKU,P-A,3,2026-11-27T12:00:00+09:00"],
    )
    assert world.run_once().intake is not None
    diff = cli(world, "stock", "diff")
    assert diff.exit_code == 0, diff.output
    assert re.search(
        r"ITAKU: snapshot \S+ counted at 2026-11-27T08:30:00\+05:30$", diff.stderr, re.M
    ), diff.stderr
