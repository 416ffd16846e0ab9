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
confirmed while the imports ran.

``--daemon N`` also runs the real thing in real time: ``nebridge run`` (a subprocess, default
schedule and ``poll_seconds``) between the Next Engine and Logikura sandboxes importing N
orders into one warehouse, staff shipping a new schedule every ``--daemon-ship-every``
seconds, and prints the latency from "shipped in Logikura" to "shipped in Next Engine" (the
sandbox ledger) and the most Logikura requests in any 60 s of wall time. It takes about
``N / 35`` minutes (two requests an order at 70 a minute).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ruamel.yaml import YAML

from benchmarks.virtual_time import VirtualTime
from daemon.config import load_config
from daemon.nelink import connect
from daemon.runtime import build_runtime
from daemon.sandbox import SandboxConfig as NeConfig
from daemon.sandbox import SandboxServer as NeSandbox
from daemon.store.engine import make_engine, upgrade
from hooks.connectors import AuthorizingConnector, ConnectorContext, InstructionBatch
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
    schedule_list_reads: int = 0
    import_minutes: float = 0.0
    shipped_during_import: int = 0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    latency_max_s: float = 0.0
    duplicates: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _orders(code: str, count: int, first: int) -> list[OrderInstruction]:
    return [
        OrderInstruction(
            ne_order_id=str(first + n),
            shop_order_id=f"R-{first + n}",
            warehouse=code,
            order_date="2026-12-01 10:00:00",
            delivery_method="",
            consignee_name=f"顧客 {first + n}",
            consignee_zip="1600023",
            consignee_address=f"東京都新宿区西新宿{n}",
            consignee_tel="",
            lines=(OrderInstructionLine(1, PRODUCT, PRODUCT, 1),),
        )
        for n in range(count)
    ]


def run(warehouses: int, orders: int, ship_every: float, poll: float) -> Figures:
    """One run with ``warehouses`` importing ``orders`` orders each (see module docstring)."""
    started = time.monotonic()
    figures = Figures(warehouses, orders)
    codes = CODES[:warehouses]
    sandbox = SandboxConfig.from_mapping(
        {"client_id": CLIENT_ID, "client_secret": SECRET, "clock_frozen": True, "seed_size": 0}
    )
    with SandboxServer(sandbox) as lk, tempfile.TemporaryDirectory() as folder:
        with lk.state.acting("python"):
            for code in codes:
                if not any(w.code == code for w in lk.state.warehouses.values()):
                    wid = lk.state.next_id("warehouse")
                    lk.state.warehouses[wid] = Warehouse(wid, code, code, lk.clock.iso())
        lk.state.add_variant(PRODUCT, link_code=PRODUCT, stock=dict.fromkeys(codes, 10**6))
        clock = VirtualTime(lk.clock.timestamp(), lk.clock)
        config = LogikuraConfig.model_validate(
            {
                "api_base": lk.base_url,
                "auth_base": lk.base_url,
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "redirect_uri": REDIRECT,
                "poll_seconds": poll,
            }
        )
        connector = LogikuraConnector(config, clock=clock, sleep=clock.sleep)
        http = BoundedSession()
        cursors: dict[str, str] = {}
        imported = {
            str(o.ne_order_id)
            for c in codes
            for o in _orders(c, orders, 100_000 * (1 + CODES.index(c)))
        }
        ctx = ConnectorContext(
            warehouses={c: WarehouseInfo(c, c, True, True) for c in codes},
            is_known_product=lambda _code: True,
            http=http,
            clock=clock.utc,
            log=logging.getLogger("bench.logikura"),
            cursors=cursors,
            state_dir=Path(folder),
            is_imported_order=imported.__contains__,
        )
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
            batch = InstructionBatch(
                f"bench-{code}",
                datetime(2026, 12, 1, tzinfo=UTC),
                _orders(code, orders, 100_000 * (1 + CODES.index(code))),
            )
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
        key = next(
            f"grant:{e.record_id}"
            for e in lk.ledger.entries(kind="oauth.token")
            if e.detail["grant_type"] == "authorization_code"
        )
        records = [r for r in lk.state.traffic.requests(key) if r.at >= begin]
        figures.requests = len(records)
        figures.max_per_minute = lk.state.traffic.max_in_window(WINDOW_SECONDS, key)
        figures.rate_limited = lk.state.traffic.rate_limited(key)
        figures.schedule_posts = sum(
            1 for r in records if r.method == "POST" and r.path == "/api/v1/shipping_schedules"
        )
        figures.history_reads = sum(1 for r in records if r.path.endswith("_histories"))
        figures.schedule_list_reads = sum(
            1 for r in records if r.method == "GET" and r.path == "/api/v1/shipping_schedules"
        )
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


