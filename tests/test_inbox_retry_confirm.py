"""Retrying a held partial shipment says it ships the whole order, and asks (review F10).

``inbox retry --event`` of a shipment the ship check held is the admin's confirmation
(README): Next Engine ships the order as it holds it. The command used to answer only
"pending again; the next pipeline run processes it", which reads as a harmless re-check.
Real sandbox over HTTP, real database, the real CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory
from tests.ne_world import AT, SHIP_HEADER, World, make_world


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path)


def cli(world: World, *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, ["--config", str(world.config), *args], input=input)


def shipped(world: World, order: int) -> bool:
    return str(world.order(order)["receive_order_order_status_id"]) == "50"


def test_retrying_a_partial_shipment_warns_and_asks(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=100)
    st.create_goods("B-2", quantity=100)
    order = st.create_order([("A-1", 3), ("B-2", 1)], shop_id=1)
    first = st.create_order([("A-1", 1)], shop_id=1)
    world.products([("P-A", "A-1"), ("P-B", "B-2")])
    cli(world, "run", "--once")
    world.drop(
        "shipments-1.csv",
        SHIP_HEADER,
        [
            f"S-10,ITAKU,{order},TRK-1,{AT},P-A,3",
            f"S-1,ITAKU,{first},TRK-2,{AT},P-A,1",
            f"S-1B,ITAKU,{first},TRK-3,{AT},P-A,1",
        ],
    )
    cli(world, "run", "--once")
    assert not shipped(world, order)

    refused = cli(world, "inbox", "retry", "--event", "shipment:S-10", input="n\n")
    assert refused.exit_code == 1, refused.output
    warning = " ".join(refused.stderr.split())
    assert f"Next Engine order {order} is shipped WHOLE" in warning, warning
    assert "not shipped P-B ×1" in warning, warning
    assert "add --yes" in warning
    assert cli(world, "inbox", "retry", "--event", "shipment:S-10", input="").exit_code == 1
    cli(world, "run", "--once")
    assert not shipped(world, order)  # still held: nothing changed

    taken = cli(world, "inbox", "retry", "--event", "shipment:S-10", input="y\n")
    assert taken.exit_code == 0, taken.output
    assert f"ships Next Engine order {order} whole" in " ".join(taken.stderr.split())
    cli(world, "run", "--once")
    assert shipped(world, order)

    second = cli(world, "inbox", "retry", "--event", "shipment:S-1B")  # asks nothing
    assert second.exit_code == 0, second.output
    assert "nothing is sent to Next Engine" in " ".join(second.stderr.split())
