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

    first = world.run_once()
    imported = {r["ne_order_id"] for r in world.instructed()}
    assert imported == {str(o1), str(o2)}
    stage = next(
        r for r in first.stages if r.stage.value == "import_orders" and r.warehouse == "ITAKU"
    )
    assert stage.counts["held"] == 1 and stage.counts["matched_ignoring_case"] == 2
    assert any(f"order {o3} held" in n and "ZZZ-9" in n for n in stage.notices)
    line = next(r for r in world.instructed() if r["ne_order_id"] == str(o1))
    assert (line["product_code"], line["ne_goods_code"], line["quantity"]) == ("P-A", "a-1", "1")

    world.run_once()  # nothing is imported twice
    assert sorted(r["ne_order_id"] for r in world.instructed()) == sorted([str(o1), str(o2)])

    world.drop(
        "shipments-1.csv",
        SHIP_HEADER,
        [
            f"S-1,ITAKU,{o1},TRACK-1,{AT},P-A,1",
            f"S-2,ITAKU,{o2},,{AT},P-B,2",
            f"S-3,ITAKU,,,{AT},P-C,4",
            f"S-4,SHINJUKU,,,{AT},P-C,1",
        ],
    )
    world.drop(
        "receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-A,5", f"R-2,SHINJUKU,{AT},P-B,3"]
    )
    report = world.run_once()
    assert report.problems == [], report.problems
    assert report.attention.counts == {"held_order": 1}  # o3 waits; run --once exits 1
    assert report.attention.items[0].subject == str(o3)
    assert world.order(o1)["receive_order_order_status_id"] == "50"
    assert world.order(o1)["receive_order_delivery_cut_form_id"] == "TRACK-1"
    assert world.order(o2)["receive_order_order_status_id"] == "50"
    assert not world.order(o2)["receive_order_delivery_cut_form_id"]
    assert world.sandbox.ledger.shipped_order_ids() == [o1, o2]
    assert world.uploaded("C-3") == -4 and world.uploaded("A-1") == 5
    assert world.uploaded("B-2") == 0
    for order in (o4, o5, o6):
        assert str(order) not in {r["ne_order_id"] for r in world.instructed()}

    again = world.run_once()  # a second pass sends nothing more; the held order stays visible
    assert again.problems == [] and again.attention.counts == {"held_order": 1}
    assert world.sandbox.ledger.shipped_order_ids() == [o1, o2]
    assert world.uploaded("C-3") == -4


def test_cancelled_after_import_is_never_shipped_and_is_reported(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    order = st.create_order([("A-1", 1)], shop_id=1)
    world.products([("P-A", "A-1")])
    world.run_once()
    st.human_edit(order, {"receive_order_cancel_type_id": "1"})
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},T-1,{AT},P-A,1"])
    world.run_once()
    assert world.sandbox.ledger.shipped_order_ids() == []
    rt = world.runtime()
    with read_session(rt.engine) as session:
        item = session.scalars(select(OutboxItem)).one()
    rt.close()
    assert item.state == "skipped" and "cancelled in Next Engine after import" in (
        item.last_error or ""
    )


def test_concurrent_edit_020006_is_reread_and_reapplied(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    order = st.create_order([("A-1", 1)], shop_id=1)
    world.products([("P-A", "A-1")])
    world.run_once()
    world.sandbox.faults.human_edit_next(2, path="/api_v1_receiveorder_base/shipped")
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},T-9,{AT},P-A,1"])
    report = world.run_once()
    assert report.ok, report.problems
    assert world.sandbox.ledger.shipped_order_ids() == [order]
    assert world.order(order)["receive_order_delivery_cut_form_id"] == "T-9"


def test_stock_is_aggregated_into_one_upload_per_dispatch(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=100)
    world.products([("P-A", "A-1"), ("P-A2", "a-1"), ("P-X", "")])
    world.drop(
        "receipts-1.csv",
        RECEIPT_HEADER,
        [f"R-{i},ITAKU,{AT},P-A,{i}" for i in range(1, 11)]
        + [f"R-B{i},ITAKU,{AT},P-A2,1" for i in range(1, 4)]
        + [f"R-X,ITAKU,{AT},P-X,2"],
    )
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-{i},ITAKU,,,{AT},P-A,2" for i in range(5)])
    report = world.run_once()
    assert world.uploaded("A-1") == sum(range(1, 11)) + 3 - 10
    assert len(world.sandbox.ledger.entries(kind="stock.upload")) == 1
    problems = " ".join(report.problems)
    assert report.attention.counts == {"failed_action": 1}, problems
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
        report = world.run_once()
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
        world.run_once()
        assert world.instructed() == []
        rt = world.runtime()
        with read_session(rt.engine) as session:
            held = session.get(ImportedOrder, str(order))
        rt.close()
        assert held is not None and held.state == "held"
        assert "P-UP" in (held.hold_reason or "") and "P-LOW" in (held.hold_reason or "")
        world.products([("P-UP", "A-1"), ("P-LOW", "other-code")])  # fixed in the WMS
        world.run_once()
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
        world.run_once()
        assert {r["ne_order_id"] for r in world.instructed()} == {str(exact)}
        assert other_case


