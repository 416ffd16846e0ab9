"""``python -m benchmarks``: every workload against the sandbox, nebridge and naive, one table.

For each sandbox latency (``--latencies``, default 0 and 150 ms per call) and each workload,
the runner starts a fresh sandbox and linked configuration (:mod:`benchmarks.world`),
prepares the NE orders and the WMS file, and runs one measured daemon pass in a worker
process (:mod:`benchmarks.worker`) with nebridge's executors and again with the naive ones
(:mod:`benchmarks.naive`). NE calls are counted by the sandbox, shipments and uploads are
read from its ledger and checked. The latency rows run the real daemon process
(:mod:`benchmarks.latency`).

Runs whose NE calls grow with the events are bounded when calls are slow, and the naive
strategy above ``--naive-max`` events: they run with fewer events and are extrapolated
linearly; the table's ``run`` column says so (``200 ×50`` = ran 200 events, figures × 50).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.latency import REPO, Arrivals, LatencyResult, measure_latency
from benchmarks.report import Row, Run, render
from benchmarks.worker import JobResult
from benchmarks.world import (
    LATENCY_SCHEDULE,
    QUE_DELAY_S,
    RECEIPT_HEADER,
    SHIP_HEADER,
    World,
    other_quantity,
    other_shipment_rows,
    receipt_quantity,
    receipt_rows,
    shipment_rows,
    start_world,
)


@dataclass(frozen=True)
class Workload:
    """A named workload: ``kind`` of input and how many events (orders for imports)."""

    name: str
    kind: str
    size: int
    title: str


WORKLOADS = (
    Workload("ship-1k", "ship", 1_000, "shipments of NE orders"),
    Workload("ship-10k", "ship", 10_000, "shipments of NE orders"),
    Workload("ship-100k", "ship", 100_000, "shipments of NE orders"),
    Workload("other-10k", "other", 10_000, "non-NE shipments (linked)"),
    Workload("receipts-10k", "receipts", 10_000, "receipts (linked)"),
    Workload("import-10k", "import", 10_000, "order import"),
    Workload("import-100k", "import", 100_000, "order import"),
)
#: NE calls per event of each strategy, where they grow with the events (used for bounding).
CALLS_PER_EVENT = {
    ("ship", "nebridge"): 1.0,
    ("ship", "naive"): 3.0,
    ("other", "naive"): 1.0,
    ("receipts", "naive"): 1.0,
}


@dataclass
class Options:
    """What to run (parsed from the command line)."""

    latencies: list[int]
    workloads: list[Workload]
    strategies: list[str]
    naive_max: int
    max_calls: int
    arrivals: Arrivals
    naive_interval_s: float
    one_worker: bool
    latency_run: bool
    que_delay_s: float = QUE_DELAY_S
    database_url: str | None = None  # PostgreSQL instead of SQLite (emptied per world)
    fleet_run: bool = False  # the fleet section (benchmarks/fleet.py; PostgreSQL only)


def _prepare(world: World, kind: str, size: int) -> None:
    if kind == "ship":
        world.drop("shipments-bench.csv", SHIP_HEADER, shipment_rows(world.create_orders(size)))
    elif kind == "other":
        world.drop("shipments-bench.csv", SHIP_HEADER, other_shipment_rows(size))
    elif kind == "receipts":
        world.drop("receipts-bench.csv", RECEIPT_HEADER, receipt_rows(size))
    else:
        world.create_orders(size)


def _expected_stock(kind: str, size: int) -> int:
    if kind == "other":
        return -sum(other_quantity(i) for i in range(size))
    if kind == "receipts":
        return sum(receipt_quantity(i) for i in range(size))
    return 0


def _wait_for_queue(world: World, timeout: float = 60.0) -> None:
    """Let NE finish every queued upload (the naive strategy does not wait for them)."""
    ledger, deadline = world.sandbox.ledger, time.monotonic() + timeout
    while time.monotonic() < deadline:
        world.sandbox.state.process_ques()
        if ledger.count("que.create") == ledger.count("que.done") + ledger.count("que.failed"):
            return
        time.sleep(0.02)


def _check(run: Run, world: World) -> str:
    """Did the pass do exactly what the WMS said? (``ok`` or what differs)."""
    job = run.job
    if job.problems:
        return f"problems: {job.problems[0]}"
    ledger = world.sandbox.ledger
    if run.kind == "ship":
        ids = ledger.shipped_order_ids()
        if len(ids) != run.size or len(set(ids)) != run.size:
            return f"shipped {len(set(ids))} of {run.size} ({len(ids)} ship calls applied)"
    elif run.kind == "import":
        if job.imported != run.size:
            return f"imported {job.imported} of {run.size}"
    else:
        _wait_for_queue(world)
        moved = sum(e.delta or 0 for e in ledger.entries(kind="stock.upload"))
        if moved != _expected_stock(run.kind, run.size):
            return f"stock moved {moved}, expected {_expected_stock(run.kind, run.size)}"
    return "ok"


def _run_workers(jobs: Sequence[dict[str, Any]]) -> list[JobResult]:
    """Run jobs in one worker process; return their results in order."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump(list(jobs), spec)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", spec.name],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        Path(spec.name).unlink()
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed:\n{done.stderr[-4000:]}")
    return [JobResult(**json.loads(line)) for line in done.stdout.splitlines() if line.strip()]


