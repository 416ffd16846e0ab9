"""Issue #12 findings 2, 4, 5 (events), 6 and 7: one bad input never blocks the rest.

Real CSV files in a real inbox, the real CSV connector and intake, real SQLite and
PostgreSQL: a shipment ships only orders nebridge imported into its warehouse; a file that
cannot be taken is rejected (or reported) and the next files flow in the same run; an event
whose outcome the database refuses is held alone; links are never followed; files nebridge
writes never write through a planted link; an echoed order file is accepted.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col
from typer.testing import CliRunner

from daemon.admin import run_once
from daemon.attention import AttentionKind, collect
from daemon.cli import app
from daemon.runtime import Runtime, build_runtime
from daemon.store.engine import read_session, write_session
from daemon.store.models import ImportedOrder, InboxBatch, InboxEvent
from hooks import hookimpl
from hooks.connectors import InstructionBatch
from hooks.errors import StepNotReady
from hooks.records import (
    AdjustStock,
    EventKind,
    Notice,
    OrderInstruction,
    OrderInstructionLine,
    PluginInfo,
    WmsShipment,
)
from plugins.wms_csv.folders import NO_NEWLINE_GRACE_SECONDS, SYMLINK_REASON
from plugins.wms_csv.outbox import order_file_name, write_orders
from plugins.wms_csv.reader import MAX_LINE_BYTES
from tests.conftest import DEFAULT_PLUGINS, DEFAULT_WAREHOUSES, ConfigFactory
from tests.test_pipeline import (
    AT,
    RECEIPT_HEADER,
    SHIP_HEADER,
    build,
    drop,
    imported,
    outbox_items,
    products,
)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "wms" / "inbox"


def start(rt: Runtime) -> None:
    """What the daemon does when it starts: the connector creates its folders (and returns
    files a crash left claimed), so a test can break them as a running installation's."""
    assert rt.connector is not None
    rt.connector.recover(rt.connector_context())


def event_states(rt: Runtime) -> dict[str, tuple[str, str | None]]:
    with read_session(rt.engine) as session:
        return {e.external_id: (e.state, e.last_error) for e in session.scalars(select(InboxEvent))}


def batches(rt: Runtime) -> list[tuple[str, str]]:
    with read_session(rt.engine) as session:
        return [
            (b.source, b.state)
            for b in session.scalars(select(InboxBatch).order_by(col(InboxBatch.id)))
        ]


# -- finding 2: only orders nebridge imported into that warehouse ----------------------------


