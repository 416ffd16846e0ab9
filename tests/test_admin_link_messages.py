"""What an admin is told about the Next Engine link (new-admin review F21, F23, F29).

A stale sign-in pair says to sign in again (not "stop NE work"); doctor's fix for a dead
pair names `nebridge connect` and marks the link row failed; a deliberate unlink closes
``ne_link_lost``. Real sandbox over HTTP, real database, the real CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.config import load_config
from daemon.negate import NeGate
from daemon.nelink import make_client
from daemon.nextengine.errors import NeReauthRequired
from daemon.store.engine import make_engine
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path)


def cli(world: World, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(world.config), *args])


def lose_the_link(world: World) -> None:
    """Both tokens lapse and a Next Engine worker meets the refusal, as the daemon would."""
    config = load_config(world.config).config
    engine = make_engine(config.resolved_database_url)
    client = make_client(config)
    try:
        world.sandbox.clock.advance(4 * 86400)
        with pytest.raises(NeReauthRequired) as lost:
            client.company_info()
        NeGate(engine).observe(lost.value)
    finally:
        client.close()
        engine.dispose()


def test_a_used_sign_in_pair_says_to_sign_in_again(world: World) -> None:
    uid, state = world.sandbox.state.issue_login()
    assert cli(world, "connect", "--uid", uid, "--state", state).exit_code == 0
    again = cli(world, "connect", "--uid", uid, "--state", state)
    assert again.exit_code == 1
    assert "expired" in again.stderr and "sign in to Next Engine again" in again.stderr
    assert "stop NE work" not in again.stderr and "re-connect the company" not in again.stderr


def test_doctor_on_a_dead_pair_names_nebridge_connect(world: World) -> None:
    world.sandbox.clock.advance(4 * 86400)  # NE no longer accepts the stored pair
    result = cli(world, "doctor", "--json")
    assert result.exit_code == 1, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    link, reachable = checks["nextengine link"], checks["nextengine reachable"]
    assert link["ok"] is False and "nebridge connect" in link["fix"]
    assert reachable["ok"] is False and "nebridge connect" in reachable["fix"]
    assert "stop NE work" not in result.stdout
    assert reachable["fix"] not in reachable["detail"]  # said once, in the fix column


def test_status_says_the_fix_once_for_a_lost_link(world: World) -> None:
    lose_the_link(world)
    line = next(
        ln for ln in cli(world, "status").stdout.splitlines() if "NEEDS RE-CONNECTION" in ln
    )
    assert line.count("nebridge connect") == 1, line
    assert "stop NE work" not in line


def test_unlink_closes_the_lost_link_item(world: World) -> None:
    lose_the_link(world)
    kinds = [i["kind"] for i in json.loads(cli(world, "attention", "--json").stdout)["items"]]
    assert "ne_link_lost" in kinds
    assert cli(world, "unlink", "--yes").exit_code == 0
    after = json.loads(cli(world, "attention", "--json").stdout)
    assert "ne_link_lost" not in [i["kind"] for i in after["items"]], after
    assert "not connected" in cli(world, "status").stdout
