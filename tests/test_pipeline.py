"""WMS files → inbox → plugins → outbox, through the real CSV connector, on both databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from daemon.admin import run_once
from daemon.runtime import Runtime, build_runtime
from daemon.store.engine import read_session, write_session
from daemon.store.models import ImportedOrder, InboxBatch, InboxEvent, OutboxItem, RunRecord
from tests.conftest import DEFAULT_PLUGINS, DEFAULT_WAREHOUSES, ConfigFactory

SHIP_HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"
RECEIPT_HEADER = "receipt_id,warehouse,confirmed_at,product_code,quantity"
AT = "2026-11-27 10:00:00"


def drop(inbox: Path, name: str, header: str, rows: list[str]) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.part"
    tmp.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return tmp.rename(inbox / name)


def products(inbox: Path) -> None:
    drop(inbox, "products.csv", "product_code,link_code", ["P-A,goods-a", "P-B,GOODS-B", "P-C,"])


def imported(rt: Runtime, warehouse: str, *order_ids: str) -> None:
    """Record orders as imported by nebridge into ``warehouse`` (only those may be shipped)."""
    with write_session(rt.engine) as session:
        session.add_all(
            ImportedOrder(ne_order_id=order_id, warehouse=warehouse, state="instructed")
            for order_id in order_ids
        )


def outbox_items(rt: Runtime) -> list[dict[str, Any]]:
    with read_session(rt.engine) as session:
        rows = list(session.scalars(select(OutboxItem).order_by(OutboxItem.id)))
    return [
        {
            "kind": r.kind,
            "warehouse": r.warehouse,
            "subject": r.subject,
            "plugin": r.plugin,
            **json.loads(r.payload),
        }
        for r in rows
    ]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "wms" / "inbox"


def build(make_config: ConfigFactory, database_url: str, **overrides: Any) -> Runtime:
    return build_runtime(make_config(database_url=database_url, **overrides))


def test_shipments_and_receipts_become_outbox_actions(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    rt = build(make_config, database_url)
    imported(rt, "ITAKU", "1001", "1002")
    products(inbox)
    drop(
        inbox,
        "shipments-1.csv",
        SHIP_HEADER,
        [
            f"S-1,ITAKU,1001,TRACK-1,{AT},P-A,1",
            f"S-2,ITAKU,1002,,{AT},P-B,2",
            f"S-3,ITAKU,,,{AT},P-A,3",
            f"S-3,ITAKU,,,{AT},P-B,1",
            f"S-4,SHINJUKU,,,{AT},P-A,5",
        ],
    )
    drop(
        inbox,
        "receipts-1.csv",
        RECEIPT_HEADER,
        [
            f"R-1,ITAKU,{AT},P-A,10",
            f"R-2,SHINJUKU,{AT},P-B,7",
        ],
    )
    try:
        report = run_once(rt)
        items = outbox_items(rt)
    finally:
        rt.close()
    assert report.ok, report.problems
    assert sorted(report.intake.accepted) == ["receipts-1.csv", "shipments-1.csv"]  # type: ignore[union-attr]
    ships = {i["subject"]: i for i in items if i["kind"] == "ship_order"}
    assert ships["1001"]["tracking_number"] == "TRACK-1"
    assert ships["1002"]["tracking_number"] is None
    assert all(i["warehouse"] == "ITAKU" for i in ships.values())
    stock = sorted(
        (i["warehouse"], i["subject"], i["delta"], i["plugin"])
        for i in items
        if i["kind"] == "adjust_stock"
    )
    assert stock == [
        ("ITAKU", "P-A", -3, "stock_minus"),
        ("ITAKU", "P-A", 10, "stock_plus"),
        ("ITAKU", "P-B", -1, "stock_minus"),
    ]
    notices = [n for r in report.stages for n in r.notices]
    assert any("S-2" in n and "no tracking number" in n for n in notices)
    assert not list(inbox.glob("shipments*.csv")) and (inbox / "processed").is_dir()


def test_redelivery_is_a_no_op_and_changed_content_is_a_conflict(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    rt = build(make_config, database_url)
    imported(rt, "ITAKU", "1001")
    products(inbox)
    rows = [f"S-1,ITAKU,1001,TRACK-1,{AT},P-A,1"]
    try:
        drop(inbox, "shipments-a.csv", SHIP_HEADER, rows)
        run_once(rt)
        drop(inbox, "shipments-b.csv", SHIP_HEADER, rows)  # the WMS sends it again
        again = run_once(rt)
        drop(inbox, "shipments-c.csv", SHIP_HEADER, [f"S-1,ITAKU,1001,TRACK-2,{AT},P-A,1"])
        conflict = run_once(rt)
        with read_session(rt.engine) as session:
            n_items = session.scalar(select(func.count()).select_from(OutboxItem))
            rejected = session.scalars(
                select(InboxBatch).where(InboxBatch.state == "rejected")
            ).one()
    finally:
        rt.close()
    assert again.intake is not None and again.intake.duplicates == 1
    assert again.intake.events == 0
    assert conflict.intake is not None and conflict.intake.rejected == ["shipments-c.csv"]
    assert not conflict.ok
    assert n_items == 1
    assert rejected.errors is not None
    assert "shipments-a.csv" in rejected.errors and "different content" in rejected.errors
    errors_file = inbox / "rejected" / "shipments-c.csv.errors.txt"
    assert "shipments-a.csv" in errors_file.read_text(encoding="utf-8")


def test_a_raising_plugin_holds_only_its_items(
    fake_site: Path, make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    rt = build(
        make_config,
        database_url,
        warehouses=[
            *DEFAULT_WAREHOUSES,
            {"code": "BUGGY", "ne_linked": True, "import_orders": False},
        ],
        plugins={**DEFAULT_PLUGINS, "fake_raises": {"enabled": True}},
    )
    imported(rt, "BUGGY", "2001")
    imported(rt, "ITAKU", "2002")
    products(inbox)
    drop(
        inbox,
        "shipments-1.csv",
        SHIP_HEADER,
        [
            f"S-1,BUGGY,2001,T1,{AT},P-A,1",
            f"S-2,ITAKU,2002,T2,{AT},P-A,1",
        ],
    )
    try:
        report = run_once(rt)
        with read_session(rt.engine) as session:
            states = dict(session.execute(select(InboxEvent.external_id, InboxEvent.state)).all())
            failure = session.scalars(
                select(RunRecord).where(RunRecord.plugin == "fake_raises")
            ).one()
        items = outbox_items(rt)
    finally:
        rt.close()
    assert states == {"S-1": "held", "S-2": "processed"}
    assert [i["subject"] for i in items] == ["2002"]  # nothing of the held shipment is sent
    assert failure.warehouse == "BUGGY" and failure.item == "shipment S-1"
    assert "bug while looking at S-1" in (failure.detail or "")
    assert not report.ok and report.attention.counts == {"held_event": 1}


def test_reprocessing_an_event_never_doubles_its_actions(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    rt = build(make_config, database_url)
    products(inbox)
    drop(inbox, "shipments-1.csv", SHIP_HEADER, [f"S-9,ITAKU,,,{AT},P-B,4"])
    try:
        run_once(rt)
        with write_session(rt.engine) as session:  # as if the commit marking it was lost
            session.execute(update(InboxEvent).values(state="pending"))
        run_once(rt)
        items = outbox_items(rt)
    finally:
        rt.close()
    assert [(i["subject"], i["delta"]) for i in items] == [("P-B", -4)]


def test_tracking_number_is_never_sent_without_shipped_status(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    from hooks import hookimpl
    from hooks.records import PluginInfo, WriteTracking

    class TrackingOnly:
        @hookimpl
        def nebridge_plugin_info(self) -> PluginInfo:
            return PluginInfo(name="tracking_only", summary="writes tracking alone")

        @hookimpl
        def nebridge_shipment_actions(self, shipment: Any) -> list[Any]:
            return [WriteTracking(shipment.ne_order_id, "T-ALONE")]

    path = make_config(
        database_url=database_url,
        plugins={"status_update": {"enabled": False}, "tracking_only": {"enabled": True}},
    )
    rt = build_runtime(path, extra_plugins={"tracking_only": TrackingOnly()})
    products(inbox)
    drop(inbox, "shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,3001,T-ALONE,{AT},P-A,1"])
    try:
        report = run_once(rt)
        items = outbox_items(rt)
    finally:
        rt.close()
    assert items == []
    assert any("never written alone" in n for r in report.stages for n in r.notices)


def test_dry_run_changes_nothing_anywhere(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    rt = build(make_config, database_url)
    products(inbox)
    run_once(rt)  # product master in place
    with read_session(rt.engine) as session:
        runs_before = session.scalar(select(func.count()).select_from(RunRecord))
    drop(inbox, "shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,1001,T-1,{AT},P-A,1"])
    drop(inbox, "receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-A,3"])
    before = sorted(p.relative_to(inbox) for p in inbox.rglob("*"))
    try:
        report = run_once(rt, dry_run=True)
        with read_session(rt.engine) as session:
            counts = [
                session.scalar(select(func.count()).select_from(t))
                for t in (InboxEvent, OutboxItem, InboxBatch)
            ]
            runs = session.scalar(select(func.count()).select_from(RunRecord))
    finally:
        rt.close()
    assert sorted(p.relative_to(inbox) for p in inbox.rglob("*")) == before
    assert counts == [0, 0, 0]
    assert runs == runs_before  # a dry run records no runs either
    planned = report.intake.planned if report.intake else []
    assert any("would accept shipments-1.csv" in p for p in planned)
    assert any("would accept receipts-1.csv" in p for p in planned)


def test_a_failing_wms_connector_is_reported_and_the_rest_still_runs(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    rt = build(make_config, database_url)
    products(inbox)
    assert rt.connector is not None
    try:
        run_once(rt)  # the product master is in place
        drop(inbox, "shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,,,{AT},P-A,1"])

        def unreachable(*_args: Any) -> Any:
            raise ConnectionError("WMS API unreachable")

        rt.connector.product_snapshot = unreachable  # type: ignore[method-assign]
        report = run_once(rt)
    finally:
        rt.close()
    assert not report.ok
    assert any(
        "reading product master from the WMS failed" in p and "unreachable" in p
        for p in report.problems
    )
    assert report.intake is not None and report.intake.accepted == ["shipments-1.csv"]
    assert [i["subject"] for i in outbox_items(rt)] == ["P-A"]