def test_dry_run_prints_every_action_and_changes_nothing(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=5)
    world.products([("P-A", "A-1")])
    shipped_later = st.create_order([("A-1", 1)], shop_id=1)
    world.run_once()  # product master in place, one order imported
    new_order = st.create_order([("A-1", 2)], shop_id=1)
    world.drop(
        "shipments-1.csv",
        SHIP_HEADER,
        [f"S-1,ITAKU,{shipped_later},T-77,{AT},P-A,1", f"S-2,ITAKU,,,{AT},P-A,3"],
    )
    files_before = sorted(p.relative_to(world.inbox.parent) for p in world.inbox.parent.rglob("*"))
    ledger_before = len(world.sandbox.ledger.entries())
    rt = world.runtime()
    try:
        with read_session(rt.engine) as session:
            outbox_before = len(session.scalars(select(OutboxItem)).all())
        report = run_once(rt, dry_run=True)
        with read_session(rt.engine) as session:
            outbox_after = len(session.scalars(select(OutboxItem)).all())
    finally:
        rt.close()
    planned = [p for r in report.stages for p in r.planned]
    assert any(f"import order {new_order} into ITAKU" in p for p in planned)
    assert any(
        f"ship Next Engine order {shipped_later} with tracking number T-77" in p for p in planned
    )
    assert any("change Next Engine stock of WMS product P-A by -3" in p for p in planned)
    assert any(p.startswith("ship_order") for p in report.dispatch_plan)
    assert any(p.startswith("adjust_stock") for p in report.dispatch_plan)
    assert outbox_before == outbox_after == 0
    assert len(world.sandbox.ledger.entries()) == ledger_before
    assert (
        sorted(p.relative_to(world.inbox.parent) for p in world.inbox.parent.rglob("*"))
        == files_before
    )
    assert str(new_order) not in {r["ne_order_id"] for r in world.instructed()}


PLUGIN_CASES = {
    "all on": ({}, True, True, True, True),
    "tracking_update off": ({"tracking_update": False}, True, False, True, True),
    "stock_minus off": ({"stock_minus": False}, True, True, False, True),
    "stock_plus off": ({"stock_plus": False}, True, True, True, False),
    "status_update off": (
        {"status_update": False, "tracking_update": False, "stock_minus": False},
        False,
        False,
        False,
        True,
    ),
}


@pytest.mark.parametrize("case", list(PLUGIN_CASES))
def test_each_plugin_on_and_off(make_config: ConfigFactory, tmp_path: Path, case: str) -> None:
    switches, ships, tracks, minus, plus = PLUGIN_CASES[case]
    plugins = {
        name: {"enabled": switches.get(name, section["enabled"])}
        for name, section in DEFAULT_PLUGINS.items()
    }
    for world in make_world(make_config, tmp_path, plugins=plugins):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        st.create_goods("B-2", quantity=50)
        order = st.create_order([("A-1", 1)], shop_id=1)
        world.products([("P-A", "A-1"), ("P-B", "B-2")])
        world.run_once()
        world.drop(
            "shipments-1.csv",
            SHIP_HEADER,
            [
                f"S-1,ITAKU,{order},T-1,{AT},P-A,1",
                f"S-2,ITAKU,,,{AT},P-B,4",
                f"S-3,SHINJUKU,,,{AT},P-B,6",
            ],
        )
        world.drop(
            "receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-A,9", f"R-2,SHINJUKU,{AT},P-A,8"]
        )
        world.run_once()
        snapshot = world.order(order)
        assert (snapshot["receive_order_order_status_id"] == "50") is ships
        assert (snapshot["receive_order_delivery_cut_form_id"] == "T-1") is tracks
        assert world.uploaded("B-2") == (-4 if minus else 0)  # never SHINJUKU's 6
        assert world.uploaded("A-1") == (9 if plus else 0)  # never SHINJUKU's 8


