"""Each mapping between Logikura and nebridge, against the sandbox: warehouses, products and
link codes, schedules (items, delivery methods, consignees, order numbers), histories to
events with the Next-Engine-or-not split, the polling window, waiting, rejecting, re-queueing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from hooks.connectors import ConnectorContext, InboundBatch
from hooks.errors import BatchRejected, StepError
from hooks.records import EventKind, WmsEvent, WmsReceipt, WmsShipment
from plugins.wms_logikura import LogikuraConnector
from plugins.wms_logikura.errors import LogikuraConfigError
from plugins.wms_logikura.outbound import consignee_code
from plugins.wms_logikura.sandbox import SandboxServer, WarehouseStaff
from tests.wms_logikura.conftest import (
    FakeTime,
    batch,
    connect,
    make_ctx,
    order,
    sandbox_config,
)


def take(
    connector: LogikuraConnector, kind: EventKind, ctx: ConnectorContext
) -> tuple[list[WmsEvent], list[str], dict[str, str]]:
    """Play the engine's intake: events accepted, sources rejected, the stored positions."""
    events: list[WmsEvent] = []
    rejected: list[str] = []
    cursors = dict(ctx.cursors)
    for item in connector.pending_batches(kind, ctx):
        assert isinstance(item, InboundBatch)
        try:
            found = list(item.events())
        except BatchRejected as error:
            item.reject(error)
            rejected.append(f"{item.source}: {error.errors[0].reason}")
            continue
        events.extend(found)
        if item.cursor is not None:
            cursors[item.cursor[0]] = item.cursor[1]
        item.commit()
    ctx.cursors = cursors
    return events, rejected, cursors


@dataclass
class World:
    """A connected connector, its context and clock, and the warehouse staff."""

    connector: LogikuraConnector
    ctx: ConnectorContext
    clock: FakeTime
    staff: WarehouseStaff

    def variant(self, **changes: Any) -> LogikuraConnector:
        """Another connector on the same state folder, with changed options."""
        return LogikuraConnector(
            self.connector.config.model_copy(update=changes),
            clock=self.clock,
            sleep=self.clock.sleep,
        )


@pytest.fixture
def world(lk: SandboxServer, tmp_path: Path, http: requests.Session) -> Iterator[World]:
    clock = FakeTime(lk)
    connector, ctx = connect(
        lk,
        tmp_path,
        http,
        clock,
        delivery_methods={"ヤマト運輸(宅急便)": "yamato_b2", "2": "japanpost_yu_pack"},
    )
    staff = WarehouseStaff(lk.base_url)
    yield World(connector, ctx, clock, staff)
    staff.close()


def test_warehouses_are_matched_by_code_or_mapping(
    lk: SandboxServer, tmp_path: Path, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeTime(lk)
    connector, _ = connect(
        lk, tmp_path, http, clock, warehouse_codes={"SHINJUKU-STORE": "SHINJUKU"}
    )
    mapped = make_ctx(tmp_path, http, clock, warehouses=("ITAKU", "SHINJUKU-STORE"))
    connector.push_orders(batch("b0", order("1", ("TSHIRT-Red-S", 1))), mapped)
    wrong = make_ctx(tmp_path, http, clock, warehouses=("ITAKU", "OSAKA"))
    with pytest.raises(LogikuraConfigError, match=r"OSAKA.*ASAKUSA, ITAKU, SHINJUKU"):
        connector.push_orders(batch("b1", order("2", ("TSHIRT-Red-S", 1))), wrong)
    caplog.set_level(logging.ERROR)
    with pytest.raises(LogikuraConfigError, match="warehouse_codes"):  # ITAKU is read first
        list(connector.pending_batches(EventKind.RECEIPT, wrong))
    assert "OSAKA" in caplog.text and "warehouse_codes" in caplog.text


@pytest.mark.parametrize(
    ("links", "mode", "expected"),
    [
        (
            "list",
            "link_or_product_code",
            {"P-CASE": "p-case", "P-OTHER": "NE-77", "P-NONE": "P-NONE"},
        ),
        ("embedded", "link", {"P-CASE": "p-case", "P-OTHER": "NE-77", "P-NONE": None}),
        ("none", "link_or_product_code", {"P-CASE": "P-CASE", "P-NONE": "P-NONE"}),
        ("list", "product_code", {"P-CASE": "P-CASE", "P-OTHER": "P-OTHER"}),
    ],
)
def test_product_master_and_link_codes(
    links: str, mode: str, expected: dict[str, str | None], tmp_path: Path, http: requests.Session
) -> None:
    with SandboxServer(sandbox_config(external_links=links, seed_size=0)) as lk:
        lk.state.add_variant("P-CASE", link_code="p-case", stock={"ITAKU": 1})
        lk.state.add_variant("P-OTHER", link_code="NE-77")
        lk.state.add_variant("P-NONE")
        lk.state.add_variant("")  # no 商品コード: known by its id
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock, link_codes=mode)
        snapshot = connector.product_snapshot(ctx, None)
        assert snapshot is not None
        got = {p.product_code: p.link_code for p in snapshot.products}
        assert {code: got[code] for code in expected} == expected
        assert "LK-4" in got


