"""The connector over real folders: taking complete files, claiming, filing away, recovery,
the product master, configuration and registration."""

from __future__ import annotations

import os
import pwd
import time
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from hooks.connectors import ConnectorContext, InboundBatch, WmsConnector
from hooks.errors import BatchRejected
from hooks.records import EventKind, ProductLink, ShipmentLine, WmsEvent, WmsShipment
from plugins.wms_csv import (
    CsvConnector,
    CsvConnectorConfig,
    nebridge_plugin_info,
    nebridge_wms_connectors,
)

from .test_parsing import RECEIPT_HEADER, SHIP_HEADER, at_tokyo, make_ctx, write_csv

STABLE = 0.2
ROW = "S1,W1,1001,TRK,2026-11-27 10:00:00,P1,2"
EXPECTED = WmsShipment("S1", "W1", "1001", "TRK", at_tokyo(10), (ShipmentLine("P1", 2),))


def make_connector(tmp_path: Path, stable_seconds: float = 0.0, start: bool = True) -> CsvConnector:
    """A connector on ``tmp_path/inbox`` and ``tmp_path/outbox``, started as the engine starts
    it (``recover``, which creates the folders) unless ``start`` is false."""
    config = CsvConnectorConfig(
        inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", stable_seconds=stable_seconds
    )
    connector = CsvConnector(config)
    if start:
        connector.recover(make_ctx())
    return connector


Outcome = tuple[str, list[WmsEvent] | BatchRejected]


def intake(connector: CsvConnector, kind: EventKind, ctx: ConnectorContext) -> list[Outcome]:
    """Take every ready batch as the engine does: read its events, then commit it, or reject
    it with the error, before asking for the next one."""
    outcomes: list[Outcome] = []
    for batch in connector.pending_batches(kind, ctx):
        try:
            events = list(batch.events())
        except BatchRejected as error:
            batch.reject(error)
            outcomes.append((batch.source, error))
        else:
            batch.commit()
            outcomes.append((batch.source, events))
    return outcomes


def names(folder: Path) -> list[str]:
    """The sorted file names in a folder."""
    return sorted(path.name for path in folder.iterdir() if path.is_file())


def set_mtime(path: Path, seconds: int) -> None:
    """Give a file a fixed modification time, to order files deterministically."""
    os.utime(path, (seconds, seconds))


def test_folders_are_created_at_start_not_when_built(tmp_path: Path) -> None:
    """Read-only commands build the connector: that must leave nothing behind (run as root it
    would leave folders the service user cannot write); the engine's start creates them."""
    connector = make_connector(tmp_path / "wms", start=False)
    assert not (tmp_path / "wms").exists()
    connector.recover(make_ctx())
    inbox = tmp_path / "wms" / "inbox"
    assert {p.name for p in inbox.iterdir()} == {".claimed", "processed", "rejected"}
    assert (tmp_path / "wms" / "outbox").is_dir()


