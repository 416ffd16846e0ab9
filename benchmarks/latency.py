"""File appearing → order shipped in the sandbox, measured on a running daemon process.

The daemon runs as it does in production — ``python -m daemon --config X run`` (or the naive
daemon, ``python -m benchmarks.naive``) as a subprocess — while shipment files arrive one
after another. A watcher thread stamps each ``order.shipped`` entry of the sandbox's ledger
as it appears; an order's latency is that stamp minus the moment its file was renamed into
the inbox. The daemon's idle RSS is read from ``/proc`` once it has loaded the product
master and settled, its peak RSS (``VmHWM``) and CPU time at the end.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.world import SHIP_HEADER, World, shipment_rows
from daemon.config import load_config
from daemon.inbox import PRODUCTS_CURSOR
from daemon.store.engine import make_engine, read_session
from daemon.store.models import Cursor

REPO = Path(__file__).resolve().parent.parent
WATCH_INTERVAL_S = 0.005
ARRIVAL_SEED = 7


@dataclass
class Arrivals:
    """How shipment files arrive: ``files`` files of ``orders`` orders, ``period_s`` apart on
    average (uniformly between half and one and a half times that, from a fixed seed, so
    arrivals do not fall into step with the daemon's polling)."""

    files: int = 20
    orders: int = 5
    period_s: float = 1.0
    settle_s: float = 1.5
    timeout_s: float = 120.0


@dataclass
class LatencyResult:
    """Latencies of one run, and what the daemon process cost."""

    strategy: str
    orders: int
    shipped: int = 0
    p50_s: float = 0.0
    p95_s: float = 0.0
    max_s: float = 0.0
    duration_s: float = 0.0
    idle_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)


def _status_mb(pid: int, key: str) -> float:
    """A ``/proc/<pid>/status`` memory line (``VmRSS``, ``VmHWM``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _command(strategy: str, config: Path) -> list[str]:
    if strategy == "naive":
        return [sys.executable, "-m", "benchmarks.naive", "--config", str(config)]
    return [sys.executable, "-m", "daemon", "--config", str(config), "run"]


class _Watcher(threading.Thread):
    """Stamps every ``order.shipped`` ledger entry with the time it was first seen."""

    def __init__(self, world: World) -> None:
        super().__init__(name="ledger-watcher", daemon=True)
        self.ledger = world.sandbox.ledger
        self.seen = len(self.ledger)
        self.shipped: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(WATCH_INTERVAL_S):
            entries = self.ledger.entries(since=self.seen)
            now = time.monotonic()
            if entries:
                self.seen = entries[-1].seq
            for entry in entries:
                if entry.kind == "order.shipped" and entry.order_id is not None:
                    self.shipped.setdefault(entry.order_id, now)


def _wait_ready(world: World, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the daemon has read the product master (its first intake ran)."""
    engine = make_engine(load_config(world.config).config.resolved_database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited with {process.returncode}; see {world.root / 'daemon.log'}"
                )
            with read_session(engine) as session:
                if session.get(Cursor, PRODUCTS_CURSOR) is not None:
                    return
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise TimeoutError("the daemon did not read the product master in time")


def _arrive(world: World, order_ids: list[int], arrivals: Arrivals) -> dict[int, float]:
    """Drop the shipment files one after another; return when each order's file appeared."""
    dropped: dict[int, float] = {}
    pacing = random.Random(ARRIVAL_SEED)
    for index in range(arrivals.files):
        chunk = order_ids[index * arrivals.orders : (index + 1) * arrivals.orders]
        world.drop(
            f"shipments-latency-{index:04d}.csv",
            SHIP_HEADER,
            shipment_rows(chunk, first=index * arrivals.orders),
        )
        dropped.update(dict.fromkeys(chunk, time.monotonic()))
        time.sleep(pacing.uniform(0.5, 1.5) * arrivals.period_s)
    return dropped


def _observe(
    world: World,
    process: subprocess.Popen[bytes],
    order_ids: list[int],
    arrivals: Arrivals,
    result: LatencyResult,
) -> None:
    """Measure one run on a started daemon; fill ``result``."""
    _wait_ready(world, process, timeout=60)
    time.sleep(arrivals.settle_s)
    result.idle_rss_mb = _status_mb(process.pid, "VmRSS")
    before = Counter(world.sandbox.state.traffic.snapshot()["calls_by_path"])
    watcher = _Watcher(world)
    watcher.start()
    started = time.monotonic()
    try:
        dropped = _arrive(world, order_ids, arrivals)
        deadline = time.monotonic() + arrivals.timeout_s
        while len(watcher.shipped) < len(order_ids) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stop.set()
        watcher.join()
    result.duration_s = time.monotonic() - started
    result.peak_rss_mb = _status_mb(process.pid, "VmHWM")
    result.cpu_s = _cpu_s(process.pid)
    after = Counter(world.sandbox.state.traffic.snapshot()["calls_by_path"])
    result.calls = dict(after - before)
    latencies = sorted(t - dropped[o] for o, t in watcher.shipped.items() if o in dropped)
    result.shipped = len(latencies)
    if latencies:
        result.p50_s = statistics.median(latencies)
        result.p95_s = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
        result.max_s = latencies[-1]


def measure_latency(world: World, strategy: str, arrivals: Arrivals) -> LatencyResult:
    """Start the daemon, let files arrive, stamp shipments, stop the daemon (SIGTERM)."""
    order_ids = world.create_orders(arrivals.files * arrivals.orders)
    result = LatencyResult(strategy, len(order_ids))
    with (world.root / "daemon.log").open("wb") as log:
        process = subprocess.Popen(
            _command(strategy, world.config), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _observe(world, process, order_ids, arrivals, result)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return result
