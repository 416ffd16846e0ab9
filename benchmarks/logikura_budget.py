"""``python -m benchmarks.logikura_budget``: Logikura's request budget and shipment latency
while warehouses import large order batches (issue #20, findings 6 and 8).

For 1, 2 and 4 warehouses, each importing ``--orders`` orders (one instruction batch per
warehouse, as the order import delivers it; every order its own consignee, so two POSTs an
order), the real :class:`~plugins.wms_logikura.LogikuraConnector` talks over HTTP to the
Logikura sandbox while:

* one import thread per warehouse pushes its batch (the daemon's ``import:<code>`` job);
* warehouse staff (their own authorisation, so not nebridge's budget) ship one of the new
  schedules every ``--ship-every`` seconds, round robin over the warehouses;
* the intake reads the shipping and receiving histories every ``poll_seconds`` (the
  daemon's intake job) and notes when each shipment was first read.

Time is virtual (:mod:`benchmarks.virtual_time`, the sandbox's clock follows it): an hour of
rate-limited traffic runs in well under a minute of wall time, and the figures are what the
sandbox counted on its own clock. Printed per warehouse count: nebridge's requests, the most
in any 60 s window (the limit is 100; nebridge keeps to 90), 429 answers, how long the
imports took, and the latency from "shipped in Logikura" to "read by nebridge" for shipments
confirmed while the imports ran. From there a shipment's way to Next Engine (pipeline job,
dispatcher) uses no Logikura request and no longer waits for the import (see
``tests/wms_logikura/test_import_flow.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.virtual_time import VirtualTime
from hooks.connectors import ConnectorContext, InstructionBatch
from hooks.http import BoundedSession
from hooks.records import (
    EventKind,
    OrderInstruction,
    OrderInstructionLine,
    WarehouseInfo,
    WmsShipment,
)
from plugins.wms_logikura import LogikuraConfig, LogikuraConnector
from plugins.wms_logikura.errors import LogikuraError
from plugins.wms_logikura.ratelimit import WINDOW_SECONDS
from plugins.wms_logikura.sandbox import SandboxConfig, SandboxServer, WarehouseStaff
from plugins.wms_logikura.sandbox.model import Warehouse

CLIENT_ID, SECRET = "nebridge-bench", "nebridge-bench-secret-0123"
REDIRECT = "http://127.0.0.1:8766/callback"
CODES = ("ITAKU", "SHINJUKU", "ASAKUSA", "KAWASAKI")
PRODUCT = "BENCH-1"
RETRY_SECONDS = 60.0  # the daemon's schedule.interval_seconds: the next import run


@dataclass
class Figures:
    """What one run measured (virtual seconds)."""

    warehouses: int
    orders: int
    requests: int = 0
    max_per_minute: int = 0
    rate_limited: int = 0
    schedule_posts: int = 0
    history_reads: int = 0
    import_minutes: float = 0.0
    shipped_during_import: int = 0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    latency_max_s: float = 0.0
    duplicates: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _orders(code: str, count: int, first: int) -> list[OrderInstruction]:
    return [OrderInstruction(
        ne_order_id=str(first + n), shop_order_id=f"R-{first + n}", warehouse=code,
        order_date="2026-12-01 10:00:00", delivery_method="", consignee_name=f"顧客 {first + n}",
        consignee_zip="1600023", consignee_address=f"東京都新宿区西新宿{n}", consignee_tel="",
        lines=(OrderInstructionLine(1, PRODUCT, PRODUCT, 1),)) for n in range(count)]


def run(warehouses: int, orders: int, ship_every: float, poll: float) -> Figures:
    """One run with ``warehouses`` importing ``orders`` orders each (see module docstring)."""
    started = time.monotonic()
    figures = Figures(warehouses, orders)
    codes = CODES[:warehouses]
    sandbox = SandboxConfig.from_mapping({"client_id": CLIENT_ID, "client_secret": SECRET,
                                          "clock_frozen": True, "seed_size": 0})
    with SandboxServer(sandbox) as lk, tempfile.TemporaryDirectory() as folder:
        with lk.state.acting("python"):
            for code in codes:
                if not any(w.code == code for w in lk.state.warehouses.values()):
                    wid = lk.state.next_id("warehouse")
                    lk.state.warehouses[wid] = Warehouse(wid, code, code, lk.clock.iso())
        lk.state.add_variant(PRODUCT, link_code=PRODUCT, stock=dict.fromkeys(codes, 10**6))
        clock = VirtualTime(lk.clock.timestamp(), lk.clock)
        config = LogikuraConfig.model_validate({
            "api_base": lk.base_url, "auth_base": lk.base_url, "client_id": CLIENT_ID,
            "client_secret": SECRET, "redirect_uri": REDIRECT, "poll_seconds": poll})
        connector = LogikuraConnector(config, clock=clock, sleep=clock.sleep)
        http = BoundedSession()
        cursors: dict[str, str] = {}
        imported = {str(o.ne_order_id) for c in codes
                    for o in _orders(c, orders, 100_000 * (1 + CODES.index(c)))}
        ctx = ConnectorContext(
            warehouses={c: WarehouseInfo(c, c, True, True) for c in codes},
            is_known_product=lambda _code: True, http=http, clock=clock.utc,
            log=logging.getLogger("bench.logikura"), cursors=cursors,
            state_dir=Path(folder), is_imported_order=imported.__contains__)
        with clock.party():
            connector.authorize(lk.state.issue_code(REDIRECT), ctx)
        importing = threading.Event()
        importing.set()
        finished: list[float] = []
        confirmed: dict[str, float] = {}
        read: dict[str, float] = {}
        lock = threading.Lock()
        begin = clock()

        def importer(code: str) -> None:
            batch = InstructionBatch(f"bench-{code}", datetime(2026, 12, 1, tzinfo=UTC),
                                     _orders(code, orders, 100_000 * (1 + CODES.index(code))))
            with clock.party():
                while True:
                    try:
                        connector.push_orders(batch, ctx)
                        break
                    except LogikuraError as exc:
                        figures.notes.append(f"{code}: {exc}"[:200])
                        clock.sleep(RETRY_SECONDS)
                with lock:
                    finished.append(clock())
                    if len(finished) == len(codes):
                        importing.clear()

        def staff() -> None:
            people = WarehouseStaff(lk.base_url)
            queues = {c: _orders(c, orders, 100_000 * (1 + CODES.index(c))) for c in codes}
            turn = 0
            with clock.party():
                while importing.is_set():
                    clock.sleep(ship_every)
                    code = codes[turn % len(codes)]
                    turn += 1
                    queue = queues[code]
                    while queue and lk.state.schedules_for(queue[0].ne_order_id):
                        order = queue.pop(0)
                        schedule = lk.state.schedules_for(order.ne_order_id)[0]["id"]
                        if order.ne_order_id in confirmed:
                            continue
                        people.set_tracking(schedule, f"T-{order.ne_order_id}")
                        people.start(schedule, code)
                        people.ship(schedule)
                        confirmed[order.ne_order_id] = clock()
                        break
            people.close()

        def intake() -> None:
            with clock.party():
                while importing.is_set() or set(confirmed) - set(read):
                    for kind in (EventKind.SHIPMENT, EventKind.RECEIPT):
                        for batch in connector.pending_batches(kind, ctx):
                            for event in batch.events():
                                if isinstance(event, WmsShipment) and event.ne_order_id:
                                    read.setdefault(event.ne_order_id, clock())
                            batch.commit()
                            if batch.cursor is not None:
                                cursors[batch.cursor[0]] = batch.cursor[1]
                    clock.sleep(poll)

        threads = [threading.Thread(target=importer, args=(c,)) for c in codes]
        threads += [threading.Thread(target=staff), threading.Thread(target=intake)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        http.close()
        key = next(f"grant:{e.record_id}" for e in lk.ledger.entries(kind="oauth.token")
                   if e.detail["grant_type"] == "authorization_code")
        records = [r for r in lk.state.traffic.requests(key) if r.at >= begin]
        figures.requests = len(records)
        figures.max_per_minute = lk.state.traffic.max_in_window(WINDOW_SECONDS, key)
        figures.rate_limited = lk.state.traffic.rate_limited(key)
        figures.schedule_posts = sum(1 for r in records if r.method == "POST"
                                     and r.path == "/api/v1/shipping_schedules")
        figures.history_reads = sum(1 for r in records if r.path.endswith("_histories"))
        figures.import_minutes = round((max(finished) - begin) / 60, 1)
        latencies = sorted(read[o] - at for o, at in confirmed.items() if o in read)
        figures.shipped_during_import = len(confirmed)
        if latencies:
            figures.latency_p50_s = round(statistics.median(latencies), 1)
            figures.latency_p95_s = round(latencies[int(0.95 * (len(latencies) - 1))], 1)
            figures.latency_max_s = round(latencies[-1], 1)
        missing = set(confirmed) - set(read)
        if missing:
            figures.notes.append(f"{len(missing)} shipment(s) never read")
        figures.duplicates = sum(n - 1 for n in lk.ledger.schedules_created().values())
    figures.wall_s = round(time.monotonic() - started, 1)
    return figures


def main() -> None:
    """Run the workloads and print the table (and ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.logikura_budget")
    parser.add_argument("--warehouses", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--orders", type=int, default=400)
    parser.add_argument("--ship-every", type=float, default=20.0,
                        help="virtual seconds between two shipments confirmed by staff")
    parser.add_argument("--poll", type=float, default=60.0,
                        help="wms.logikura.poll_seconds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = [run(w, args.orders, args.ship_every, args.poll) for w in args.warehouses]
    print("warehouses | orders each | requests | max in any 60 s | 429s | schedule POSTs | "
          "history reads | import min | shipments during import | read latency p50/p95/max s "
          "| duplicates | wall s")
    for f in rows:
        print(f"{f.warehouses} | {f.orders} | {f.requests} | {f.max_per_minute} | "
              f"{f.rate_limited} | {f.schedule_posts} | {f.history_reads} | "
              f"{f.import_minutes} | {f.shipped_during_import} | {f.latency_p50_s} / "
              f"{f.latency_p95_s} / {f.latency_max_s} | {f.duplicates} | {f.wall_s}")
        for note in f.notes[:5]:
            print(f"  note: {note}")
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in rows], indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