def test_a_folder_that_cannot_be_created_is_logged_and_start_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A parent nebridge may not write in: the start logs each folder with its fix and goes
    on (the Next Engine side still runs); the intake then says the inbox is missing."""
    (tmp_path / "wms").write_text("a file where the folders' parent should be\n")
    connector = make_connector(tmp_path / "wms", start=False)
    with caplog.at_level("ERROR"):
        connector.recover(make_ctx())
    inbox, outbox = tmp_path / "wms" / "inbox", tmp_path / "wms" / "outbox"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors[0].startswith(f"the WMS folder {inbox} cannot be created (")
    me = pwd.getpwuid(os.geteuid()).pw_name  # the daemon's own user: the service user
    assert errors[0].endswith(f"mkdir -p {inbox} && chown {me}: {inbox}")
    assert errors[-1].endswith(f"mkdir -p {outbox} && chown {me}: {outbox}")
    with pytest.raises(OSError, match="mkdir -p"):
        connector.has_new_input()


def test_a_missing_inbox_is_an_error_saying_how_to_create_it(tmp_path: Path) -> None:
    connector = make_connector(tmp_path, start=False)
    with pytest.raises(FileNotFoundError) as caught:
        connector.has_new_input()
    inbox = tmp_path / "inbox"
    assert str(caught.value) == (
        f"the inbox folder {inbox} does not exist: nebridge creates it when it starts "
        f"(`nebridge run`, `nebridge run --once`), or create it for the service user: "
        f"mkdir -p {inbox} && chown {pwd.getpwuid(os.geteuid()).pw_name}: {inbox}"
    )
    assert not inbox.exists()


def test_an_inbox_made_by_hand_takes_files_before_any_start(tmp_path: Path) -> None:
    """The admin creates only the inbox (README: ``install -d``); a command that takes files
    without starting the engine (``stock take``) creates the subfolders it moves files into."""
    connector, ctx = make_connector(tmp_path, start=False), make_ctx()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_csv(inbox / "shipments-1.csv", [SHIP_HEADER, ROW])
    write_csv(inbox / "shipments-2.csv", [SHIP_HEADER, "S2,W7,,,2026-11-27 10:00,P1,1"])
    outcomes = intake(connector, EventKind.SHIPMENT, ctx)
    assert [source for source, _ in outcomes] == ["shipments-1.csv", "shipments-2.csv"]
    assert names(inbox / "processed") == ["shipments-1.csv"]
    assert names(inbox / "rejected") == ["shipments-2.csv", "shipments-2.csv.errors.txt"]


def test_batch_is_claimed_then_committed_to_processed(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    write_csv(inbox / "shipments-1.csv", [SHIP_HEADER, ROW])
    assert connector.has_new_input() is True  # stable_seconds=0: complete at first sight
    for batch in connector.pending_batches(EventKind.SHIPMENT, ctx):
        assert isinstance(batch, InboundBatch)
        assert (batch.source, batch.kind, batch.cursor) == (
            "shipments-1.csv",
            EventKind.SHIPMENT,
            None,
        )
        assert names(inbox) == []
        assert names(inbox / ".claimed") == ["shipments-1.csv"]
        assert list(batch.events()) == [EXPECTED]
        batch.commit()
    assert names(inbox / ".claimed") == []
    assert names(inbox / "processed") == ["shipments-1.csv"]
    assert connector.has_new_input() is False


def test_processed_names_never_collide(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    for _ in range(3):
        write_csv(inbox / "shipments.csv", [SHIP_HEADER, ROW])
        assert intake(connector, EventKind.SHIPMENT, ctx) == [("shipments.csv", [EXPECTED])]
    assert names(inbox / "processed") == ["shipments.csv", "shipments~1.csv", "shipments~2.csv"]


def test_rejected_file_lands_in_rejected_with_errors(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    write_csv(inbox / "shipments-bad.csv", [SHIP_HEADER, ROW, "S2,W7,,,2026-11-27 10:00,P1,0"])
    ((source, error),) = intake(connector, EventKind.SHIPMENT, ctx)
    assert source == "shipments-bad.csv"
    assert isinstance(error, BatchRejected)
    assert names(inbox / ".claimed") == []
    assert names(inbox / "rejected") == ["shipments-bad.csv", "shipments-bad.csv.errors.txt"]
    report = (inbox / "rejected" / "shipments-bad.csv.errors.txt").read_text(encoding="utf-8")
    assert report.splitlines() == [
        "shipments-bad.csv: rejected by nebridge with 2 error(s)",
        "line 3, column warehouse: unknown warehouse 'W7'",
        "line 3, column quantity: not a positive integer: '0'",
    ]
    assert connector.has_new_input() is False


def test_recover_returns_claimed_files_after_a_crash(tmp_path: Path) -> None:
    ctx = make_ctx()
    inbox = tmp_path / "inbox"
    make_connector(tmp_path)
    # the process died after claiming the file (and maybe after storing its events)
    write_csv(inbox / ".claimed" / "shipments.csv", [SHIP_HEADER, ROW])

    restarted = make_connector(tmp_path, start=False)
    assert intake(restarted, EventKind.SHIPMENT, ctx) == []  # claimed files wait for recover()
    restarted.recover(ctx)
    assert names(inbox / ".claimed") == []
    assert names(inbox) == ["shipments.csv"]
    assert intake(restarted, EventKind.SHIPMENT, ctx) == [("shipments.csv", [EXPECTED])]
    assert names(inbox / "processed") == ["shipments.csv"]


def test_recover_keeps_a_newer_file_of_the_same_name(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    write_csv(inbox / ".claimed" / "shipments.csv", [SHIP_HEADER, ROW])
    write_csv(inbox / "shipments.csv", [SHIP_HEADER, ROW.replace("S1", "S9")])
    connector.recover(ctx)
    assert names(inbox) == ["shipments.csv", "shipments~1.csv"]


def test_unsettled_batch_goes_back_to_the_inbox(tmp_path: Path) -> None:
    """A dry run reads a batch but neither commits nor rejects it; so does an engine error."""
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    set_mtime(write_csv(inbox / "shipments-1.csv", [SHIP_HEADER, ROW]), 1_000)
    set_mtime(write_csv(inbox / "shipments-2.csv", [SHIP_HEADER, ROW]), 2_000)
    for batch in connector.pending_batches(EventKind.SHIPMENT, ctx):
        assert list(batch.events()) == [EXPECTED]  # dry run: looked at, nothing settled
    assert names(inbox) == ["shipments-1.csv", "shipments-2.csv"]
    assert names(inbox / ".claimed") == []

    batches = connector.pending_batches(EventKind.SHIPMENT, ctx)
    first = next(batches)
    assert names(inbox) == ["shipments-2.csv"]  # claimed one at a time
    assert list(first.events()) == [EXPECTED]
    batches.close()  # what leaving the engine's loop by an exception (database gone) does
    assert names(inbox) == ["shipments-1.csv", "shipments-2.csv"]
    assert intake(connector, EventKind.SHIPMENT, ctx) == [
        ("shipments-1.csv", [EXPECTED]),
        ("shipments-2.csv", [EXPECTED]),
    ]


def test_lines_appended_after_the_read_are_never_lost(tmp_path: Path) -> None:
    """A writer holding the file open appends after nebridge read it (it paused longer than
    the stable window): the file is not filed away unread but goes back to the inbox whole,
    and the next intake reads every line (the first events again, recognised by id)."""
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    set_mtime(write_csv(inbox / "shipments-1.csv", [SHIP_HEADER, ROW]), 1_000)
    writer = (inbox / "shipments-1.csv").open("a", encoding="utf-8")  # the WMS keeps it open
    try:
        for batch in connector.pending_batches(EventKind.SHIPMENT, ctx):
            assert list(batch.events()) == [EXPECTED]
            writer.write("S2,W1,1002,TRK,2026-11-27 10:00:00,P2,1\n")
            writer.flush()
            batch.commit()
    finally:
        writer.close()
    assert names(inbox / "processed") == []
    assert names(inbox / ".claimed") == []
    assert names(inbox) == ["shipments-1.csv"]
    outcomes = intake(connector, EventKind.SHIPMENT, ctx)
    assert [
        (source, [e.shipment_id for e in events if isinstance(e, WmsShipment)])
        for source, events in outcomes
        if isinstance(events, list)
    ] == [("shipments-1.csv", ["S1", "S2"])]
    assert names(inbox / "processed") == ["shipments-1.csv"]


def test_growing_file_is_taken_only_when_complete_and_stable(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path, stable_seconds=STABLE), make_ctx()
    path = tmp_path / "inbox" / "shipments.csv"
    path.write_text(SHIP_HEADER + "\n" + ROW[:20], encoding="utf-8")  # no newline at the end
    assert intake(connector, EventKind.SHIPMENT, ctx) == []  # first sight
    time.sleep(STABLE * 1.5)
    assert intake(connector, EventKind.SHIPMENT, ctx) == []  # stable, but incomplete
    assert connector.has_new_input() is False
    with path.open("a", encoding="utf-8") as stream:
        stream.write(ROW[20:] + "\n")
    assert connector.has_new_input() is False  # complete, but changed since the last scan
    assert intake(connector, EventKind.SHIPMENT, ctx) == []
    time.sleep(STABLE * 1.5)
    assert connector.has_new_input() is True
    assert intake(connector, EventKind.SHIPMENT, ctx) == [("shipments.csv", [EXPECTED])]


def test_file_without_final_newline_is_never_taken(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    (tmp_path / "inbox" / "shipments.csv").write_text(SHIP_HEADER + "\n" + ROW)
    for _ in range(3):
        assert connector.has_new_input() is False
        assert intake(connector, EventKind.SHIPMENT, ctx) == []


def test_file_must_stay_unchanged_for_stable_seconds(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path, stable_seconds=STABLE), make_ctx()
    write_csv(tmp_path / "inbox" / "shipments.csv", [SHIP_HEADER, ROW])
    assert connector.has_new_input() is False
    assert intake(connector, EventKind.SHIPMENT, ctx) == []
    time.sleep(STABLE * 1.5)
    assert connector.has_new_input() is True
    assert intake(connector, EventKind.SHIPMENT, ctx) == [("shipments.csv", [EXPECTED])]


def test_file_finished_long_ago_is_taken_at_first_sight(tmp_path: Path) -> None:
    """A one-shot run (``nebridge run --once``) scans only once: an old mtime is enough."""
    connector, ctx = make_connector(tmp_path, stable_seconds=5), make_ctx()
    old = write_csv(tmp_path / "inbox" / "shipments-old.csv", [SHIP_HEADER, ROW])
    os.utime(old, (time.time() - 10, time.time() - 10))
    write_csv(tmp_path / "inbox" / "shipments-new.csv", [SHIP_HEADER, ROW])
    assert intake(connector, EventKind.SHIPMENT, ctx) == [("shipments-old.csv", [EXPECTED])]
    assert names(tmp_path / "inbox") == ["shipments-new.csv"]


def test_two_files_arriving_together_are_both_taken_oldest_first(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    set_mtime(write_csv(inbox / "shipments-b.csv", [SHIP_HEADER, ROW]), 1_000)
    set_mtime(write_csv(inbox / "shipments-a.csv", [SHIP_HEADER, ROW.replace("S1", "S2")]), 2_000)
    set_mtime(write_csv(inbox / "receipts-1.csv", [RECEIPT_HEADER]), 500)
    assert intake(connector, EventKind.SHIPMENT, ctx) == [
        ("shipments-b.csv", [EXPECTED]),
        ("shipments-a.csv", [replace(EXPECTED, shipment_id="S2")]),
    ]
    assert names(inbox / "processed") == ["shipments-a.csv", "shipments-b.csv"]
    assert names(inbox) == ["receipts-1.csv"]  # another kind stays until asked for
    assert intake(connector, EventKind.RECEIPT, ctx) == [("receipts-1.csv", [])]


@pytest.mark.parametrize(
    "name",
    [".shipments.csv", "shipments.csv.tmp", "shipments.csv.part", "notes.csv", "shipments.txt"],
)
def test_other_files_are_ignored(tmp_path: Path, name: str) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    write_csv(tmp_path / "inbox" / name, [SHIP_HEADER, ROW])
    assert intake(connector, EventKind.SHIPMENT, ctx) == []
    assert connector.has_new_input() is False
    assert names(tmp_path / "inbox") == [name]


def test_file_names_match_in_any_case(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    write_csv(tmp_path / "inbox" / "Shipments_20261127.CSV", [SHIP_HEADER, ROW])
    assert intake(connector, EventKind.SHIPMENT, ctx) == [("Shipments_20261127.CSV", [EXPECTED])]


# --- product master -----------------------------------------------------------------------------


def test_product_snapshot_only_when_the_version_changes(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    master = write_csv(inbox / "products.csv", ["product_code,link_code", "P1,NE-1", "P2,"])
    assert connector.has_new_input() is True
    snapshot = connector.product_snapshot(ctx, None)
    assert snapshot is not None
    assert list(snapshot.products) == [ProductLink("P1", "NE-1"), ProductLink("P2", None)]
    stat = master.stat()
    assert snapshot.version.startswith(f"products.csv:{stat.st_size}:{stat.st_mtime_ns}:")
    assert names(inbox) == ["products.csv"]  # the master is kept in place
    assert connector.has_new_input() is False
    assert connector.product_snapshot(ctx, snapshot.version) is None

    restarted = make_connector(tmp_path)  # no cache: the version is recomputed, not re-sent
    assert restarted.product_snapshot(ctx, snapshot.version) is None
    again = restarted.product_snapshot(ctx, "some older version")
    assert again == snapshot


def test_newer_master_supersedes_older_ones(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    set_mtime(write_csv(inbox / "products-1.csv", ["product_code,link_code", "P1,A"]), 1_000)
    set_mtime(write_csv(inbox / "products-2.csv", ["product_code,link_code", "P1,B"]), 2_000)
    snapshot = connector.product_snapshot(ctx, None)
    assert snapshot is not None
    assert list(snapshot.products) == [ProductLink("P1", "B")]
    assert names(inbox) == ["products-2.csv"]
    assert names(inbox / "processed") == ["products-1.csv"]


def test_master_changed_in_place_gets_a_new_version(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path, stable_seconds=STABLE), make_ctx()
    master = write_csv(tmp_path / "inbox" / "products.csv", ["product_code,link_code", "P1,A"])
    assert connector.product_snapshot(ctx, None) is None  # first sight
    time.sleep(STABLE * 1.5)
    first = connector.product_snapshot(ctx, None)
    assert first is not None
    write_csv(master, ["product_code,link_code", "P1,B"])
    os.utime(master, ns=(master.stat().st_mtime_ns + 1_000_000,) * 2)
    assert connector.product_snapshot(ctx, first.version) is None  # changing: wait until stable
    time.sleep(STABLE * 1.5)
    second = connector.product_snapshot(ctx, first.version)
    assert second is not None
    assert second.version != first.version
    assert list(second.products) == [ProductLink("P1", "B")]


def test_invalid_master_is_rejected_and_the_previous_one_kept(tmp_path: Path) -> None:
    connector, ctx = make_connector(tmp_path), make_ctx()
    inbox = tmp_path / "inbox"
    set_mtime(write_csv(inbox / "products-1.csv", ["product_code,link_code", "P1,A"]), 1_000)
    set_mtime(
        write_csv(inbox / "products-2.csv", ["product_code,link_code", "P1,B", "P1,C"]), 2_000
    )
    snapshot = connector.product_snapshot(ctx, None)
    assert snapshot is not None
    assert list(snapshot.products) == [ProductLink("P1", "A")]
    assert names(inbox) == ["products-1.csv"]
    assert names(inbox / "rejected") == ["products-2.csv", "products-2.csv.errors.txt"]
    report = (inbox / "rejected" / "products-2.csv.errors.txt").read_text(encoding="utf-8")
    assert "line 3, column product_code: duplicate product 'P1', first on line 2" in report


def test_no_master_no_snapshot(tmp_path: Path) -> None:
    assert make_connector(tmp_path).product_snapshot(make_ctx(), None) is None


# --- configuration and registration ------------------------------------------------------------


def test_config_forbids_unknown_keys_and_zones(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        CsvConnectorConfig.model_validate({"inbox": tmp_path, "outbox": tmp_path, "polling": 1})
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        CsvConnectorConfig(inbox=tmp_path, outbox=tmp_path, timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        CsvConnectorConfig.model_validate(
            {"inbox": tmp_path, "outbox": tmp_path, "encoding_out": "latin-1"}
        )
    config = CsvConnectorConfig.model_validate({"inbox": "in", "outbox": "out"})
    assert (config.timezone, config.stable_seconds, config.encoding_out) == (
        "Asia/Tokyo",
        0.5,
        "utf-8",
    )


def test_timezone_setting_applies_to_timestamps_without_offset(tmp_path: Path) -> None:
    config = CsvConnectorConfig(
        inbox=tmp_path / "in", outbox=tmp_path / "out", timezone="UTC", stable_seconds=0
    )
    connector, ctx = CsvConnector(config), make_ctx()
    connector.recover(ctx)
    write_csv(tmp_path / "in" / "shipments.csv", [SHIP_HEADER, ROW])
    ((_, events),) = intake(connector, EventKind.SHIPMENT, ctx)
    assert events == [replace(EXPECTED, confirmed_at=at_tokyo(19))]


def test_hooks_register_the_csv_connector(tmp_path: Path) -> None:
    assert nebridge_plugin_info().name == "wms_csv"
    (spec,) = nebridge_wms_connectors()
    assert (spec.name, spec.config_model) == ("csv", CsvConnectorConfig)
    assert spec.summary
    config = CsvConnectorConfig(inbox=tmp_path / "in", outbox=tmp_path / "out")
    assert isinstance(spec.factory(config), WmsConnector)