def test_orders_imported_before_status_update_was_on_are_shipped(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    off = {
        **DEFAULT_PLUGINS,
        "status_update": {"enabled": False},
        "tracking_update": {"enabled": False},
        "stock_minus": {"enabled": False},
    }
    for world in make_world(make_config, tmp_path, plugins=off):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        order = st.create_order([("A-1", 1)], shop_id=1)
        world.products([("P-A", "A-1")])
        world.run_once()  # imported while status_update is off
        text = world.config.read_text(encoding="utf-8")
        world.config.write_text(
            text.replace("status_update:\n    enabled: false", "status_update:\n    enabled: true"),
            encoding="utf-8",
        )
        world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},,{AT},P-A,1"])
        world.run_once()
        assert world.order(order)["receive_order_order_status_id"] == "50"


def test_order_shipped_by_hand_in_next_engine_is_not_shipped_again(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=50)
    order = st.create_order([("A-1", 1)], shop_id=1)
    world.products([("P-A", "A-1")])
    world.run_once()
    st.ship_order(order, world.order(order)["receive_order_last_modified_date"], source="human")
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},T-1,{AT},P-A,1"])
    report = world.run_once()
    assert world.sandbox.ledger.shipped_order_ids() == [order]
    assert report.attention.total == 0, report.attention
    rt = world.runtime()
    with read_session(rt.engine) as session:
        item = session.scalars(select(OutboxItem)).one()
    rt.close()
    assert item.state == "skipped" and "already shipped" in (item.last_error or "")


def test_routing_by_shop_id_when_several_warehouses_import(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    warehouses = [
        {
            "code": "ITAKU",
            "name": "委託販売在庫",
            "ne_linked": True,
            "import_orders": True,
            "shop_ids": ["1", "3"],
        },
        {"code": "OSAKA", "name": "大阪", "ne_linked": True, "import_orders": True},
        {"code": "SHINJUKU", "name": "新宿拠点", "ne_linked": False, "import_orders": False},
    ]
    for world in make_world(make_config, tmp_path, warehouses=warehouses):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        by_shop = {shop: st.create_order([("A-1", 1)], shop_id=shop) for shop in (1, 2, 3, 4)}
        world.products([("P-A", "A-1")])
        world.run_once()
        routed = {int(r["ne_order_id"]): r["warehouse"] for r in world.instructed()}
        assert routed == {
            by_shop[1]: "ITAKU",
            by_shop[3]: "ITAKU",
            by_shop[2]: "OSAKA",
            by_shop[4]: "OSAKA",
        }


def test_two_catch_all_importers_or_a_shop_routed_twice_are_refused(tmp_path: Path) -> None:
    from daemon.config import ConfigError, load_config
    from tests.conftest import dump_yaml

    path = tmp_path / "daemon.yaml"
    for warehouses, message in (
        (
            [{"code": "A", "import_orders": True}, {"code": "B", "import_orders": True}],
            "give all but one of them `shop_ids`",
        ),
        (
            [
                {"code": "A", "import_orders": True, "shop_ids": ["1"]},
                {"code": "B", "import_orders": True, "shop_ids": ["1"]},
            ],
            "routed to both A and B",
        ),
    ):
        path.write_text(dump_yaml({"warehouses": warehouses}), encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_order_at_20_is_handed_over_first_when_next_engine_ships_only_printed_orders(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    for world in make_world(
        make_config, tmp_path, sandbox_options={"shipped_allowed_from_20": False}
    ):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        order = st.create_order([("A-1", 1)], shop_id=1)
        world.products([("P-A", "A-1")])
        world.run_once()
        world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},T-5,{AT},P-A,1"])
        report = world.run_once()
        assert report.ok, report.problems
        assert world.sandbox.ledger.count("order.receipted", order_id=order) == 1
        assert world.sandbox.ledger.shipped_order_ids() == [order]
        assert world.order(order)["receive_order_delivery_cut_form_id"] == "T-5"


def test_claim_receipted_moves_imported_orders_to_40(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    for world in make_world(make_config, tmp_path, order_import={"claim": "receipted"}):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        order = st.create_order([("A-1", 1)], shop_id=1)
        world.products([("P-A", "A-1")])
        world.run_once()
        assert world.order(order)["receive_order_order_status_id"] == "40"
        world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},T-6,{AT},P-A,1"])
        world.run_once()
        assert world.order(order)["receive_order_order_status_id"] == "50"


def test_claim_tag_appends_the_tag_once(make_config: ConfigFactory, tmp_path: Path) -> None:
    for world in make_world(make_config, tmp_path, order_import={"claim": "tag"}):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        order = st.create_order([("A-1", 1)], shop_id=1, tag="[ギフト]")
        world.products([("P-A", "A-1")])
        world.run_once()
        world.run_once()
        assert world.order(order)["receive_order_gruoping_tag"] == "[ギフト][nebridge取込済]"
        assert world.order(order)["receive_order_order_status_id"] == "20"
