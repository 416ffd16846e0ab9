"""Fleet mode (issue #19) on PostgreSQL: what one worker costs per company, and takeover.

Four measurements, each on a fresh schema of the database given (``--database-url``; the
schema and the companies' schemas are dropped at the end, nothing else is touched):

1. **Idle round per company, Next Engine answering in 150 ms.** ``--round-companies``
   companies, each linked (tokens in the vault) to a Next Engine sandbox of its own with a
   latency fault of ``--latency-ms`` per call, order import on, nothing new to do. Each
   company runs what its scheduler runs every interval — :func:`daemon.admin.run_once`
   (intake, the warehouse pipelines and their order import, the dispatcher) — on its fleet
   runtime (:func:`~daemon.fleet.runtime.company_runtime`, fenced by its lease): wall time,
   CPU time and Next Engine calls per round, after warm-up rounds. Derived: the companies one
   worker keeps on a 60 s schedule. Calls for different companies run in parallel (each
   company has its own scheduler), never two for one company, up to ``fleet_job_slots``
   jobs at once (``--job-slots``, default 4). One worker keeps ``min(60 s × slots / wall per
   round, 60 s × cores / CPU per round)`` companies on schedule; the table shows both bounds
   and the slots 1,000 companies need. The CPU time is the whole process's, the in-process
   sandboxes' serving included (an overestimate of the worker's own).
2. **Memory per idle company.** One process serves ``--memory-companies`` companies as
   ``nebridge run`` does (:class:`~daemon.fleet.daemon.CompanyRun`: the company runtime and
   its scheduler started); RSS with all of them minus RSS with one, per company.
3. **Lease round.** One :meth:`~daemon.fleet.leases.LeaseKeeper.tick` with
   ``--lease-companies`` companies held by one worker, and by each of 3 workers.
4. **Takeover after SIGKILL.** 2, then 3 worker processes (their :class:`LeaseKeeper`, the
   default lease, 30 s unless ``--lease``) share ``--lease-companies`` companies; one is
   killed with SIGKILL; the time until every company is held again by a live worker (by the
   database's clock). A real worker then starts each company taken over (the start time per
   company is printed by measurement 2).

Measurements 1, 2 and 4 are derived from a few companies; :mod:`benchmarks.fleet_observed`
observes them instead, with real ``nebridge run`` workers serving 1,000 companies.

Run from the repository root::

    .venv/bin/python -m benchmarks.fleet --database-url postgresql+psycopg://postgres@127.0.0.1/test

``python -m benchmarks --workloads fleet --database-url URL`` prints the same section.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

INTERVAL_S = 60.0
CLIENT_ID, CLIENT_SECRET = "nebridge-bench-fleet", "nebridge-bench-fleet-secret"
WARMUP_ROUNDS = 2


@dataclass
class FleetFigures:
    """Every figure of the fleet section."""

    latency_ms: int
    round_companies: int
    rounds: int
    wall_per_round_s: float
    cpu_per_round_s: float
    calls_per_round: float
    cores: int
    companies_per_worker: int
    memory_companies: int
    rss_one_mb: float
    rss_all_mb: float
    memory_per_company_mb: float
    start_per_company_s: float
    threads_one: int
    threads_all: int
    lease_companies: int
    lease_round_one_worker_s: float
    lease_round_three_workers_s: float
    lease_seconds: float
    takeover_two_workers_s: float
    takeover_three_workers_s: float
    #: ``fleet_job_slots``: the jobs of its companies a worker runs at once (default 4).
    job_slots: int = 4

    def slot_bound(self) -> int:
        """Companies the job slots keep on schedule: ``60 s × slots / wall per round``."""
        return int(INTERVAL_S * self.job_slots / max(self.wall_per_round_s, 1e-6))

    def slots_for(self, companies: int) -> int:
        """The job slots ``companies`` idle companies need on one worker."""
        return math.ceil(companies * self.wall_per_round_s / INTERVAL_S)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def bench_schema(database_url: str) -> Iterator[str]:
    """A fresh schema at the latest migration; dropped with its companies' schemas after."""
    from daemon.store.engine import make_engine, upgrade

    if not database_url.startswith("postgresql"):
        raise SystemExit(
            "fleet mode runs on PostgreSQL only: give --database-url "
            "postgresql+psycopg://user@host/db"
        )
    schema = f"nbfleetbench_{uuid.uuid4().hex[:10]}"
    print(
        f"fleet: schema {schema} (dropped at the end with its companies')",
        file=sys.stderr,
        flush=True,
    )
    admin = create_engine(database_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _schema_url(database_url, schema)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            names = (
                connection.execute(
                    text("SELECT nspname FROM pg_namespace WHERE nspname = :s OR nspname LIKE :p"),
                    {"s": schema, "p": f"{schema}\\_%"},
                )
                .scalars()
                .all()
            )
        for name in names:  # one transaction each: a hundred at once exhaust the lock table
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def write_fleet(
    root: Path,
    url: str,
    codes: list[str],
    api_base: dict[str, str],
    import_orders: bool,
    settings: dict[str, Any] | None = None,
) -> Path:
    """daemon.yaml in fleet mode (plus ``settings``, e.g. a shorter schedule), one company
    file per code (its own WMS folders and, if given, its own Next Engine address), the vault
    key; every company's schema migrated."""
    from daemon.fleet.runtime import upgrade_company
    from daemon.testing.installation import dump_yaml

    companies = root / "companies"
    companies.mkdir(parents=True)
    credentials = root / "credentials"
    credentials.mkdir(mode=0o700)
    key = credentials / "nebridge-vault-key"
    key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n", encoding="ascii")
    key.chmod(0o600)
    for code in codes:
        company: dict[str, Any] = {
            "wms": {
                "connector": "csv",
                "csv": {
                    "inbox": str(root / code / "in"),
                    "outbox": str(root / code / "out"),
                    "stable_seconds": 0.0,
                },
            },
            "warehouses": [
                {"code": "MAIN", "name": "倉庫", "ne_linked": True, "import_orders": import_orders}
            ],
        }
        if code in api_base:
            company["nextengine"] = {"api_base": api_base[code]}
        (root / code / "in").mkdir(parents=True)
        (companies / f"{code}.yaml").write_text(dump_yaml(company), encoding="utf-8")
        upgrade_company(url, code)
    config = root / "daemon.yaml"
    config.write_text(
        dump_yaml(
            {
                "state_dir": str(root / "state"),
                "log_level": "WARNING",
                "database_url": url,
                "companies_dir": "companies",
                "credentials_dir": str(credentials),
                "nextengine": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
                "wms": {
                    "connector": "csv",
                    "csv": {"inbox": str(root / "in"), "outbox": str(root / "out")},
                },
                "plugins": {
                    name: {"enabled": True}
                    for name in ("status_update", "tracking_update", "stock_minus", "stock_plus")
                },
                **(settings or {}),
            }
        ),
        encoding="utf-8",
    )
    return config


def measure_round(
    database_url: str, companies: int, rounds: int, latency_ms: int, scratch: Path
) -> dict[str, float]:
    """Measurement 1: an idle company's round on its fleet runtime, NE slowed down."""
    from daemon.admin import run_once
    from daemon.config import load_config
    from daemon.fleet.companies import Companies
    from daemon.fleet.leases import LeaseKeeper
    from daemon.fleet.runtime import FleetDatabase, company_runtime
    from daemon.nelink import connect
    from daemon.sandbox import SandboxConfig, SandboxServer

    codes = [f"r{n:03d}" for n in range(companies)]
    sandboxes = {
        code: SandboxServer(
            SandboxConfig.from_mapping(
                {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "seed_size": 0,
                    "faults": {"latency_ms": latency_ms},
                }
            )
        ).start()
        for code in codes
    }
    runtimes = []
    try:
        with bench_schema(database_url) as url:
            config = write_fleet(
                scratch / "round", url, codes, {c: s.base_url for c, s in sandboxes.items()}, True
            )
            loaded = load_config(config)
            fleet = FleetDatabase(url, credentials_dir=loaded.config.credentials_dir)
            keeper = LeaseKeeper(fleet.engine, codes, worker_id="bench-round")
            keeper.start()  # renewed on its thread, as in a worker
            for code, company in Companies(loaded).companies.items():
                runtime = company_runtime(loaded, company, lease=keeper.lease(code), fleet=fleet)
                runtimes.append(runtime)
                store = fleet.vault.store(code)
                connect(
                    runtime.config,
                    runtime.engine,
                    *sandboxes[code].state.issue_login(),
                    store=store,
                )
            for _ in range(WARMUP_ROUNDS):
                for runtime in runtimes:
                    run_once(runtime)
            calls_before = sum(s.state.traffic.snapshot()["calls"] for s in sandboxes.values())
            wall = cpu = 0.0
            for _ in range(rounds):
                for runtime in runtimes:
                    started, started_cpu = time.perf_counter(), time.process_time()
                    report = run_once(runtime)
                    wall += time.perf_counter() - started
                    cpu += time.process_time() - started_cpu
                    failures = [f for stage in report.stages for f in stage.failures]
                    if failures:
                        raise SystemExit(f"an idle round failed: {failures[0]}")
            calls = (
                sum(s.state.traffic.snapshot()["calls"] for s in sandboxes.values()) - calls_before
            )
            for runtime in runtimes:
                runtime.close()
            runtimes.clear()
            keeper.stop()
            fleet.close()
    finally:
        for runtime in runtimes:
            runtime.close()
        for sandbox in sandboxes.values():
            sandbox.stop()
    total = rounds * companies
    return {"wall": wall / total, "cpu": cpu / total, "calls": calls / total}


def memory_child(config: Path, count: int) -> None:
    """Measurement 2, in its own process: RSS serving one company, then ``count``."""
    import gc

    from daemon.config import load_config
    from daemon.fleet.companies import Companies
    from daemon.fleet.daemon import CompanyRun, company_share
    from daemon.fleet.leases import LeaseKeeper
    from daemon.fleet.runtime import FleetDatabase, company_runtime
    from daemon.scheduler import JobHost

    loaded = load_config(config)
    companies = list(Companies(loaded).companies.values())[:count]
    fleet = FleetDatabase(
        loaded.config.resolved_database_url, credentials_dir=loaded.config.credentials_dir
    )
    keeper = LeaseKeeper(fleet.engine, [c.code for c in companies], worker_id="bench-memory")
    keeper.start()  # renewed on its thread, as in a worker
    wake = threading.Event()
    slots = loaded.config.fleet_job_slots
    jobs = JobHost.for_worker(slots)  # one for every company, as in the worker
    jobs.start()
    runs = []
    figures: dict[str, float] = {}
    started = time.perf_counter()
    for number, company in enumerate(companies, start=1):
        runtime = company_runtime(loaded, company, lease=keeper.lease(company.code), fleet=fleet)
        runs.append(
            CompanyRun(
                runtime,
                wake,
                on_stop=lambda: None,
                host=jobs,
                company=company.code,
                share=company_share(slots),
            )
        )
        if number == 1:
            time.sleep(2.0)
            gc.collect()
            figures["rss_one"] = _rss_mb()
            figures["threads_one"] = threading.active_count()
            started = time.perf_counter()
    figures["start_per_company"] = (time.perf_counter() - started) / max(count - 1, 1)
    time.sleep(5.0)  # every scheduler's first jobs have run
    gc.collect()
    figures["rss_all"] = _rss_mb()
    figures["threads_all"] = threading.active_count()
    for run in runs:
        run.stop()
    jobs.shutdown(wait=True)
    keeper.stop()
    fleet.close()
    print(json.dumps(figures))


def measure_memory(database_url: str, companies: int, scratch: Path) -> dict[str, float]:
    """Measurement 2: run :func:`memory_child` in a fresh process."""
    from daemon.sandbox import SandboxConfig, SandboxServer

    codes = [f"m{n:04d}" for n in range(companies)]
    sandbox = SandboxServer(
        SandboxConfig.from_mapping(
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "seed_size": 0}
        )
    ).start()
    try:
        with bench_schema(database_url) as url:
            config = write_fleet(
                scratch / "memory", url, codes, dict.fromkeys(codes, sandbox.base_url), False
            )
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.fleet",
                    "--memory-child",
                    str(config),
                    str(companies),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=3600,
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
            return figures
    finally:
        sandbox.stop()


