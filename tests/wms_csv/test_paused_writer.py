"""A WMS that writes straight to the final file name and pauses mid-write loses no line.

nebridge may take such a file during a pause and file it away into ``processed/``; the rename
keeps the inode, so the writer's next lines land there. The inbox watches what it filed away
(``wms.csv.processed_watch_seconds``) and sends a file that grew back to be read again.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from hooks.records import EventKind, WmsReceipt
from plugins.wms_csv import CsvConnector, CsvConnectorConfig

from .test_connector import intake, names
from .test_parsing import RECEIPT_HEADER, make_ctx, write_csv


def receipt_row(number: int) -> str:
    """One receipts row with id ``R-<number>``."""
    return f"R-{number},W1,2026-11-27 10:00:00,P1,1"


def start(tmp_path: Path, stable: float, watch: float = 600) -> CsvConnector:
    """A started connector on ``tmp_path/inbox``."""
    connector = CsvConnector(
        CsvConnectorConfig(
            inbox=tmp_path / "inbox",
            outbox=tmp_path / "outbox",
            stable_seconds=stable,
            processed_watch_seconds=watch,
        )
    )
    connector.recover(make_ctx())
    return connector


def receipt_ids(connector: CsvConnector) -> list[str]:
    """The receipt ids of one intake of every ready receipts file (stored ids again included)."""
    ids: list[str] = []
    for _source, events in intake(connector, EventKind.RECEIPT, make_ctx()):
        assert isinstance(events, list), events
        ids += [event.receipt_id for event in events if isinstance(event, WmsReceipt)]
    return ids


def test_lines_written_into_the_processed_file_are_read_and_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer appends after the file was filed away: the next intake reads the file again
    (the new line with it), says so at WARNING with the fix, and files it away once more."""
    connector = start(tmp_path, stable=0)
    inbox = tmp_path / "inbox"
    with (inbox / "receipts-slow.csv").open("w", encoding="utf-8") as writer:
        writer.write(f"{RECEIPT_HEADER}\n{receipt_row(0)}\n")
        writer.flush()
        assert receipt_ids(connector) == ["R-0"]
        assert names(inbox / "processed") == ["receipts-slow.csv"]
        writer.write(f"{receipt_row(1)}\n")  # after the pause: lands in processed/
        writer.flush()
    with caplog.at_level(logging.WARNING):
        assert receipt_ids(connector) == ["R-0", "R-1"]
    assert "receipts-slow.csv grew after nebridge had read it" in caplog.text
    assert "write to a temporary name and rename" in caplog.text
    assert names(inbox / "processed") == ["receipts-slow.csv"]
    assert names(inbox) == []
    assert receipt_ids(connector) == []  # read in full: nothing more comes back


def test_no_watch_leaves_a_processed_file_alone(tmp_path: Path) -> None:
    """``processed_watch_seconds: 0`` turns the watch off (what the fix adds, and nothing else)."""
    connector = start(tmp_path, stable=0, watch=0)
    inbox = tmp_path / "inbox"
    write_csv(inbox / "receipts-1.csv", [RECEIPT_HEADER, receipt_row(0)])
    assert receipt_ids(connector) == ["R-0"]
    with (inbox / "processed" / "receipts-1.csv").open("a", encoding="utf-8") as writer:
        writer.write(f"{receipt_row(1)}\n")
    assert receipt_ids(connector) == []


def test_a_writer_pausing_mid_file_loses_no_line(tmp_path: Path) -> None:
    """A real writer thread keeps the file open and pauses longer than ``stable_seconds`` now
    and then, while the intake polls as the daemon does: every row is read in the end."""
    connector = start(tmp_path, stable=0.2)
    path = tmp_path / "inbox" / "receipts-slow.csv"
    rows = 12

    def write() -> None:
        with path.open("w", encoding="utf-8") as writer:
            writer.write(f"{RECEIPT_HEADER}\n")
            writer.flush()
            for number in range(rows):
                writer.write(f"{receipt_row(number)}\n")
                writer.flush()
                time.sleep(0.05 if number % 3 else 0.6)

    writer = threading.Thread(target=write)
    writer.start()
    seen: set[str] = set()
    while writer.is_alive():
        seen.update(receipt_ids(connector))
        time.sleep(0.05)
    writer.join()
    deadline = time.monotonic() + 30
    while len(seen) < rows and time.monotonic() < deadline:
        seen.update(receipt_ids(connector))
        time.sleep(0.1)
    assert seen == {f"R-{number}" for number in range(rows)}