class Runner:
    """Prepares worlds, runs passes (cached per distinct run) and collects table rows."""

    def __init__(self, options: Options, scratch: Path, say: Callable[[str], None]) -> None:
        self.options = options
        self.scratch = scratch
        self.say = say
        self.runs: dict[tuple[int, str, str, int], Run] = {}
        self.latencies: dict[tuple[int, str], LatencyResult] = {}
        self._count = 0

    def _root(self, label: str) -> Path:
        self._count += 1
        return self.scratch / f"{self._count:03d}-{label}"

    def run_size(self, latency: int, workload: Workload, strategy: str) -> int:
        """How many events to run for real (the rest is extrapolated)."""
        per_event = CALLS_PER_EVENT.get((workload.kind, strategy), 0.0)
        size = workload.size
        if strategy == "naive" and per_event:
            size = min(size, self.options.naive_max)
        if latency and per_event:
            size = min(size, max(1, int(self.options.max_calls / per_event)))
        return size

    def planned(self) -> list[tuple[int, str, str, int]]:
        """Every distinct run the options ask for."""
        keys: list[tuple[int, str, str, int]] = []
        for latency in self.options.latencies:
            for workload in self.options.workloads:
                for strategy in self.options.strategies:
                    if strategy == "naive" and workload.kind == "import":
                        continue
                    key = (
                        latency,
                        workload.kind,
                        strategy,
                        self.run_size(latency, workload, strategy),
                    )
                    if key not in keys:
                        keys.append(key)
        return keys

    def execute(self) -> None:
        """Run every planned pass (one worker each, or all in one with ``one_worker``)."""
        keys = self.planned()
        groups = [keys] if self.options.one_worker else [[k] for k in keys]
        for group in groups:
            worlds: list[World] = []
            try:
                jobs = []
                for latency, kind, strategy, size in group:
                    label = f"{kind}-{size}-{strategy}-{latency}ms"
                    self.say(f"preparing {label}")
                    world = start_world(
                        self._root(label),
                        latency,
                        import_orders=kind == "import",
                        que_delay_s=self.options.que_delay_s,
                        database_url=self.options.database_url,
                    )
                    worlds.append(world)
                    _prepare(world, kind, size)
                    jobs.append({"label": label, "config": str(world.config), "strategy": strategy})
                before = [
                    Counter(w.sandbox.state.traffic.snapshot()["calls_by_path"]) for w in worlds
                ]
                self.say(f"running {', '.join(j['label'] for j in jobs)}")
                results = _run_workers(jobs)
                for key, world, counts, job in zip(group, worlds, before, results, strict=True):
                    after = Counter(world.sandbox.state.traffic.snapshot()["calls_by_path"])
                    run = Run(
                        *key,
                        job=job,
                        calls=dict(after - counts),
                        shipped=len(world.sandbox.ledger.shipped_order_ids()),
                    )
                    run.check = _check(run, world)
                    self.runs[key] = run
            finally:
                for world in worlds:
                    world.close()
                    shutil.rmtree(world.root, ignore_errors=True)
                worlds.clear()
                gc.collect()
        if self.options.latency_run:
            self._latency_runs()

    def _latency_runs(self) -> None:
        schedule = {**LATENCY_SCHEDULE, "interval_seconds": self.options.naive_interval_s}
        for latency in self.options.latencies:
            for strategy in self.options.strategies:
                label = f"latency-{strategy}-{latency}ms"
                self.say(f"running {label} (daemon process, files arriving)")
                world = start_world(
                    self._root(label),
                    latency,
                    import_orders=False,
                    schedule=schedule,
                    stable_seconds=0.5,
                    que_delay_s=self.options.que_delay_s,
                    database_url=self.options.database_url,
                )
                try:
                    self.latencies[(latency, strategy)] = measure_latency(
                        world, strategy, self.options.arrivals
                    )
                finally:
                    world.close()
                    shutil.rmtree(world.root, ignore_errors=True)

    def rows(self) -> list[Row]:
        """Table rows: per latency, each workload, then the daemon latency row."""
        rows: list[Row] = []
        for latency in self.options.latencies:
            for workload in self.options.workloads:
                runs = {
                    s: self.runs.get(
                        (latency, workload.kind, s, self.run_size(latency, workload, s))
                    )
                    for s in self.options.strategies
                }
                rows.append(
                    Row.from_runs(latency, workload.name, workload.title, workload.size, runs)
                )
            if self.options.latency_run:
                rows.append(
                    Row.from_latency(
                        latency,
                        self.options.arrivals,
                        {s: self.latencies.get((latency, s)) for s in self.options.strategies},
                    )
                )
        return rows


LATENCY = "latency"
#: The fleet section's name in ``--workloads`` (run by default with ``--database-url``).
FLEET = "fleet"