def lease_worker(url: str, companies: int, lease: float) -> None:
    """A worker process for measurement 4: the leases of a worker (a :class:`LeaseKeeper`
    renewing on its thread, as in ``nebridge run``), serving nothing."""
    from daemon.fleet.leases import LeaseKeeper, fleet_engine

    logging.basicConfig(level=logging.ERROR)  # takeovers are the measurement, not news
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    engine = fleet_engine(url, lease_seconds=lease)
    keeper = LeaseKeeper(engine, [f"l{n:05d}" for n in range(companies)], lease_seconds=lease)
    keeper.start()
    print(json.dumps({"worker": keeper.worker_id}), flush=True)
    signal.sigwait({signal.SIGTERM})
    keeper.stop()


def _all_held(url: str, companies: int, workers: int) -> bool:
    from daemon.fleet.leases import overview
    from daemon.store.engine import make_engine

    engine = make_engine(url, create=False)
    try:
        leases, live = overview(engine)
    finally:
        engine.dispose()
    held = [lease for lease in leases if lease.holder is not None]
    holders = {w.worker_id for w in live if w.live}
    return (
        len(held) == companies
        and len(holders) == workers
        and all(lease.holder in holders for lease in held)
    )


def measure_takeover(database_url: str, companies: int, workers: int, lease: float) -> float:
    """Measurement 4: seconds from SIGKILL of one of ``workers`` until every company is held
    by a live worker again."""
    with bench_schema(database_url) as url:
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.fleet",
                    "--lease-worker",
                    url,
                    str(companies),
                    str(lease),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(workers)
        ]
        try:
            for process in processes:
                assert process.stdout is not None
                process.stdout.readline()
            deadline = time.monotonic() + 4 * lease + 60
            while not _all_held(url, companies, workers):
                if time.monotonic() > deadline:
                    raise SystemExit("the workers did not share the companies")
                time.sleep(0.2)
            victim = processes[0]
            victim.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            victim.wait()
            while not _all_held(url, companies, workers - 1):
                if time.monotonic() > killed + 4 * lease + 60:
                    raise SystemExit("the companies of the killed worker were not taken over")
                time.sleep(0.1)
            return time.monotonic() - killed
        finally:
            for process in processes[1:]:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=lease + 60)