@dataclass
class DaemonFigures:
    """What the real-time daemon run measured (wall seconds)."""

    orders: int
    import_minutes: float = 0.0
    shipped: int = 0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    latency_max_s: float = 0.0
    max_per_minute: int = 0
    rate_limited: int = 0
    duplicates: int = 0
    sigterm_s: float = 0.0
    log_warnings: int = 0
    max_instances_lines: int = 0


def _yaml(data: object) -> str:
    buf = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.dump(data, buf)
    return buf.getvalue()


def run_daemon(orders: int, ship_every: float) -> DaemonFigures:
    """``nebridge run`` importing ``orders`` orders while staff ship (see module docstring)."""
    figures = DaemonFigures(orders)
    lk_config = SandboxConfig.from_mapping(
        {"client_id": CLIENT_ID, "client_secret": SECRET, "seed_size": 0}
    )
    with (
        NeSandbox(
            NeConfig(client_id="ne-bench", client_secret="ne-bench-secret", seed_size=0)
        ) as ne,
        SandboxServer(lk_config) as lk,
        tempfile.TemporaryDirectory() as folder,
    ):
        root = Path(folder)
        path = root / "daemon.yaml"
        path.write_text(
            _yaml(
                {
                    "state_dir": str(root / "state"),
                    "nextengine": {
                        "api_base": ne.base_url,
                        "login_base": ne.base_url,
                        "client_id": "ne-bench",
                        "client_secret": "ne-bench-secret",
                    },
                    "warehouses": [{"code": "ITAKU", "ne_linked": True, "import_orders": True}],
                    "plugins": {
                        name: {"enabled": True}
                        for name in (
                            "status_update",
                            "tracking_update",
                            "stock_minus",
                            "stock_plus",
                        )
                    },
                    "wms": {
                        "connector": "logikura",
                        "logikura": {
                            "api_base": lk.base_url,
                            "auth_base": lk.base_url,
                            "client_id": CLIENT_ID,
                            "client_secret": SECRET,
                            "redirect_uri": REDIRECT,
                        },
                    },
                }
            ),
            encoding="utf-8",
        )
        settings = load_config(path).config
        engine = make_engine(settings.resolved_database_url)
        upgrade(engine)
        connect(settings, engine, *ne.state.issue_login())
        engine.dispose()
        ne.state.create_goods(PRODUCT, quantity=10**6)
        lk.state.add_variant(PRODUCT, link_code=PRODUCT, stock={"ITAKU": 10**6})
        runtime = build_runtime(path)
        try:
            connector: object = runtime.connector
            assert isinstance(connector, AuthorizingConnector)
            connector.authorize(lk.state.issue_code(REDIRECT), runtime.connector_context())
        finally:
            runtime.close()
        ids = [str(ne.state.create_order([(PRODUCT, 1)], shop_id=1)) for _ in range(orders)]
        staff = WarehouseStaff(lk.base_url)
        log = (root / "daemon.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(path), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
            },
        )
        began = time.monotonic()
        confirmed: dict[str, float] = {}
        shipped: dict[str, float] = {}
        next_ship = began + ship_every
        try:
            while len(lk.ledger.schedules_created()) < orders or set(confirmed) - set(shipped):
                now = time.monotonic()
                if figures.import_minutes == 0 and len(lk.ledger.schedules_created()) == orders:
                    figures.import_minutes = round((now - began) / 60, 1)
                if now >= next_ship and figures.import_minutes == 0:
                    next_ship += ship_every
                    order = next(
                        (o for o in ids if o not in confirmed and lk.state.schedules_for(o)), None
                    )
                    if order is not None:
                        schedule = lk.state.schedules_for(order)[0]["id"]
                        staff.set_tracking(schedule, f"T-{order}")
                        staff.start(schedule, "ITAKU")
                        staff.ship(schedule)
                        confirmed[order] = time.monotonic()
                for order_id in ne.ledger.shipped_order_ids():
                    shipped.setdefault(str(order_id), time.monotonic())
                if now - began > 3 * 60 + orders * 4:
                    raise RuntimeError("the daemon run did not finish; see daemon.log")
                time.sleep(0.2)
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=180)
            figures.sigterm_s = round(time.monotonic() - stopping, 1)
        finally:
            if proc.poll() is None:
                proc.kill()
            staff.close()
            log.close()
        lines = (root / "daemon.log").read_text(encoding="utf-8").splitlines()
        figures.log_warnings = sum(" WARNING " in line for line in lines)
        figures.max_instances_lines = sum(
            "maximum number of running instances" in line for line in lines
        )
        latencies = sorted(shipped[o] - at for o, at in confirmed.items())
        figures.shipped = len(latencies)
        if latencies:
            figures.latency_p50_s = round(statistics.median(latencies), 1)
            figures.latency_p95_s = round(latencies[int(0.95 * (len(latencies) - 1))], 1)
            figures.latency_max_s = round(latencies[-1], 1)
        key = next(
            f"grant:{e.record_id}"
            for e in lk.ledger.entries(kind="oauth.token")
            if e.detail["grant_type"] == "authorization_code"
        )
        figures.max_per_minute = lk.state.traffic.max_in_window(WINDOW_SECONDS, key)
        figures.rate_limited = lk.state.traffic.rate_limited(key)
        figures.duplicates = sum(n - 1 for n in lk.ledger.schedules_created().values())
    return figures


