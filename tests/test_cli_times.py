"""Human output shows every time in daemon.yaml's ``timezone``, as ISO 8601 with its offset.

A zone that is neither UTC, nor Japan's, nor (likely) the machine's: Asia/Kolkata, +05:30.
A real installation signed in to the Next Engine sandbox over HTTP, the real CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.nextengine.tokens import FileTokenStore
from plugins.wms_logikura.sandbox import SandboxServer as LogikuraSandbox
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world
from tests.wms_logikura.conftest import REDIRECT, logikura_section, sandbox_config

ZONE = "Asia/Kolkata"
#: An ISO 8601 time to the second in that zone.
IN_ZONE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30"


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path, timezone=ZONE)


def cli(config: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(config), *args])


def test_status_doctor_and_stock_diff_show_times_in_the_configured_zone(world: World) -> None:
    status = cli(world.config, "status")
    assert status.exit_code == 0, status.output
    assert re.search(
        rf"^  access token until {IN_ZONE}, refresh token until {IN_ZONE}$",
        status.stdout,
        re.M,
    ), status.stdout

    store = FileTokenStore(world.config.parent / "state" / "nextengine-tokens.json")
    tokens = store.load()
    assert tokens is not None
    store.save(replace(tokens, refresh_token_end_date=datetime.now(UTC) + timedelta(hours=5)))
    warned = cli(world.config, "status")
    assert re.search(
        rf"^  WARNING: the Next Engine refresh token lapses in 5\.0 h \(at {IN_ZONE}\);",
        warned.stdout,
        re.M,
    ), warned.stdout
    store.save(tokens)

    doctor = cli(world.config, "doctor", "--offline", "--json")
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
    diff = cli(world.config, "stock", "diff")
    assert diff.exit_code == 0, diff.output
    assert re.search(
        r"ITAKU: snapshot \S+ counted at 2026-11-27T08:30:00\+05:30$", diff.stderr, re.M
    ), diff.stderr


def test_a_plugins_link_detail_shows_its_times_in_the_configured_zone(
    make_config: ConfigFactory,
) -> None:
    """Logikura words its token ends in UTC (it does not know the zone): `wms connect` and
    `wms status` show them in daemon.yaml's."""
    with LogikuraSandbox(sandbox_config()) as lk:
        config = make_config(
            timezone=ZONE, wms={"connector": "logikura", "logikura": logikura_section(lk)}
        )
        code = lk.state.issue_code(REDIRECT)
        for args in (["wms", "connect", "--code", code], ["wms", "status"]):
            result = cli(config, *args)
            assert result.exit_code == 0, result.output
            assert re.match(
                rf"logikura: connected — access token until {IN_ZONE}, refresh token until "
                rf"{IN_ZONE} \(scope [^)]*\)",
                result.stdout,
            ), result.stdout
        machine = json.loads(cli(config, "wms", "status", "--json").stdout)
        assert "+00:00" in machine["detail"]  # --json keeps what the connector said
        doctor = cli(config, "doctor", "--offline")
        assert "wms link (logikura)" in doctor.stdout
        assert "+05:30" in doctor.stdout and "+00:00" not in doctor.stdout, doctor.stdout
