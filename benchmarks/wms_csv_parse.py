"""Throughput and peak memory of the CSV connector's shipment parser (not a test).

Generates a shipments file (default 100,000 lines, 1-3 lines per shipment, some shipments
split across the file), reads it once for speed and once under tracemalloc for peak memory.

Run from the repository root::

    .venv/bin/python -m benchmarks.wms_csv_parse [LINES]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import requests

from hooks.connectors import ConnectorContext
from hooks.records import WarehouseInfo
from plugins.wms_csv.formats import SHIPMENTS
from plugins.wms_csv.inbound import read_events

HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"


def generate(path: Path, lines: int) -> None:
    """Write ``lines`` shipment lines; every 10th shipment's last line comes one shipment late."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        stream.write(HEADER + "\r\n")
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
            split = shipment % 10 == 0
            stream.writelines(rows[:-1] if split else rows)
            stream.writelines(deferred)
            deferred = rows[-1:] if split else []
            written += size
        stream.writelines(deferred)


def read_all(path: Path) -> int:
    """Read every event of the file; return the number of lines they hold."""
    ctx = ConnectorContext(
        warehouses={"W1": WarehouseInfo("W1", "bench", True, True)},
        is_known_product={"P1", "P2", "P3"}.__contains__,
        http=requests.Session(),
        clock=lambda: datetime.now(UTC),
        log=logging.getLogger("benchmark"),
    )
    events = read_events(path, path.name, SHIPMENTS, ctx, ZoneInfo("Asia/Tokyo"))
    return sum(len(event.lines) for event in events)


def main() -> None:
    """Generate, time, trace, print."""
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "shipments-bench.csv"
        generate(path, lines)
        size = path.stat().st_size
        started = time.perf_counter()
        if read_all(path) != lines:
            raise SystemExit("the parser lost lines")
        elapsed = time.perf_counter() - started
        tracemalloc.start()
        read_all(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(f"file:   {lines:,} lines, {size / 1e6:.1f} MB")
    print(f"speed:  {lines / elapsed:,.0f} lines/s ({elapsed:.2f} s, validation + events)")
    print(f"memory: peak {peak / 1e6:.1f} MB traced ({peak / size:.2f} x file size)")


if __name__ == "__main__":
    main()
