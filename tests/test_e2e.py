"""Order import, the six plugins and dispatch, end to end against the sandbox over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from daemon.admin import run_once
from daemon.store.engine import read_session
from daemon.store.models import ImportedOrder, OutboxItem
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory
from tests.ne_world import AT, RECEIPT_HEADER, SHIP_HEADER, World, make_world


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path)


def once(world: World, dry_run: bool = False):  # type: ignore[no-untyped-def]
    rt = world.runtime()
    try:
        return run_once(rt, dry_run=dry_run)
    finally:
        rt.close()


def test_import_ship_track_and_stock_end_to_end(world: World) -> None:
    st = world.sandbox.state
    for code, qty in (("A-1", 10), ("B-2", 5), ("C-3", 20)):
        st.create_goods(code, quantity=qty)
    o1 = st.create_order([("a-1", 1)], shop_id=1)
    o2 = st.create_order([("B-2", 2)], shop_id=1)
    o3 = st.create_order([("ZZZ-9", 1)], shop_id=1)
    o4 = st.create_order([("A-1", 1)], shop_id=1, cancel_type_id=1)
    o5 = st.create_order([("A-1", 1)], shop_id=1, status_id=50)
    o6 = st.create_order([("A-1", 1)], shop_id=1, instruct_date="2099-01-01 00:00:00")
    world.products([("P-A", "A-1"), ("P-B", "b-2"), ("P-C", "C-3")])

    first = once(world)
    imported = {r["ne_order_id"] for r in world.instructed()}
    assert imported == {str(o1), str(o2)}
    stage = next(r for r in first.stages if r.stage.value == "import_orders"
                 and r.warehouse == "ITAKU")
    assert stage.counts["held"] == 1 and stage.counts["matched_ignoring_case"] == 2
    assert any(f"order {o3} held" in n and "ZZZ-9" in n for n in stage.notices)
    line = next(r for r in world.instructed() if r["ne_order_id"] == str(o1))
    assert (line["product_code"], line["ne_goods_code"], line["quantity"]) == ("P-A", "a-1", "1")

    once(world)  # nothing is imported twice
    assert sorted(r["ne_order_id"] for r in world.instructed()) == sorted([str(o1), str(o2)])

    world.drop("shipments-1.csv", SHIP_HEADER, [
        f"S-1,ITAKU,{o1},TRACK-1,{AT},P-A,1",
        f"S-2,ITAKU,{o2},,{AT},P-B,2",
        f"S-3,ITAKU,,,{AT},P-C,4",
        f"S-4,SHINJUKU,,,{AT},P-C,1",
    ])
    world.drop("receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-A,5",
                                                  f"R-2,SHINJUKU,{AT},P-B,3"])
    report = once(world)
    assert report.ok, report.problems
    assert world.order(o1)["receive_order_order_status_id"] == "50"
    assert world.order(o1)["receive_order_delivery_cut_form_id"] == "TRACK-1"
    assert world.order(o2)["receive_order_order_status_id"] == "50"
    assert not world.order(o2)["receive_order_delivery_cut_form_id"]
    assert world.sandbox.ledger.shipped_order_ids() == [o1, o2]
    assert world.uploaded("C-3") == -4 and world.uploaded("A-1") == 5
    assert world.uploaded("B-2") == 0
    for order in (o4, o5, o6):
        assert str(order) not in {r["ne_order_id"] for r in world.instructed()}

    again = once(world)  # a second pass sends nothing more
    assert again.ok
    assert world.sandbox.ledger.shipped_order_ids() == [o1, o2]
    assert world.uploaded("C-3") == -4


def test_cancelled_after_import_is_never_shipped_and_is_reported(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    order = st.create_order([("A-1", 1)], shop_id=1)
    world.products([("P-A", "A-1")])
    once(world)
    st.human_edit(order, {"receive_order_cancel_type_id": "1"})
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},T-1,{AT},P-A,1"])
    once(world)
    assert world.sandbox.ledger.shipped_order_ids() == []
    rt = world.runtime()
    with read_session(rt.engine) as session:
        item = session.scalars(select(OutboxItem)).one()
    rt.close()
    assert item.state == "skipped" and "cancelled in Next Engine after import" in (
        item.last_error or "")


def test_concurrent_edit_020006_is_reread_and_reapplied(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    order = st.create_order([("A-1", 1)], shop_id=1)
    world.products([("P-A", "A-1")])
    once(world)
    world.sandbox.faults.human_edit_next(2, path="/api_v1_receiveorder_base/shipped")
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},T-9,{AT},P-A,1"])
    report = once(world)
    assert report.ok, report.problems
    assert world.sandbox.ledger.shipped_order_ids() == [order]
    assert world.order(order)["receive_order_delivery_cut_form_id"] == "T-9"


def test_stock_is_aggregated_into_one_upload_per_dispatch(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=100)
    world.products([("P-A", "A-1"), ("P-A2", "a-1"), ("P-X", "")])
    world.drop("receipts-1.csv", RECEIPT_HEADER,
               [f"R-{i},ITAKU,{AT},P-A,{i}" for i in range(1, 11)]
               + [f"R-B{i},ITAKU,{AT},P-A2,1" for i in range(1, 4)]
               + [f"R-X,ITAKU,{AT},P-X,2"])
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-{i},ITAKU,,,{AT},P-A,2" for i in range(5)])
    report = once(world)
    assert world.uploaded("A-1") == sum(range(1, 11)) + 3 - 10
    assert len(world.sandbox.ledger.entries(kind="stock.upload")) == 1
    problems = " ".join(report.problems)
    assert report.attention["failed_actions"] == 1, problems
    rt = world.runtime()
    with read_session(rt.engine) as session:
        failed = session.scalars(select(OutboxItem).where(OutboxItem.state == "failed")).one()
        done = session.scalars(select(OutboxItem).where(OutboxItem.state == "done")).all()
    rt.close()
    assert failed.subject == "P-X" and "no link code" in (failed.last_error or "")
    assert len(done) == 18 and all("uploaded in que" in (d.result or "") for d in done)


def test_tag_filter_exact_token_only(make_config: ConfigFactory, tmp_path: Path) -> None:
    plugins = {**DEFAULT_PLUGINS, "tag_filter": {"enabled": True}}
    for world in make_world(make_config, tmp_path, plugins=plugins):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        tagged = st.create_order([("A-1", 1)], shop_id=1, tag="[x][ロジクラ受注取込対象]")
        lookalike = st.create_order([("A-1", 1)], shop_id=1, tag="[ロジクラ受注取込対象外]")
        inside = st.create_order([("A-1", 1)], shop_id=1, tag="[旧ロジクラ受注取込対象]")
        bare = st.create_order([("A-1", 1)], shop_id=1, tag="ロジクラ受注取込対象")
        none = st.create_order([("A-1", 1)], shop_id=1)
        world.products([("P-A", "A-1")])
        report = once(world)
        assert {r["ne_order_id"] for r in world.instructed()} == {str(tagged)}
        stage = next(r for r in report.stages if r.stage.value == "import_orders")
        assert stage.counts["skipped"] == 4
        assert {lookalike, inside, bare, none}


def test_case_collision_is_held_naming_both_products(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    for world in make_world(make_config, tmp_path):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=5)
        order = st.create_order([("A-1", 1)], shop_id=1)
        world.products([("P-UP", "A-1"), ("P-LOW", "a-1")])
        once(world)
        assert world.instructed() == []
        rt = world.runtime()
        with read_session(rt.engine) as session:
            held = session.get(ImportedOrder, str(order))
        rt.close()
        assert held is not None and held.state == "held"
        assert "P-UP" in (held.hold_reason or "") and "P-LOW" in (held.hold_reason or "")
        world.products([("P-UP", "A-1"), ("P-LOW", "other-code")])  # fixed in the WMS
        once(world)
        assert [r["product_code"] for r in world.instructed()] == ["P-UP"]


def test_exact_match_when_case_insensitive_match_is_off(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    plugins = {**DEFAULT_PLUGINS, "case_insensitive_match": {"enabled": False}}
    for world in make_world(make_config, tmp_path, plugins=plugins):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=5)
        exact = st.create_order([("A-1", 1)], shop_id=1)
        other_case = st.create_order([("a-1", 1)], shop_id=1)
        world.products([("P-A", "A-1")])
        once(world)
        assert {r["ne_order_id"] for r in world.instructed()} == {str(exact)}
        assert other_case


def test_dry_run_prints_and_changes_nothing(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=5)
    world.products([("P-A", "A-1")])
    once(world)  # the product master is in place
    order = st.create_order([("A-1", 1)], shop_id=1)
    before = len(world.sandbox.ledger.entries())
    report = once(world, dry_run=True)
    stage = next(r for r in report.stages if r.stage.value == "import_orders")
    assert any(f"import order {order} into ITAKU" in p for p in stage.planned)
    assert world.instructed() == []
    assert len(world.sandbox.ledger.entries()) == before