def _select(names: str) -> tuple[list[Workload], bool]:
    """The workloads named (names, kinds or name prefixes) and whether ``latency`` was."""
    chosen: list[Workload] = []
    latency = False
    for wanted in (n.strip() for n in names.split(",") if n.strip()):
        if wanted == LATENCY:
            latency = True
            continue
        matches = [
            w
            for w in WORKLOADS
            if w.name == wanted or w.name.startswith(wanted + "-") or w.kind == wanted
        ]
        if not matches:
            raise SystemExit(
                f"unknown workload {wanted!r}; known: "
                f"{', '.join(w.name for w in WORKLOADS)}, {LATENCY}"
            )
        chosen.extend(m for m in matches if m not in chosen)
    return chosen, latency


def parse_options(argv: Sequence[str] | None = None) -> tuple[Options, argparse.Namespace]:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workloads",
        default=",".join([*(w.name for w in WORKLOADS), LATENCY]),
        help="comma-separated workload names or kinds (ship, other, "
        "receipts, import), 'latency' (the daemon-process run) and "
        "'fleet' (fleet mode, PostgreSQL only); default: all (fleet "
        "with --database-url)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every workload size (e.g. 0.1 for a short run)",
    )
    parser.add_argument(
        "--latencies", default="0,150", help="sandbox latency per NE call in ms, comma-separated"
    )
    parser.add_argument("--strategies", default="nebridge,naive")
    parser.add_argument(
        "--naive-max",
        type=int,
        default=10_000,
        help="largest naive run at 0 ms; bigger ones are extrapolated",
    )
    parser.add_argument(
        "--max-calls",
        type=int,
        default=200,
        help="with latency > 0: runs whose NE calls grow with the events "
        "are cut to about this many calls and extrapolated",
    )
    parser.add_argument(
        "--files", type=int, default=20, help="latency runs: shipment files arriving"
    )
    parser.add_argument("--orders-per-file", type=int, default=5)
    parser.add_argument(
        "--period", type=float, default=1.0, help="latency runs: seconds between files"
    )
    parser.add_argument(
        "--naive-interval",
        type=float,
        default=LATENCY_SCHEDULE["interval_seconds"],
        help="latency runs: schedule interval (the naive daemon polls at it)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, 0 ms only, one worker process: a few seconds",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="run on this PostgreSQL database instead of SQLite (everything "
        "in it is dropped: give one of its own), e.g. "
        "postgresql+psycopg://postgres@127.0.0.1/bench",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",")]
    fleet_run = FLEET in names or (
        args.workloads == parser.get_default("workloads")
        and args.database_url is not None
        and not args.smoke
    )
    if FLEET in names and args.database_url is None:
        raise SystemExit("the fleet section runs on PostgreSQL only: add --database-url URL")
    workloads, latency_run = _select(",".join(n for n in names if n != FLEET))
    if args.smoke:
        workloads = [replace(w, size=20) for w in workloads]
        options = Options(
            latencies=[0],
            workloads=workloads,
            strategies=args.strategies.split(","),
            naive_max=20,
            max_calls=20,
            arrivals=Arrivals(files=3, orders=2, period_s=0.1, settle_s=0.2, timeout_s=30),
            naive_interval_s=1.0,
            one_worker=True,
            latency_run=latency_run,
            que_delay_s=0.05,
        )
        return options, args
    workloads = [replace(w, size=max(1, round(w.size * args.scale))) for w in workloads]
    options = Options(
        latencies=[int(x) for x in args.latencies.split(",") if x.strip()],
        workloads=workloads,
        strategies=[s for s in args.strategies.split(",") if s],
        naive_max=args.naive_max,
        max_calls=args.max_calls,
        arrivals=Arrivals(files=args.files, orders=args.orders_per_file, period_s=args.period),
        naive_interval_s=args.naive_interval,
        one_worker=False,
        latency_run=latency_run,
        database_url=args.database_url,
        fleet_run=fleet_run,
    )
    return options, args


def main(argv: Sequence[str] | None = None) -> None:
    """Run, then print the table (and write ``--json``)."""
    options, args = parse_options(argv)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="nebridge-bench-") as scratch:
        runner = Runner(options, Path(scratch), say)
        runner.execute()
    rows = runner.rows()
    print(render(rows, markdown=args.markdown))
    fleet_figures: dict[str, Any] | None = None
    if options.fleet_run:
        from benchmarks import fleet

        assert options.database_url is not None
        figures = fleet.measure(options.database_url, say=say)
        fleet_figures = asdict(figures)
        print("\n" + fleet.render(figures))
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {time.monotonic() - started:.0f} s"
        f"{' (smoke: sizes 20, one worker process for every pass)' if args.smoke else ''}"
    )
    if args.json is not None:
        data = {
            "runs": [asdict(r) for r in runner.runs.values()],
            "latency": [asdict(r) for r in runner.latencies.values()],
            "rows": [asdict(r) for r in rows],
            "fleet": fleet_figures,
        }
        args.json.write_text(json.dumps(data, indent=1), encoding="utf-8")