def measure_lease_round(database_url: str, companies: int) -> tuple[float, float]:
    """Measurement 3: one tick (heartbeat, renew, balance) for ``companies`` held by one
    worker, and by each of three (3 × ``companies`` in all), best of five."""
    from daemon.fleet.leases import LeaseKeeper, fleet_engine

    results = []
    for workers in (1, 3):
        with bench_schema(database_url) as url:
            engine = fleet_engine(url)
            codes = [f"t{n:05d}" for n in range(companies * workers)]
            keepers = [LeaseKeeper(engine, codes, worker_id=f"bench-{n}") for n in range(workers)]
            for _ in range(3):  # join, then balance to the fair share
                for keeper in keepers:
                    keeper.tick()
            best = float("inf")
            for _ in range(5):
                for keeper in keepers:
                    started = time.perf_counter()
                    keeper.tick()
                    best = min(best, time.perf_counter() - started)
            for keeper in keepers:
                keeper.stop()
            engine.dispose()
        results.append(best)
    return results[0], results[1]


def measure(
    database_url: str,
    *,
    latency_ms: int = 150,
    round_companies: int = 10,
    rounds: int = 5,
    memory_companies: int = 100,
    lease_companies: int = 1000,
    lease: float = 30.0,
    job_slots: int = 4,
    say: Any = print,
) -> FleetFigures:
    """Every measurement; the figures."""
    with tempfile.TemporaryDirectory(prefix="nebridge-fleet-bench-") as scratch:
        say(f"fleet: idle rounds of {round_companies} companies, NE at {latency_ms} ms")
        per_round = measure_round(database_url, round_companies, rounds, latency_ms, Path(scratch))
        say(f"fleet: memory of {memory_companies} idle companies in one worker")
        memory = measure_memory(database_url, memory_companies, Path(scratch))
    say(f"fleet: lease rounds with {lease_companies} companies per worker")
    one, three = measure_lease_round(database_url, lease_companies)
    say(f"fleet: takeover after SIGKILL, 2 workers, lease {lease:g} s")
    two_workers = measure_takeover(database_url, lease_companies, 2, lease)
    say(f"fleet: takeover after SIGKILL, 3 workers, lease {lease:g} s")
    three_workers = measure_takeover(database_url, lease_companies, 3, lease)
    cores = len(os.sched_getaffinity(0))
    return FleetFigures(
        latency_ms=latency_ms,
        round_companies=round_companies,
        rounds=rounds,
        wall_per_round_s=per_round["wall"],
        cpu_per_round_s=per_round["cpu"],
        calls_per_round=per_round["calls"],
        cores=cores,
        companies_per_worker=int(INTERVAL_S * cores / max(per_round["cpu"], 1e-6)),
        memory_companies=memory_companies,
        rss_one_mb=memory["rss_one"],
        rss_all_mb=memory["rss_all"],
        memory_per_company_mb=(memory["rss_all"] - memory["rss_one"])
        / max(memory_companies - 1, 1),
        start_per_company_s=memory["start_per_company"],
        threads_one=int(memory["threads_one"]),
        threads_all=int(memory["threads_all"]),
        lease_companies=lease_companies,
        lease_round_one_worker_s=one,
        lease_round_three_workers_s=three,
        lease_seconds=lease,
        takeover_two_workers_s=two_workers,
        takeover_three_workers_s=three_workers,
        job_slots=job_slots,
    )


