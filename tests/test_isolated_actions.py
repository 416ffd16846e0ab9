"""One Next Engine action that fails is held alone; its batch-mates go on (issue #12, 5).

Against the sandbox over HTTP: a stock upload Next Engine refuses as a whole is sent again in
halves, so only the goods code it refuses fails (with the reason and the command that
resolves it) and every other one is applied exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from daemon.cli import app
from daemon.store.engine import read_session
from daemon.store.models import OutboxItem
from tests.conftest import ConfigFactory
from tests.ne_world import AT, RECEIPT_HEADER, SHIP_HEADER, World, make_world


def items(world: World) -> dict[str, OutboxItem]:
    rt = world.runtime()
    try:
        with read_session(rt.engine) as session:
            return {i.subject: i for i in session.scalars(select(OutboxItem))}
    finally:
        rt.close()


def ques(world: World) -> int:
    return len(world.sandbox.ledger.entries(kind="que.create"))


def stock_events(world: World) -> None:
    st = world.sandbox.state
    for code in ("A-1", "B-2", "C-3", "D-4"):
        st.create_goods(code, quantity=10)
    world.products([("P-A", "A-1"), ("P-B", "B-2"), ("P-C", "C-3"), ("P-D", "D-4")])
    world.drop(
        "receipts-1.csv",
        RECEIPT_HEADER,
        [f"R-1,ITAKU,{AT},P-A,5", f"R-2,ITAKU,{AT},P-C,1", f"R-3,ITAKU,{AT},P-D,2"],
    )
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,,,{AT},P-B,10"])


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path)


def test_an_upload_refused_as_a_whole_is_resent_in_parts_and_applied_once(world: World) -> None:
    stock_events(world)
    world.sandbox.state.faults.fail_next_ques(1)  # NE fails the first upload as a whole
    world.run_once()
    assert {s: i.state for s, i in items(world).items()} == {
        "P-A": "done",
        "P-B": "done",
        "P-C": "done",
        "P-D": "done",
    }
    assert [world.uploaded(c) for c in ("A-1", "B-2", "C-3", "D-4")] == [5, -10, 1, 2]
    assert ques(world) == 3  # the failed one, then its two halves
    world.run_once()
    assert ques(world) == 3


@pytest.fixture
def racing_world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    """NE applies uploads all or nothing, and its clock only moves when the test moves it."""
    yield from make_world(
        make_config,
        tmp_path,
        sandbox_options={
            "clock_frozen": True,
            "upload_row_error_mode": "all_or_nothing",
            "que_processing_delay_s": 1.0,
        },
    )


def test_one_refused_goods_code_fails_alone_and_is_retried_after_the_fix(
    racing_world: World,
) -> None:
    world, st = racing_world, racing_world.sandbox.state
    stock_events(world)
    stop = threading.Event()
    allocated: list[int] = []

    def next_engine_time() -> None:
        """Finish each upload; before the first, an order takes 3 of B-2's free stock, so
        B-2's row (-10) fails there although nebridge's check just saw 10 free."""
        seen = 0
        while not stop.is_set():
            created = ques(world)
            if created > seen:
                if not allocated:
                    allocated.append(st.create_order([("B-2", 3)], instruct_date="2099-01-01"))
                seen = created
                st.clock.advance(2)
            stop.wait(0.01)

    driver = threading.Thread(target=next_engine_time, daemon=True)
    driver.start()
    try:
        world.run_once()
        got = items(world)
        assert {s: i.state for s, i in got.items()} == {
            "P-A": "done",
            "P-B": "failed",
            "P-C": "done",
            "P-D": "done",
        }
        assert "B-2" in (got["P-B"].last_error or "")
        assert "nebridge outbox retry" in (got["P-B"].last_error or "")
        assert [world.uploaded(c) for c in ("A-1", "B-2", "C-3", "D-4")] == [5, 0, 1, 2]
        before = ques(world)
        world.run_once()  # nothing is sent again
        assert ques(world) == before

        st.human_edit(allocated[0], {"receive_order_cancel_type_id": "1"})  # the fix in NE
        result = CliRunner().invoke(
            app, ["--config", str(world.config), "outbox", "retry", str(got["P-B"].id)]
        )
        assert result.exit_code == 0, result.stderr
        world.run_once()
    finally:
        stop.set()
        driver.join()
    assert items(world)["P-B"].state == "done"
    assert [world.uploaded(c) for c in ("A-1", "B-2", "C-3", "D-4")] == [5, -10, 1, 2]


def test_an_order_next_engine_refuses_to_ship_fails_alone_and_ships_after_the_fix(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    for world in make_world(
        make_config, tmp_path, sandbox_options={"shipped_allowed_from_20": False}
    ):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        good, bad = (st.create_order([("A-1", 1)], shop_id=1) for _ in range(2))
        world.products([("P-A", "A-1")])
        world.run_once()
        # after import someone moves the order's print-instruct date into the future:
        # Next Engine then refuses to hand it over (receipted), so it cannot be shipped
        st.human_edit(
            bad, {"receive_order_statement_delivery_instruct_printing_date": "2099-01-01 00:00:00"}
        )
        world.drop(
            "shipments-1.csv",
            SHIP_HEADER,
            [f"S-1,ITAKU,{bad},T-1,{AT},P-A,1", f"S-2,ITAKU,{good},T-2,{AT},P-A,1"],
        )
        world.run_once()
        assert world.sandbox.ledger.shipped_order_ids() == [good]
        failed = items(world)[str(bad)]
        assert failed.state == "failed"
        assert f"nebridge outbox retry {failed.id}" in (failed.last_error or "")
        calls = len(world.sandbox.ledger.entries())
        world.run_once()  # held: not sent again by itself
        assert not [
            e
            for e in world.sandbox.ledger.entries(since=calls, order_id=bad)
            if e.kind.startswith("order.")
        ]

        st.human_edit(
            bad, {"receive_order_statement_delivery_instruct_printing_date": "2026-01-01 00:00:00"}
        )
        result = CliRunner().invoke(
            app, ["--config", str(world.config), "outbox", "retry", str(failed.id)]
        )
        assert result.exit_code == 0, result.stderr
        world.run_once()
        assert world.sandbox.ledger.shipped_order_ids() == [good, bad]
        assert world.order(bad)["receive_order_delivery_cut_form_id"] == "T-1"
