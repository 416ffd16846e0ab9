"""``--json`` gives the Next Engine link's times in UTC, as every other ``--json`` time, not
the token ends in Next Engine's JST beside UTC ones (review fleet F11). The sandbox over HTTP,
the real CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world

ISO = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+([+-]\d\d:\d\d)$")


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path)


def test_status_json_link_times_are_utc(world: World) -> None:
    shown = CliRunner().invoke(app, ["--config", str(world.config), "status", "--json"])
    assert shown.exit_code == 0, shown.output
    link = json.loads(shown.stdout)["nextengine"]
    times = {k: link[k] for k in ("access_token_end", "refresh_token_end", "connected_at")}
    assert all(times.values()), times
    for key, value in times.items():
        match = ISO.match(value)
        assert match and match.group(1) == "+00:00", (key, value)
