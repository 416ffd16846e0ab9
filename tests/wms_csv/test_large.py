"""A 100,000-line file is read in bounded memory (behaviour, not timing)."""

from __future__ import annotations

import csv
import tracemalloc
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from hooks.records import ShipmentLine, WmsShipment
from plugins.wms_csv import inbound
from plugins.wms_csv.formats import SHIPMENTS
from plugins.wms_csv.inbound import read_events

from .test_parsing import SHIP_HEADER, TOKYO, make_ctx

LINES = 100_000


def write_big_file(path: Path, lines: int = LINES) -> int:
    """``lines`` (100,000) lines in shipments of 1-3 lines; the last line of every 10th
    shipment comes only after the next shipment's lines. Returns the number of shipments."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        stream.write(SHIP_HEADER + "\r\n")
        written = shipment = 0
        deferred: list[str] = []
        while written < lines:
            shipment += 1
            size = min(1 + shipment % 3, lines - written)
            rows = [
                f"S{shipment:07d},W1,{900_000 + shipment},TRK{shipment:010d},"
                f"2026-11-27 10:{shipment % 60:02d}:00,P{line + 1},{line + 1}\r\n"
                for line in range(size)
            ]
            stream.writelines(rows[:-1] if shipment % 10 == 0 else rows)
            stream.writelines(deferred)
            deferred = rows[-1:] if shipment % 10 == 0 else []
            written += size
        stream.writelines(deferred)
    return shipment


def traced_peak(work: Callable[[], object]) -> int:
    """The peak of memory traced by tracemalloc while ``work`` runs."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_hundred_thousand_lines_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "shipments-big.csv"
    shipments = write_big_file(path)
    totals = {"events": 0, "lines": 0}
    kept: dict[str, WmsShipment] = {}
    held: list[list[str]] = []

    def read_all() -> None:
        """Read like the engine: look at each event, keep (almost) nothing."""
        for event in read_events(path, path.name, SHIPMENTS, make_ctx(), TOKYO):
            assert isinstance(event, WmsShipment)
            totals["events"] += 1
            totals["lines"] += len(event.lines)
            if event.shipment_id in ("S0000001", "S0000010"):
                kept[event.shipment_id] = event

    def hold_rows() -> None:
        """What the file takes when its rows are simply held in memory."""
        with path.open(encoding="utf-8", newline="") as stream:
            held.extend(csv.reader(stream))

    peak = traced_peak(read_all)
    in_memory = traced_peak(hold_rows)

    assert totals == {"events": shipments, "lines": LINES}
    assert kept["S0000001"] == WmsShipment(
        "S0000001",
        "W1",
        "900001",
        "TRK0000000001",
        datetime(2026, 11, 27, 10, 1, tzinfo=TOKYO),
        (ShipmentLine("P1", 1), ShipmentLine("P2", 2)),
    )
    assert kept["S0000010"].lines == (ShipmentLine("P1", 1), ShipmentLine("P2", 2))  # split rows
    assert len(held) == LINES + 1
    # What stays is one line count per shipment id: a fraction of the rows held in memory.
    assert peak < in_memory / 4, f"peak {peak:,} bytes, rows in memory {in_memory:,} bytes"


def test_a_small_file_read_twice_gives_what_three_passes_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to ``KEEP_ROWS`` rows pass 2 keeps its groups for pass 3; above, the file is read
    again. Both give the same events, in the same order (split shipments included)."""
    path = tmp_path / "shipments-small.csv"
    shipments = write_big_file(path, lines=2_000)
    kept = list(read_events(path, path.name, SHIPMENTS, make_ctx(), TOKYO))
    monkeypatch.setattr(inbound, "KEEP_ROWS", 0)
    read_again = list(read_events(path, path.name, SHIPMENTS, make_ctx(), TOKYO))
    assert len(kept) == shipments and kept == read_again