def test_a_shipment_ships_only_orders_imported_into_its_own_warehouse(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    rt = build(make_config, database_url)
    imported(rt, "ITAKU", "101")
    imported(rt, "SHINJUKU", "121")  # imported, but into another warehouse
    with write_session(rt.engine) as session:  # held at import: never sent to the WMS
        session.add(ImportedOrder(ne_order_id="131", warehouse="ITAKU", state="held"))
    products(inbox)
    drop(
        inbox,
        "shipments-1.csv",
        SHIP_HEADER,
        [
            f"S-OK,ITAKU,101,T-1,{AT},P-A,1",
            f"S-ELSEWHERE,ITAKU,121,T-2,{AT},P-A,2",
            f"S-TYPO,ITAKU,1011,T-3,{AT},P-B,3",
            f"S-HELD,ITAKU,131,,{AT},P-A,1",
            f"S-SHOP,ITAKU,,,{AT},P-B,4",
        ],
    )
    try:
        report = run_once(rt)
        states = event_states(rt)
        items = outbox_items(rt)
        attention = collect(rt.engine)
    finally:
        rt.close()
    assert not report.ok
    assert states["S-OK"] == ("processed", None)
    assert states["S-SHOP"] == ("processed", None)
    for shipment, order in (("S-ELSEWHERE", "121"), ("S-TYPO", "1011"), ("S-HELD", "131")):
        state, reason = states[shipment]
        assert state == "held"
        assert reason is not None
        assert reason.startswith(f"order {order} was not imported by nebridge into ITAKU")
        assert "ship_unimported_orders: true" in reason
    assert sorted((i["kind"], i["subject"], i.get("delta")) for i in items) == [
        ("adjust_stock", "P-B", -4),
        ("ship_order", "101", None),
    ]
    assert attention.counts[AttentionKind.HELD_EVENT] == 3
    held = [i for i in attention.items if i.kind == AttentionKind.HELD_EVENT]
    assert {i.subject for i in held} == {
        "shipment:S-ELSEWHERE",
        "shipment:S-TYPO",
        "shipment:S-HELD",
    }
    assert all("nebridge inbox retry --event shipment:" in i.fix for i in held)


def test_a_warehouse_may_opt_in_to_ship_orders_it_did_not_import(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    warehouses = [{**DEFAULT_WAREHOUSES[0], "ship_unimported_orders": True}, DEFAULT_WAREHOUSES[1]]
    rt = build(make_config, database_url, warehouses=warehouses)
    products(inbox)
    drop(
        inbox,
        "shipments-1.csv",
        SHIP_HEADER,
        [f"S-1,ITAKU,121,T-1,{AT},P-A,1", f"S-2,SHINJUKU,122,T-2,{AT},P-A,1"],
    )
    try:
        run_once(rt)
        states = event_states(rt)
        items = outbox_items(rt)
    finally:
        rt.close()
    assert states["S-1"] == ("processed", None)
    assert states["S-2"][0] == "held"  # the opt-in is per warehouse
    assert [i["subject"] for i in items if i["kind"] == "ship_order"] == ["121"]


def test_a_held_unimported_shipment_ships_after_the_order_is_imported_and_retried(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    path = make_config(database_url=database_url)
    rt = build_runtime(path)
    products(inbox)
    drop(inbox, "shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,121,T-1,{AT},P-A,1"])
    try:
        run_once(rt)
        assert event_states(rt)["S-1"][0] == "held"
        imported(rt, "ITAKU", "121")
    finally:
        rt.close()
    result = CliRunner().invoke(
        app, ["--config", str(path), "inbox", "retry", "--event", "shipment:S-1"]
    )
    assert result.exit_code == 0, result.stderr
    rt = build_runtime(path)
    try:
        run_once(rt)
        items = outbox_items(rt)
    finally:
        rt.close()
    assert [i["subject"] for i in items if i["kind"] == "ship_order"] == ["121"]


# -- finding 4: poison isolation at intake -------------------------------------------------


def test_files_that_cannot_be_stored_are_rejected_and_the_next_files_flow(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    """A 245-byte name, a 5 MB single line and a 200-character shipment id (a DataError on
    PostgreSQL before) are each rejected with the reason; every later file flows in the
    same run."""
    rt = build(make_config, database_url)
    products(inbox)
    long_name = "shipments-" + "x" * 231 + ".csv"
    assert len(long_name.encode()) == 245
    drop(inbox, long_name, SHIP_HEADER, [f"S-1,ITAKU,,,{AT},P-Z,1"])
    (inbox / "shipments-2-oneline.csv").write_bytes(b"a" * (80 * MAX_LINE_BYTES) + b"\n")
    drop(inbox, "shipments-3-longid.csv", SHIP_HEADER, [f"{'S' * 200},ITAKU,,,{AT},P-A,1"])
    drop(inbox, "shipments-4-good.csv", SHIP_HEADER, [f"S-4,ITAKU,,,{AT},P-A,1"])
    drop(inbox, "receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-B,2"])
    try:
        report = run_once(rt)
        states = event_states(rt)
        recorded = batches(rt)
    finally:
        rt.close()
    assert report.intake is not None
    assert sorted(report.intake.rejected) == sorted(
        [long_name, "shipments-2-oneline.csv", "shipments-3-longid.csv"]
    )
    assert report.intake.accepted == ["shipments-4-good.csv", "receipts-1.csv"]
    assert set(states) == {"S-4", "R-1"}
    assert (long_name, "rejected") in recorded
    rejected = inbox / "rejected"
    reports = {p.name: p.read_text("utf-8") for p in rejected.glob("*.errors.txt")}
    (long_report,) = [text for name, text in reports.items() if name.startswith("shipments-x")]
    assert long_report.startswith(f"{long_name}: rejected")
    assert "unknown product 'P-Z'" in long_report
    assert (
        f"line 1: line longer than {MAX_LINE_BYTES:,} bytes"
        in reports["shipments-2-oneline.csv.errors.txt"]
    )
    assert (
        "line 2, column shipment_id: longer than 128 characters (200)"
        in reports["shipments-3-longid.csv.errors.txt"]
    )

    # the shortened file is found by its own name, as the listing shows it
    shortened = next(
        p
        for p in rejected.iterdir()
        if p.name.startswith("shipments-x") and p.name.endswith(".csv")
    )
    shortened.write_text(shortened.read_text("utf-8").replace("P-Z", "P-A"), "utf-8")
    result = CliRunner().invoke(app, ["--config", str(rt.loaded.path), "inbox", "retry", long_name])
    assert result.exit_code == 0, result.stderr
    assert (inbox / long_name).is_file()


def test_a_file_that_can_be_neither_taken_nor_rejected_is_shown_and_skipped(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    rt = build(make_config, database_url)
    start(rt)
    products(inbox)
    rejected = inbox / "rejected"
    rejected.rmdir()
    rejected.write_text("not a folder\n")  # a broken quarantine: the report cannot be written
    drop(inbox, "shipments-1-bad.csv", SHIP_HEADER, [f"S-1,ITAKU,,,{AT},P-Z,1"])
    drop(inbox, "shipments-2-good.csv", SHIP_HEADER, [f"S-2,ITAKU,,,{AT},P-A,1"])
    try:
        first = run_once(rt)
        shown = collect(rt.engine)
        assert (inbox / "shipments-1-bad.csv").is_file()  # back in the inbox, not lost
        rejected.unlink()
        rejected.mkdir()
        second = run_once(rt)
        after = collect(rt.engine)
        states = event_states(rt)
    finally:
        rt.close()
    assert first.intake is not None and first.intake.accepted == ["shipments-2-good.csv"]
    assert not first.ok
    assert any(
        "shipments-1-bad.csv could be neither taken nor rejected" in p for p in first.problems
    )
    (item,) = [i for i in shown.items if i.kind == AttentionKind.FILE_NOT_TAKEN]
    assert item.subject == "shipments-1-bad.csv" and "NotADirectoryError" in item.reason
    assert "move the file out of the WMS inbox" in item.fix
    assert second.intake is not None and second.intake.rejected == ["shipments-1-bad.csv"]
    assert AttentionKind.FILE_NOT_TAKEN not in after.counts
    assert after.counts[AttentionKind.REJECTED_FILE] == 1
    assert set(states) == {"S-2"}


# -- finding 5 (events): an event whose outcome cannot be stored is held alone --------------


class NulNotice:
    """A plugin whose notice for one shipment holds a NUL byte (PostgreSQL refuses it)."""

    @hookimpl
    def nebridge_plugin_info(self) -> PluginInfo:
        return PluginInfo(name="nul_notice", summary="a notice PostgreSQL cannot store")

    @hookimpl
    def nebridge_shipment_actions(self, shipment: WmsShipment) -> list[Any]:
        if shipment.shipment_id == "S-2":
            return [Notice("bad\x00byte"), AdjustStock("P-B", -1)]
        return [Notice(f"fine {shipment.shipment_id}")]


def test_an_event_whose_outcome_the_database_refuses_is_held_alone(
    make_config: ConfigFactory, inbox: Path, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite stores a NUL byte; PostgreSQL refuses it")
    path = make_config(
        database_url=database_url, plugins={**DEFAULT_PLUGINS, "nul_notice": {"enabled": True}}
    )
    rt = build_runtime(path, extra_plugins={"nul_notice": NulNotice()})
    products(inbox)
    drop(inbox, "shipments-1.csv", SHIP_HEADER, [f"S-{n},ITAKU,,,{AT},P-A,1" for n in range(1, 6)])
    try:
        report = run_once(rt)
        again = run_once(rt)
        states = event_states(rt)
        items = outbox_items(rt)
    finally:
        rt.close()
    state, reason = states.pop("S-2")
    assert state == "held" and reason is not None
    assert reason.startswith("shipment S-2: its outcome could not be stored (DataError")
    assert "nothing of it was applied" in reason
    assert {s for s, _ in states.values()} == {"processed"}
    assert sorted(i["subject"] for i in items) == ["P-A"] * 4
    assert any("S-2" in f for r in report.stages for f in r.failures)
    assert all(not r.failures for r in again.stages)  # the stage is not stuck


# -- finding 6: files are read as they are ------------------------------------------------


def test_links_in_the_inbox_are_rejected_unread(
    make_config: ConfigFactory, database_url: str, inbox: Path, tmp_path: Path
) -> None:
    rt = build(make_config, database_url)
    products(inbox)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:SECRET-HASH:19000:0:99999:7:::\n")
    valid = tmp_path / "valid.csv"
    valid.write_text(f"{SHIP_HEADER}\nS-OUT,ITAKU,,,{AT},P-A,1\n")
    os.symlink(secret, inbox / "shipments-1-secret.csv")
    os.symlink(valid, inbox / "shipments-2-valid.csv")
    os.symlink(valid, inbox / "products-2.csv")
    drop(inbox, "shipments-3-good.csv", SHIP_HEADER, [f"S-3,ITAKU,,,{AT},P-A,1"])
    try:
        report = run_once(rt)
        states = event_states(rt)
    finally:
        rt.close()
    assert report.intake is not None
    assert sorted(report.intake.rejected) == ["shipments-1-secret.csv", "shipments-2-valid.csv"]
    assert report.intake.accepted == ["shipments-3-good.csv"]
    assert set(states) == {"S-3"}
    rejected = inbox / "rejected"
    for name in ("shipments-1-secret.csv", "shipments-2-valid.csv", "products-2.csv"):
        text = (rejected / f"{name}.errors.txt").read_text("utf-8")
        assert SYMLINK_REASON in text and "SECRET" not in text and "S-OUT" not in text
        assert (rejected / name).is_symlink()
    assert secret.read_text() == "root:SECRET-HASH:19000:0:99999:7:::\n"


def test_cr_only_and_unterminated_files_are_taken_correctly(
    make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    rt = build(make_config, database_url)
    products(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "shipments-1-cr.csv").write_bytes(
        f"{SHIP_HEADER}\rS-1,ITAKU,,,{AT},P-A,1\rS-2,ITAKU,,,{AT},P-B,2\r".encode()
    )
    fresh = inbox / "shipments-2-fresh.csv"
    fresh.write_bytes(f"{SHIP_HEADER}\nS-3,ITAKU,,,{AT},P-A,3".encode())
    old = inbox / "shipments-3-old.csv"
    old.write_bytes(f"{SHIP_HEADER}\r\nS-4,ITAKU,,,{AT},P-A,4".encode())
    long_ago = datetime.now(UTC).timestamp() - NO_NEWLINE_GRACE_SECONDS - 5
    os.utime(old, (long_ago, long_ago))
    try:
        report = run_once(rt)
        payloads = {e.external_id: json.loads(e.payload) for e in _events(rt)}
    finally:
        rt.close()
    assert report.intake is not None
    assert sorted(report.intake.accepted) == ["shipments-1-cr.csv", "shipments-3-old.csv"]
    assert set(payloads) == {"S-1", "S-2", "S-4"}
    assert payloads["S-4"]["lines"] == [{"product_code": "P-A", "quantity": 4}]
    assert fresh.is_file()  # may still be written to: taken once it stayed unchanged


def _events(rt: Runtime) -> list[InboxEvent]:
    with read_session(rt.engine) as session:
        return list(session.scalars(select(InboxEvent)))


def test_a_file_that_changes_while_read_goes_back_and_is_taken_whole_later(
    tmp_path: Path,
) -> None:
    from tests.wms_csv.test_connector import make_connector
    from tests.wms_csv.test_parsing import make_ctx

    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    header = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"
    (inbox / "shipments.csv").write_text(f"{header}\nS1,W1,,,{AT},P1,1\n")
    batches = connector.pending_batches(EventKind.SHIPMENT, ctx)
    batch = next(batches)
    with (inbox / ".claimed" / "shipments.csv").open("a") as writer:  # an in-place writer
        writer.write(f"S2,W1,,,{AT},P2,2\n")
    with pytest.raises(StepNotReady, match="changed while nebridge read it"):
        list(batch.events())
    with pytest.raises(StopIteration):
        next(batches)  # unsettled: back into the inbox
    assert (inbox / "shipments.csv").is_file()
    taken = []
    for again in connector.pending_batches(EventKind.SHIPMENT, ctx):
        taken.append([e.shipment_id for e in again.events() if isinstance(e, WmsShipment)])
        again.commit()
    assert taken == [["S1", "S2"]]


def test_files_nebridge_writes_never_write_through_a_planted_link(
    make_config: ConfigFactory, database_url: str, inbox: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    rt = build(make_config, database_url)
    start(rt)
    products(inbox)
    rejected = inbox / "rejected"
    os.symlink(victim, rejected / "shipments-bad.csv.errors.txt")
    drop(inbox, "shipments-bad.csv", SHIP_HEADER, [f"S-1,ITAKU,,,{AT},P-Z,1"])
    outbox = tmp_path / "wms" / "outbox"
    batch = InstructionBatch(
        "k1",
        datetime(2026, 11, 27, 10, tzinfo=UTC),
        [
            OrderInstruction(
                "1001",
                "S-1",
                "ITAKU",
                "2026-11-27",
                "宅配便",
                "山田",
                "100-0001",
                "東京都",
                "03",
                (OrderInstructionLine(1, "P-A", "A-1", 1),),
            )
        ],
    )
    os.symlink(victim, outbox / order_file_name(batch))
    try:
        run_once(rt)
    finally:
        rt.close()
    write_orders(outbox, batch, "utf-8")
    assert victim.read_text() == "keep me\n"
    report = rejected / "shipments-bad.csv.errors.txt"
    assert not report.is_symlink() and "unknown product 'P-Z'" in report.read_text("utf-8")
    written = outbox / order_file_name(batch)
    assert not written.is_symlink() and "1001" in written.read_text("utf-8")


# -- finding 7: echoing nebridge's own order file back ------------------------------------


def test_an_echoed_order_file_with_one_product_on_two_lines_is_accepted(
    make_config: ConfigFactory, database_url: str, inbox: Path, tmp_path: Path
) -> None:
    rt = build(make_config, database_url)
    imported(rt, "ITAKU", "1001")
    products(inbox)
    batch = InstructionBatch(
        "k1",
        datetime(2026, 11, 27, 10, tzinfo=UTC),
        [
            OrderInstruction(
                "1001",
                "S-1",
                "ITAKU",
                "2026-11-27",
                "宅配便",
                "山田",
                "100-0001",
                "東京都",
                "03",
                (
                    OrderInstructionLine(1, "P-A", "goods-a", 2),
                    OrderInstructionLine(2, "P-B", "GOODS-B", 1),
                    OrderInstructionLine(3, "P-A", "goods-a", 3),
                ),
            )
        ],
    )
    written = write_orders(tmp_path, batch, "utf-8")
    assert written is not None
    lines = written.read_text("utf-8").splitlines()
    echoed = [f"shipment_id,tracking_number,confirmed_at,{lines[0]}"] + [
        f"SH-1001,TRK-1,{AT},{line}" for line in lines[1:]
    ]
    drop(inbox, "shipments-echo.csv", echoed[0], echoed[1:])
    try:
        report = run_once(rt)
        (event,) = _events(rt)
        items = outbox_items(rt)
    finally:
        rt.close()
    assert report.intake is not None and report.intake.accepted == ["shipments-echo.csv"]
    assert json.loads(event.payload)["lines"] == [
        {"product_code": "P-A", "quantity": 5},
        {"product_code": "P-B", "quantity": 1},
    ]
    assert event.state == "processed"
    assert [(i["kind"], i["subject"], i["tracking_number"]) for i in items] == [
        ("ship_order", "1001", "TRK-1")
    ]