def render(figures: FleetFigures) -> str:
    """The section as a Markdown table."""
    f = figures
    rows = [
        (
            f"idle round per company (NE {f.latency_ms} ms per call; {f.round_companies} "
            f"companies × {f.rounds} rounds)",
            f"{f.wall_per_round_s * 1000:.0f} ms wall, {f.cpu_per_round_s * 1000:.1f} ms CPU, "
            f"{f.calls_per_round:.1f} NE calls",
        ),
        (
            f"idle companies one worker keeps on a {INTERVAL_S:.0f} s schedule (target ≥ 1,000)",
            f"{min(f.slot_bound(), f.companies_per_worker):,} with {f.job_slots} job slots "
            f"(slots: {INTERVAL_S:.0f} s × {f.job_slots} / wall per round = "
            f"{f.slot_bound():,}; CPU: {INTERVAL_S:.0f} s × {f.cores} cores / CPU per round = "
            f"{f.companies_per_worker:,}); 1,000 need {f.slots_for(1000)} job slots; "
            f"3 workers: {3 * min(f.slot_bound(), f.companies_per_worker):,}",
        ),
        (
            f"memory per idle company ({f.memory_companies} served by one worker; target ≤ 1 MB)",
            f"{f.memory_per_company_mb:.2f} MB (RSS {f.rss_one_mb:.0f} MB with 1, "
            f"{f.rss_all_mb:.0f} MB with {f.memory_companies}); threads {f.threads_one} with 1, "
            f"{f.threads_all} with {f.memory_companies}",
        ),
        (
            "start of one company on a worker (runtime + scheduler)",
            f"{f.start_per_company_s * 1000:.0f} ms",
        ),
        (
            f"lease round, {f.lease_companies:,} companies per worker",
            f"1 worker {f.lease_round_one_worker_s * 1000:.0f} ms; 3 workers "
            f"{f.lease_round_three_workers_s * 1000:.0f} ms each",
        ),
        (
            f"takeover after SIGKILL ({f.lease_companies:,} companies, lease "
            f"{f.lease_seconds:g} s)",
            f"2 workers: {f.takeover_two_workers_s:.1f} s; 3 workers: "
            f"{f.takeover_three_workers_s:.1f} s",
        ),
    ]
    lines = ["| fleet (PostgreSQL) | figure |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    return "\n".join(lines)


def main() -> None:
    """Run the section and print it (``--json`` also writes the figures)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", help="a PostgreSQL database (a schema of its own is made and dropped)"
    )
    parser.add_argument("--latency-ms", type=int, default=150)
    parser.add_argument("--round-companies", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-companies", type=int, default=100)
    parser.add_argument("--lease-companies", type=int, default=1000)
    parser.add_argument("--lease", type=float, default=30.0, help="lease seconds")
    parser.add_argument(
        "--job-slots",
        type=int,
        default=4,
        help="fleet_job_slots the companies-per-worker figure assumes",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="print the table again from the --json file of a run",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--lease-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(Path(args.memory_child[0]), int(args.memory_child[1]))
        return
    if args.lease_worker:
        lease_worker(args.lease_worker[0], int(args.lease_worker[1]), float(args.lease_worker[2]))
        return
    if args.render:  # the table again from a --json file (e.g. for other --job-slots)
        saved = json.loads(args.render.read_text(encoding="utf-8"))
        print(render(FleetFigures(**{**saved, "job_slots": args.job_slots})))
        return
    if not args.database_url:
        parser.error("--database-url is required (fleet mode runs on PostgreSQL only)")
    figures = measure(
        args.database_url,
        latency_ms=args.latency_ms,
        round_companies=args.round_companies,
        rounds=args.rounds,
        memory_companies=args.memory_companies,
        lease_companies=args.lease_companies,
        lease=args.lease,
        job_slots=args.job_slots,
        say=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(render(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(figures), indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