def test_unreadable_links_in_link_mode_are_a_clear_error(
    tmp_path: Path, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    with SandboxServer(sandbox_config(external_links="none", seed_size=2)) as lk:
        clock = FakeTime(lk)
        connected, _ = connect(lk, tmp_path, http, clock)
        connector = LogikuraConnector(
            connected.config.model_copy(update={"link_codes": "link"}),
            clock=clock,
            sleep=clock.sleep,
        )
        clock.advance(901)
        with pytest.raises(LogikuraConfigError, match="link_codes: product_code"):
            connector.product_snapshot(make_ctx(tmp_path, http, clock), None)
        assert "link_codes: product_code" in caplog.text


def test_product_master_is_cached_and_refreshed_on_schedule(
    world: World, lk: SandboxServer
) -> None:
    connector, ctx, clock = world.connector, world.ctx, world.clock
    first = connector.product_snapshot(ctx, None)
    assert first is not None
    calls = lk.state.traffic.snapshot()["calls"]
    assert connector.product_snapshot(ctx, first.version) is None
    assert lk.state.traffic.snapshot()["calls"] == calls  # from the cache
    lk.state.add_variant("NEW-9", link_code="new-9", stock={"ITAKU": 5})
    clock.advance(600)
    assert connector.product_snapshot(ctx, first.version) is None  # not due yet
    clock.advance(301)
    second = connector.product_snapshot(ctx, first.version)
    assert second is not None and second.version != first.version
    assert ("NEW-9", "new-9") in {(p.product_code, p.link_code) for p in second.products}


def test_orders_become_schedules_with_every_mapping(world: World, lk: SandboxServer) -> None:
    connector, ctx, staff = world.connector, world.ctx, world.staff
    same = {"name": "鈴木 一郎", "address": "大阪府大阪市北区1-1"}
    connector.push_orders(
        batch(
            "b1",
            order("101", ("TSHIRT-Red-S", 2), ("Mug-Red-S", 1), **same),
            order("102", ("cap-Red-S", 1), delivery="2", **same),
            order("103", ("cap-Red-S", 1), delivery="謎の便"),
        ),
        ctx,
    )
    first = lk.state.schedules_for("101")[0]
    assert first["sales_order"]["order_number"] == "101"
    assert first["sales_order"]["order_date"] == "2026-11-27"
    assert first["delivery_method"]["code"] == "yamato_b2"
    assert [
        (i["product_variant_id"], i["sales_order_quantity"]) for i in first["shipping_items"]
    ] == [(staff.variant_id("TSHIRT-Red-S"), 2), (staff.variant_id("Mug-Red-S"), 1)]
    assert "101" in first["description"] and "R-101" in first["description"]
    second = lk.state.schedules_for("102")[0]
    assert second["delivery_method"]["code"] == "japanpost_yu_pack"  # mapped by NE id
    assert lk.state.schedules_for("103")[0]["delivery_method"] is None  # no default
    assert first["consignee_id"] == second["consignee_id"]  # same ship-to, one consignee
    consignee = lk.state.consignees[first["consignee_id"]]
    assert consignee.name == "鈴木 一郎" and consignee.code and consignee.code.startswith("NE-")
    assert lk.ledger.count("consignee.create") == 2

    connector.push_orders(batch("b1", order("101", ("TSHIRT-Red-S", 2))), ctx)
    assert lk.ledger.schedules_created() == {"101": 1, "102": 1, "103": 1}


def test_consignee_is_found_by_code_before_creating(world: World, lk: SandboxServer) -> None:
    instruction = order("201", ("cap-Red-S", 1))
    code = consignee_code(world.connector.config, instruction)
    existing = world.staff.call(
        "POST", "/api/v1/consignees", {"consignee": {"code": code, "name": "山田 太郎"}}
    )["consignee"]
    world.connector.push_orders(batch("b1", instruction), world.ctx)
    assert lk.ledger.count("consignee.create") == 1  # the staff's; nebridge found it by code
    assert lk.state.schedules_for("201")[0]["consignee_id"] == existing["id"]


def test_unmapped_delivery_and_unknown_products_fail_only_their_order(
    world: World, lk: SandboxServer
) -> None:
    ctx = world.ctx
    strict = world.variant(unmapped_delivery_method="fail")
    with pytest.raises(StepError) as failed:
        strict.push_orders(
            batch(
                "b3",
                order("301", ("cap-Red-S", 1), delivery="謎の便"),
                order("302", ("NO-SUCH", 1)),
                order("303", ("cap-Red-S", 1)),
            ),
            ctx,
        )
    message = str(failed.value)
    assert "order 301" in message and "wms.logikura.delivery_methods" in message
    assert "order 302" in message and "NO-SUCH is not in Logikura's product master" in message
    assert lk.ledger.schedules_created() == {"303": 1}
    bad_code = world.variant(default_delivery_method="no_such_code")
    with pytest.raises(StepError, match="配送方法コードが正しくありません"):
        bad_code.push_orders(batch("b4", order("304", ("cap-Red-S", 1), delivery="?")), ctx)


def test_histories_become_events_and_the_ne_split(world: World, lk: SandboxServer) -> None:
    connector, ctx, staff = world.connector, world.ctx, world.staff
    connector.push_orders(batch("b1", order("401", ("TSHIRT-Red-S", 2))), ctx)
    schedule = lk.state.schedules_for("401")[0]["id"]
    staff.set_tracking(schedule, "4912-0001")
    staff.start(schedule, "ITAKU")
    staff.ship(schedule)
    staff.ship_direct("ITAKU", [("Mug-Red-S", 3), ("cap-Red-S", 1)], order_number="W-1001")
    staff.ship_direct("SHINJUKU", [("Mug-Red-S", 1)], order_number="402")  # looks like NE
    staff.ship_direct("ASAKUSA", [("Mug-Red-S", 1)])  # not a nebridge warehouse here
    today = lk.clock.today().isoformat()
    staff.receive("SHINJUKU", [("cap-Red-S", 4)], received_date=today)
    ctx.is_imported_order = {"401"}.__contains__
    shipments, rejected, cursors = take(connector, EventKind.SHIPMENT, ctx)
    assert rejected == []
    by_id = {e.shipment_id: e for e in shipments if isinstance(e, WmsShipment)}
    assert set(by_id) == {f"LK-SH-{schedule}", f"LK-SH-{schedule + 1}", f"LK-SH-{schedule + 2}"}
    ne = by_id[f"LK-SH-{schedule}"]
    assert (ne.ne_order_id, ne.tracking_number, ne.warehouse) == ("401", "4912-0001", "ITAKU")
    assert [(line.product_code, line.quantity) for line in ne.lines] == [("TSHIRT-Red-S", 2)]
    assert ne.confirmed_at.isoformat() == f"{today}T00:00:00+09:00"
    wholesale = by_id[f"LK-SH-{schedule + 1}"]
    assert not wholesale.from_next_engine and wholesale.warehouse == "ITAKU"
    assert [(x.product_code, x.quantity) for x in wholesale.lines] == [
        ("Mug-Red-S", 3),
        ("cap-Red-S", 1),
    ]
    assert by_id[f"LK-SH-{schedule + 2}"].ne_order_id is None  # "402" was never imported
    assert list(cursors) == ["wms.logikura.shipments"]
    assert json.loads(cursors["wms.logikura.shipments"])["start"] == today
    receipts, _, _ = take(connector, EventKind.RECEIPT, ctx)
    assert [
        (r.warehouse, r.lines[0].product_code, r.lines[0].quantity)
        for r in receipts
        if isinstance(r, WmsReceipt)
    ] == [("SHINJUKU", "cap-Red-S", 4)]

    again, _, _ = take(connector, EventKind.SHIPMENT, ctx)
    assert again == []  # delivered and the position did not move: nothing to send
    restarted = world.variant()
    redelivered, _, _ = take(restarted, EventKind.SHIPMENT, ctx)
    assert redelivered == []  # what was delivered is remembered in the connector's store


def test_backdated_histories_are_read_within_the_lookback(world: World, lk: SandboxServer) -> None:
    connector, ctx, clock, staff = world.connector, world.ctx, world.clock, world.staff
    staff.ship_direct("ITAKU", [("Mug-Red-S", 1)], shipped_date="2020-01-01")
    events, _, cursors = take(connector, EventKind.SHIPMENT, ctx)
    assert events == []  # the first window starts today (start_date not set)
    day0 = lk.clock.today()
    staff.ship_direct("ITAKU", [("Mug-Red-S", 1)])
    clock.advance(3 * 86_400)
    late = staff.ship_direct("ITAKU", [("Mug-Red-S", 1)], shipped_date=day0.isoformat())
    events, _, cursors = take(connector, EventKind.SHIPMENT, ctx)
    assert {e.shipment_id for e in events if isinstance(e, WmsShipment)} == {
        f"LK-SH-{late['id'] - 1}",
        f"LK-SH-{late['id']}",
    }
    assert json.loads(cursors["wms.logikura.shipments"])["start"] == day0.isoformat()
    clock.advance(10 * 86_400)  # entered 13 days after day0, dated day0: still read
    later = staff.ship_direct("ITAKU", [("Mug-Red-S", 2)], shipped_date=day0.isoformat())
    events, _, _ = take(connector, EventKind.SHIPMENT, ctx)
    assert [e.shipment_id for e in events] == [f"LK-SH-{later['id']}"]
    old_start = world.variant(start_date=date(2020, 1, 1), lookback_days=92)
    assert ctx.state_dir is not None
    fresh = make_ctx(ctx.state_dir, ctx.http, clock)
    assert take(old_start, EventKind.SHIPMENT, fresh)[0] == []  # all delivered already


def test_new_product_waits_unknown_variant_is_rejected_then_requeued(
    world: World, lk: SandboxServer
) -> None:
    connector, ctx, staff = world.connector, world.ctx, world.staff
    known = {v.product_code for v in lk.state.variants.values() if v.product_code}
    ctx.is_known_product = known.__contains__
    lk.state.add_variant("NEW-1", link_code="NEW-1", stock={"ITAKU": 5})
    staff.ship_direct("ITAKU", [("NEW-1", 1)], order_number="W-2")
    events, rejected, cursors = take(connector, EventKind.SHIPMENT, ctx)
    assert events == [] and rejected == []  # waits for the engine to learn NEW-1
    assert "wms.logikura.shipments" in cursors
    snapshot = connector.product_snapshot(ctx, "x")
    assert snapshot is not None and "NEW-1" in {p.product_code for p in snapshot.products}
    ctx.is_known_product = (known | {"NEW-1"}).__contains__
    events, _, _ = take(connector, EventKind.SHIPMENT, ctx)
    assert [e.lines[0].product_code for e in events if isinstance(e, WmsShipment)] == ["NEW-1"]

    lk.state.add_variant("TMP-1", stock={"ITAKU": 3})
    old = lk.clock.today().isoformat()
    gone = staff.ship_direct("ITAKU", [("TMP-1", 1)], shipped_date=old)
    variant = lk.state.variants.pop(staff.variant_id("TMP-1"))  # deleted in Logikura
    events, rejected, _ = take(connector, EventKind.SHIPMENT, ctx)
    source = f"logikura:shipping_history:{gone['id']}"
    assert rejected == [
        f"{source}: product variant {variant.id} is not in Logikura's product master"
    ]
    assert take(connector, EventKind.SHIPMENT, ctx)[1] == []  # rejected once, not every poll
    with pytest.raises(KeyError):
        connector.requeue("logikura:shipping_history:999999", ctx)

    lk.state.variants[variant.id] = variant  # the admin restores it, then retries
    world.clock.advance(10 * 86_400)  # long after: the history is outside the window
    assert "next intake" in connector.requeue(source, ctx)
    assert take(connector, EventKind.SHIPMENT, ctx)[:2] == ([], [])  # the engine learns TMP-1
    snapshot = connector.product_snapshot(ctx, "y")
    assert snapshot is not None
    ctx.is_known_product = {p.product_code for p in snapshot.products}.__contains__
    events, rejected, _ = take(connector, EventKind.SHIPMENT, ctx)
    assert rejected == [] and [e.shipment_id for e in events if isinstance(e, WmsShipment)] == [
        f"LK-SH-{gone['id']}"
    ]
    assert take(connector, EventKind.SHIPMENT, ctx)[0] == []  # settled


def test_invalid_histories_are_rejected_with_the_field(world: World) -> None:
    long_tracking = world.staff.ship_direct("ITAKU", [("Mug-Red-S", 1)], tracking_number="9" * 51)
    _, rejected, _ = take(world.connector, EventKind.SHIPMENT, world.ctx)
    assert rejected == [
        f"logikura:shipping_history:{long_tracking['id']}: tracking number "
        "longer than 50 characters (Next Engine's limit)"
    ]


def test_warehouse_from_packed_stock_when_histories_lack_it(
    tmp_path: Path, http: requests.Session
) -> None:
    with SandboxServer(sandbox_config(history_warehouse_id=False, page_size=5)) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        staff = WarehouseStaff(lk.base_url)
        staff.ship_direct("SHINJUKU", [("Mug-Red-S", 1)])
        staff.ship_direct("ASAKUSA", [("Mug-Red-S", 1)])
        events, rejected, _ = take(connector, EventKind.SHIPMENT, ctx)
        assert rejected == []
        assert [e.warehouse for e in events] == ["SHINJUKU"]  # ASAKUSA is not configured
        staff.close()
