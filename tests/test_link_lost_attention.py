"""A lost Next Engine link is attention the moment it is found (attacker review).

It used to reach ``nebridge attention`` (and the notifiers) only when the token guard next
ran, up to 15 minutes later. Now marking the link ``needs_reconnect`` opens ``ne_link_lost``
in the same transaction, and connecting again closes it. Real sandbox over HTTP, real
database (SQLite and PostgreSQL), the real CLI.
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
from daemon.nelink import connect, make_client
from daemon.nextengine.errors import NeReauthRequired
from daemon.store.engine import make_engine
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path, database_url: str) -> Iterator[World]:
    yield from make_world(make_config, tmp_path, database_url=database_url)


def attention(config: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["--config", str(config), "attention", "--json"])
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_link_marked_lost_is_attention_at_once_and_connecting_resolves_it(
    world: World,
) -> None:
    config = load_config(world.config).config
    engine = make_engine(config.resolved_database_url)
    client = make_client(config)
    try:
        assert attention(world.config)["total"] == 0
        world.sandbox.clock.advance(4 * 86400)  # both tokens lapsed: NE wants a new sign-in
        with pytest.raises(NeReauthRequired) as lost:
            client.company_info()
        NeGate(engine).observe(lost.value)  # what every Next Engine worker does with it
        items = attention(world.config)["items"]  # no token guard ran
        [item] = [i for i in items if i["kind"] == "ne_link_lost"]
        assert item["key"] == "ne_link_lost" and "nebridge connect" in item["fix"]
        connect(config, engine, *world.sandbox.state.issue_login())  # the admin signs in
        assert [i for i in attention(world.config)["items"] if i["kind"] == "ne_link_lost"] == []
    finally:
        client.close()
        engine.dispose()