def main() -> None:
    """Run the workloads and print the table (and ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.logikura_budget")
    parser.add_argument("--warehouses", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--orders", type=int, default=400)
    parser.add_argument(
        "--ship-every",
        type=float,
        default=20.0,
        help="virtual seconds between two shipments confirmed by staff",
    )
    parser.add_argument("--poll", type=float, default=60.0, help="wms.logikura.poll_seconds")
    parser.add_argument(
        "--daemon",
        type=int,
        default=0,
        metavar="N",
        help="also run nebridge in real time importing N orders",
    )
    parser.add_argument("--daemon-ship-every", type=float, default=15.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = [run(w, args.orders, args.ship_every, args.poll) for w in args.warehouses]
    daemon = run_daemon(args.daemon, args.daemon_ship_every) if args.daemon else None
    print(
        "warehouses | orders each | requests | max in any 60 s | 429s | schedule POSTs | "
        "history reads | schedule list reads | import min | shipments during import | "
        "read latency p50/p95/max s | duplicates | wall s"
    )
    for f in rows:
        print(
            f"{f.warehouses} | {f.orders} | {f.requests} | {f.max_per_minute} | "
            f"{f.rate_limited} | {f.schedule_posts} | {f.history_reads} | "
            f"{f.schedule_list_reads} | "
            f"{f.import_minutes} | {f.shipped_during_import} | {f.latency_p50_s} / "
            f"{f.latency_p95_s} / {f.latency_max_s} | {f.duplicates} | {f.wall_s}"
        )
        for note in f.notes[:5]:
            print(f"  note: {note}")
    if daemon is not None:
        print(
            f"daemon, real time: {daemon.orders} orders imported in "
            f"{daemon.import_minutes} min; {daemon.shipped} shipments confirmed meanwhile, "
            f"Logikura → Next Engine p50/p95/max {daemon.latency_p50_s} / "
            f"{daemon.latency_p95_s} / {daemon.latency_max_s} s; most requests in any "
            f"60 s {daemon.max_per_minute}, 429s {daemon.rate_limited}, duplicates "
            f"{daemon.duplicates}; SIGTERM to exit {daemon.sigterm_s} s; log: "
            f"{daemon.log_warnings} warning(s), {daemon.max_instances_lines} about "
            "running instances"
        )
    if args.json:
        data = {
            "virtual": [asdict(f) for f in rows],
            "daemon": asdict(daemon) if daemon is not None else None,
        }
        args.json.write_text(json.dumps(data, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
