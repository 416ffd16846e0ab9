"""Fleet mode observed (issue #19): real ``nebridge run`` workers, measured, not derived.

1. **Observed schedule.** One ``nebridge run`` fleet worker (a subprocess) serves ``N`` idle
   companies (each linked: its token pair in the vault; order import on; the default 60 s
   interval, job slots and lease). Next Engine is one sandbox in a process of its own (so the
   worker's CPU is its own) answering every call ``--latency-ms`` late; each company's
   ``api_base`` is ``<sandbox>/c/<code>``, so the sandbox logs every call by company (start,
   end, path, the company's calls in flight). After every company's first round, the worker is
   watched for ``--observe`` seconds: rounds per company (its order-import searches) against
   the rounds due, lateness (the gap between two rounds of a company minus the interval), the
   worker's CPU %, RSS and threads (``/proc``), Next Engine calls per minute, and whether any
   company ever had two calls in flight.
2. **Memory per idle company.** A worker serving one company the same way: RSS and threads
   then, against the worker above with ``N``.
3. **Takeover.** ``--workers`` real workers (2, then 3) share the ``N`` companies (the
   default lease); once each holds its share and served it, one is SIGKILLed; the time until
   every company it held is held by a live worker (the database's clock) and has made a Next
   Engine call again (the sandbox's log).

Run from the repository root::

    .venv/bin/python -m benchmarks.fleet_observed --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import SplitResult

from sqlalchemy import Engine, create_engine, text

from benchmarks.fleet import CLIENT_ID, CLIENT_SECRET, bench_schema, write_fleet
from daemon.sandbox import SandboxConfig, SandboxServer
from hooks.sandbox.server import SandboxHandler

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "/c/"
#: The call that starts a company's order-import round (its first order search).
ROUND_PATH = "/api_v1_receiveorder_row/search"
Say = Callable[[str], None]


class FleetSandbox(SandboxServer):
    """One Next Engine sandbox for many companies: ``<base>/c/<code>/<api path>`` is the API
    of company ``code`` (one sandbox world, a token pair per company, so no pair revokes
    another); each call is logged as a JSON line: company, path, start, end (``time.time()``)
    and how many calls of that company were in flight with it."""

    def __init__(self, config: SandboxConfig, log: IO[str]) -> None:
        super().__init__(config)
        self._log = log
        self._calls_lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()

    def answer(self, request: SandboxHandler, method: str, split: SplitResult, body: bytes) -> None:
        """Strip the company prefix, count the call in flight, answer it, log it."""
        if not split.path.startswith(PREFIX):
            super().answer(request, method, split, body)
            return
        code, _, rest = split.path[len(PREFIX) :].partition("/")
        started = time.time()
        with self._calls_lock:
            self._in_flight[code] += 1
            in_flight = self._in_flight[code]
        try:
            super().answer(request, method, split._replace(path="/" + rest), body)
        finally:
            ended = time.time()
            line = json.dumps(
                {"c": code, "p": "/" + rest, "s": started, "e": ended, "f": in_flight}
            )
            with self._calls_lock:
                self._in_flight[code] -= 1
                self._log.write(line + "\n")
                self._log.flush()


def sandbox_child(latency_ms: int, log_path: Path, ready_path: Path) -> None:
    """The sandbox process: serve until SIGTERM; its address goes to ``ready_path``."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = SandboxConfig.from_mapping(
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "seed_size": 0,
            "neauth_revokes_previous_pair": False,  # one pair per company, all live
            "faults": {"latency_ms": latency_ms},
        }
    )
    with log_path.open("a", encoding="utf-8") as log:
        server = FleetSandbox(config, log).start()
        ready_path.write_text(server.base_url, encoding="utf-8")
        stop.wait()
        server.stop()


@dataclass
class Call:
    """One API call the sandbox answered."""

    code: str
    path: str
    start: float
    end: float
    in_flight: int


def read_calls(log: Path) -> list[Call]:
    """Every call logged so far (a half-written last line is skipped)."""
    calls = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        calls.append(Call(row["c"], row["p"], row["s"], row["e"], row["f"]))
    return calls


@dataclass
class Sample:
    """A worker process's CPU seconds, RSS and threads at one moment (``/proc``)."""

    at: float
    cpu_s: float
    rss_mb: float
    threads: int


def sample(pid: int) -> Sample:
    """Read ``/proc/<pid>`` now."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks  # utime, stime
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return Sample(time.time(), cpu, rss, threads)


def load() -> str:
    """The load averages (1, 5, 15 min) as ``uptime`` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Fleet:
    """A benchmark installation: daemon.yaml, the sandbox's log, the database's engine."""

    config: Path
    calls_log: Path
    engine: Engine
    scratch: Path
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """``nebridge run`` in fleet mode, its output in ``<scratch>/<name>.log``."""
        env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
        with (self.scratch / f"{name}.log").open("ab") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "daemon", "--config", str(self.config), "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
        self.workers[name] = worker
        return worker

    def stop_workers(self) -> None:
        """SIGTERM every live worker (leases released) and wait for it."""
        for worker in self.workers.values():
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            try:
                worker.wait(timeout=180)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self.workers.clear()

    def worker_log(self, name: str) -> str:
        """The last lines of a worker's log (for an error message)."""
        lines = (self.scratch / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-60:])


@contextmanager
def sandbox_process(latency_ms: int, scratch: Path) -> Iterator[tuple[str, Path]]:
    """The sandbox in a process of its own: its base URL and its call log."""
    log, ready = scratch / "calls.jsonl", scratch / "sandbox.ready"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.fleet_observed",
            "--sandbox-child",
            str(latency_ms),
            str(log),
            str(ready),
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() or not ready.read_text():
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the sandbox process did not start (its output is above)")
            time.sleep(0.1)
        yield ready.read_text(encoding="utf-8"), log
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def fleet(
    database_url: str,
    companies: int,
    latency_ms: int,
    scratch: Path,
    settings: dict[str, Any],
    say: Say,
) -> Iterator[Fleet]:
    """``companies`` linked idle companies on one sandbox process; workers stopped after."""
    from daemon.config import load_config
    from daemon.fleet.companies import Companies
    from daemon.fleet.runtime import FleetDatabase
    from daemon.nelink import connect

    codes = [f"o{n:04d}" for n in range(companies)]
    with (
        sandbox_process(latency_ms, scratch) as (base, calls_log),
        bench_schema(database_url) as url,
    ):
        started = time.perf_counter()
        config = write_fleet(
            scratch / "fleet",
            url,
            codes,
            {code: f"{base}{PREFIX}{code}" for code in codes},
            True,
            settings,
        )
        say(f"fleet-observed: {companies} company schemas in {time.perf_counter() - started:.0f} s")
        loaded = load_config(config)
        found = Companies(loaded).companies
        database = FleetDatabase(url, credentials_dir=loaded.config.credentials_dir)

        def link(code: str) -> None:
            request = urllib.request.Request(f"{base}/_sandbox/login", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=30) as answer:
                login = json.loads(answer.read())
            connect(
                found[code].config,
                database.company_engine(code),
                login["uid"],
                login["state"],
                store=database.vault.store(code),
            )

        started = time.perf_counter()
        with ThreadPoolExecutor(6) as pool:  # a link holds up to 2 of the vault's 14 connections
            list(pool.map(link, codes))
        say(
            f"fleet-observed: {companies} companies linked in {time.perf_counter() - started:.0f} s"
        )
        database.close()
        engine = create_engine(url)
        bench = Fleet(config, calls_log, engine, scratch)
        try:
            yield bench
        finally:
            bench.stop_workers()
            engine.dispose()


def check_alive(bench: Fleet, what: str) -> None:
    """End the run, with its log, if a watched worker exited."""
    for name, worker in bench.workers.items():
        if worker.poll() is not None:
            raise SystemExit(
                f"{name} exited ({worker.returncode}) waiting for {what}:\n"
                + bench.worker_log(name)
            )


def wait_for(what: str, condition: Callable[[], bool], timeout: float, bench: Fleet) -> None:
    """Poll ``condition`` every second; a worker that exits or a timeout ends the run."""
    deadline = time.monotonic() + timeout
    while not condition():
        check_alive(bench, what)
        if time.monotonic() > deadline:
            calls = Counter(call.path for call in read_calls(bench.calls_log))
            logs = "\n".join(f"--- {n} ---\n{bench.worker_log(n)}" for n in bench.workers)
            raise SystemExit(
                f"{what}: not reached in {timeout:.0f} s; the sandbox's calls so far: "
                f"{dict(calls)}\n{logs}"
            )
        time.sleep(1.0)


def round_starts(calls: list[Call], interval: float) -> dict[str, list[float]]:
    """Each company's order-import rounds: the start of an order search coming more than a
    third of an interval after the company's previous one (a round may make more than one)."""
    starts: dict[str, list[float]] = defaultdict(list)
    previous: dict[str, float] = {}
    for call in sorted(calls, key=lambda c: c.start):
        if call.path != ROUND_PATH:
            continue
        if call.code not in previous or call.start - previous[call.code] > interval / 3:
            starts[call.code].append(call.start)
        previous[call.code] = call.start
    return dict(starts)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) of ``values``, nearest rank; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Schedule:
    """The schedule settings the workers run with (daemon.yaml, defaults included)."""

    interval_s: float
    jitter_s: float
    lease_s: float
    job_slots: int


def schedule_of(config: Path) -> Schedule:
    """What the workers read from ``config``."""
    from daemon.config import load_config

    loaded = load_config(config).config
    return Schedule(
        loaded.schedule.interval_seconds,
        loaded.schedule.jitter_seconds,
        loaded.fleet_lease_seconds,
        loaded.fleet_job_slots,
    )


def first_calls(calls: list[Call], path: str | None, after: float = 0.0) -> dict[str, float]:
    """Each company's first call (of ``path``, if given) started after ``after``."""
    first: dict[str, float] = {}
    for call in calls:
        if call.start > after and (path is None or call.path == path):
            first[call.code] = min(first.get(call.code, call.start), call.start)
    return first


def start_all(bench: Fleet, name: str, companies: int, say: Say) -> tuple[int, float, float]:
    """Start one worker; wait until every company made its first order search: the worker's
    pid, the start (``time.time()``) and when the last company's first round began."""
    worker = bench.start_worker(name)
    started = time.time()

    def all_started() -> bool:
        return len(first_calls(read_calls(bench.calls_log), ROUND_PATH, started)) >= companies

    wait_for("every company's first round", all_started, 120 + companies * 1.5, bench)
    first = first_calls(read_calls(bench.calls_log), ROUND_PATH, started)
    say(f"fleet-observed: {companies} companies started in {max(first.values()) - started:.0f} s")
    return worker.pid, started, max(first.values())


def measure_schedule(bench: Fleet, companies: int, observe: float, say: Say) -> dict[str, Any]:
    """Measurement 1 (and the memory with ``companies``): one worker, watched for ``observe``
    seconds after every company's first round."""
    plan = schedule_of(bench.config)
    pid, started, all_started = start_all(bench, "worker-0", companies, say)
    at_start = sample(pid)
    load_before = load()
    say(f"fleet-observed: watching {companies} companies for {observe:.0f} s (load {load_before})")
    samples = [at_start]
    end = all_started + observe
    while time.time() < end:
        check_alive(bench, "the end of the watch")
        time.sleep(min(5.0, max(0.0, end - time.time())))
        samples.append(sample(pid))
    load_after = load()
    calls = read_calls(bench.calls_log)
    bench.stop_workers()
    rounds = round_starts(calls, plan.interval_s)
    window = samples[-1].at - all_started
    due = int(window // (plan.interval_s + plan.jitter_s))
    in_window = {
        code: sum(all_started <= t <= samples[-1].at for t in rounds.get(code, []))
        for code in {c.code for c in calls}
    }
    gaps = [
        (code, b - a)
        for code, starts in rounds.items()
        for a, b in itertools.pairwise(starts)
        if all_started <= b <= samples[-1].at
    ]
    late = [gap - plan.interval_s for _code, gap in gaps]
    grace = plan.jitter_s + 5.0
    behind = sorted(code for code, n in in_window.items() if n < due)
    late_codes = {code for code, gap in gaps if gap > plan.interval_s + grace}
    window_calls = [c for c in calls if all_started <= c.start <= samples[-1].at]
    return {
        "interval_s": plan.interval_s,
        "jitter_s": plan.jitter_s,
        "lease_s": plan.lease_s,
        "job_slots": plan.job_slots,
        "start_all_s": all_started - started,
        "window_s": window,
        "rounds_due": due,
        "rounds_min": min(in_window.values(), default=0),
        "rounds_max": max(in_window.values(), default=0),
        "companies_behind": len(behind),
        "companies_late": len(late_codes),
        "late_p50_s": percentile(late, 0.5),
        "late_p95_s": percentile(late, 0.95),
        "late_max_s": max(late, default=0.0),
        "grace_s": grace,
        "cpu_percent": 100 * (samples[-1].cpu_s - at_start.cpu_s) / max(window, 1e-6),
        "rss_mb": samples[-1].rss_mb,
        "threads": samples[-1].threads,
        "threads_max": max(s.threads for s in samples),
        "ne_calls_per_min": len(window_calls) * 60 / max(window, 1e-6),
        "max_in_flight": max((c.in_flight for c in calls), default=0),
        "load": f"{load_before} → {load_after}",
    }


def measure_one(bench: Fleet, settle: float, say: Say) -> dict[str, Any]:
    """Measurement 2's reference: a worker serving one company, ``settle`` seconds after its
    first round."""
    pid, _started, _first = start_all(bench, "worker-0", 1, say)
    time.sleep(settle)
    one = sample(pid)
    bench.stop_workers()
    return {"rss_one_mb": one.rss_mb, "threads_one": one.threads}


def leases(engine: Engine) -> dict[str, tuple[str | None, bool, float]]:
    """Each company's holder, whether its lease is live, when it was acquired (epoch s)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT company, holder, coalesce(expires_at > clock_timestamp(), false), "
                "coalesce(extract(epoch FROM acquired_at), 0) FROM fleet_lease"
            )
        ).all()
    return {str(r[0]): (r[1], bool(r[2]), float(r[3])) for r in rows}


def measure_takeover(bench: Fleet, companies: int, workers: int, say: Say) -> dict[str, Any]:
    """Measurement 3: ``workers`` real workers; once balanced and serving, one is SIGKILLed;
    until each company it held is held again (database clock) and served again (its first
    Next Engine call after the kill, sandbox log)."""
    plan = schedule_of(bench.config)
    for number in range(workers):
        bench.start_worker(f"worker-{number}")

    def balanced() -> bool:
        held = leases(bench.engine)
        holders = Counter(h for h, live, _ in held.values() if live and h is not None)
        share = -(-companies // workers)  # the fair share: none holds more once balanced
        if len(holders) != workers or max(holders.values()) > share:
            return False
        now = time.time()
        served = first_calls(read_calls(bench.calls_log), None)
        latest: dict[str, float] = defaultdict(float)
        for call in read_calls(bench.calls_log):
            latest[call.code] = max(latest[call.code], call.start)
        return all(
            now - acquired > 2 and latest.get(code, 0.0) > acquired and code in served
            for code, (_h, _live, acquired) in held.items()
        )

    wait_for(f"{workers} workers sharing the companies", balanced, 300 + companies, bench)
    victim = bench.workers.pop("worker-0")  # the others are watched, it is not
    with bench.engine.connect() as connection:
        victim_id = connection.execute(
            text(
                "SELECT worker_id FROM fleet_worker WHERE pid = :pid "
                "ORDER BY started_at DESC LIMIT 1"
            ),
            {"pid": victim.pid},
        ).scalar_one()
        killed_db = float(
            connection.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
        )
    killed = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    held = sorted(code for code, (h, _l, _a) in leases(bench.engine).items() if h == victim_id)
    say(
        f"fleet-observed: SIGKILLed a worker holding {len(held)} of {companies} companies "
        f"(lease {plan.lease_s:g} s, load {load()})"
    )

    def taken_over() -> bool:
        now = leases(bench.engine)
        again = first_calls(read_calls(bench.calls_log), None, killed)
        return all(now[c][0] not in (None, victim_id) and now[c][1] and c in again for c in held)

    wait_for("every company of the killed worker served again", taken_over, 600, bench)
    now = leases(bench.engine)
    again = first_calls(read_calls(bench.calls_log), None, killed)
    retaken = [now[c][2] - killed_db for c in held]
    served = [again[c] - killed for c in held]
    bench.stop_workers()
    return {
        "workers": workers,
        "victim_companies": len(held),
        "lease_s": plan.lease_s,
        "retaken_p50_s": percentile(retaken, 0.5),
        "retaken_max_s": max(retaken, default=0.0),
        "served_p50_s": percentile(served, 0.5),
        "served_max_s": max(served, default=0.0),
        "max_in_flight": max((c.in_flight for c in read_calls(bench.calls_log)), default=0),
        "load": load(),
    }


@dataclass
class ObservedFigures:
    """Every figure of the observed fleet section."""

    companies: int
    latency_ms: int
    cores: int
    schedule: dict[str, Any]
    one: dict[str, Any]
    #: One per ``--workers`` count, in order, on the same companies.
    takeovers: list[dict[str, Any]]

    def memory_per_company_mb(self) -> float:
        """RSS with every company minus RSS with one, per further company."""
        grown = float(self.schedule["rss_mb"]) - float(self.one["rss_one_mb"])
        return grown / max(self.companies - 1, 1)


def render(figures: ObservedFigures) -> str:
    """The section as a Markdown table."""
    f, s = figures, figures.schedule
    on_schedule = s["companies_behind"] == 0 and s["companies_late"] == 0
    rows = [
        (
            f"companies started by one worker ({f.companies:,}, each linked, order import on; "
            f"NE {f.latency_ms} ms per call)",
            f"{f.companies:,} in {s['start_all_s']:.0f} s (worker start → every company's "
            "first order search)",
        ),
        (
            f"on a {s['interval_s']:g} s schedule, watched {s['window_s']:.0f} s (jitter "
            f"{s['jitter_s']:g} s, {s['job_slots']} job slots)",
            f"**{'yes' if on_schedule else 'no'}**: rounds per company {s['rounds_min']}–"
            f"{s['rounds_max']} (due ≥ {s['rounds_due']}); {s['companies_behind']} companies "
            f"behind, {s['companies_late']} with a gap over interval + "
            f"{s['grace_s']:g} s",
        ),
        (
            "lateness (gap between a company's rounds − interval)",
            f"p50 {s['late_p50_s']:.1f} s, p95 {s['late_p95_s']:.1f} s, max "
            f"{s['late_max_s']:.1f} s",
        ),
        (
            f"worker with {f.companies:,} companies ({f.cores} cores; load {s['load']})",
            f"CPU {s['cpu_percent']:.0f} % of one core, RSS {s['rss_mb']:.0f} MB, threads "
            f"{s['threads']:,} (max {s['threads_max']:,}); NE calls "
            f"{s['ne_calls_per_min']:,.0f}/min",
        ),
        (
            "memory per idle company (worker with N vs with 1)",
            f"{f.memory_per_company_mb():.2f} MB (RSS {f.one['rss_one_mb']:.0f} MB with 1, "
            f"{s['rss_mb']:.0f} MB with {f.companies:,}); threads {f.one['threads_one']} "
            f"with 1, {s['threads']:,} with {f.companies:,}",
        ),
        (
            "a company with two NE calls in flight",
            "none" if s["max_in_flight"] <= 1 else f"yes (up to {s['max_in_flight']})",
        ),
    ]
    for t in f.takeovers:
        rows.append(
            (
                f"takeover after SIGKILL ({t['workers']} workers, {f.companies:,} companies, "
                f"lease {t['lease_s']:g} s; load {t['load']})",
                f"{t['victim_companies']:,} companies: held again p50 {t['retaken_p50_s']:.1f} s,"
                f" max {t['retaken_max_s']:.1f} s (database clock); served again (first NE "
                f"call) p50 {t['served_p50_s']:.1f} s, max {t['served_max_s']:.1f} s; two "
                f"calls in flight: {'none' if t['max_in_flight'] <= 1 else 'yes'}",
            )
        )
    lines = ["| fleet observed (PostgreSQL) | figure |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    return "\n".join(lines)


def measure(
    database_url: str,
    *,
    companies: int,
    latency_ms: int,
    observe: float,
    workers: list[int],
    settings: dict[str, Any],
    say: Say,
    keep: Path | None = None,
) -> ObservedFigures:
    """Every measurement, each on a fresh schema and sandbox; the workers' logs and the
    sandbox's call log stay in ``keep`` if given."""
    with tempfile.TemporaryDirectory(prefix="nebridge-fleet-observed-") as scratch:
        root = Path(scratch) if keep is None else keep
        (root / "one").mkdir(parents=True)
        say("fleet-observed: one worker, one company (the memory reference)")
        with fleet(database_url, 1, latency_ms, root / "one", settings, say) as bench:
            one = measure_one(bench, min(observe, 30.0), say)
        (root / "all").mkdir(parents=True)
        with fleet(database_url, companies, latency_ms, root / "all", settings, say) as bench:
            schedule = measure_schedule(bench, companies, observe, say)
            takeovers = []
            for count in workers:
                say(f"fleet-observed: takeover with {count} workers")
                takeovers.append(measure_takeover(bench, companies, count, say))
    return ObservedFigures(
        companies, latency_ms, len(os.sched_getaffinity(0)), schedule, one, takeovers
    )


def main() -> None:
    """Run the section and print it (``--json`` also writes the figures)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL database (schemas made and dropped)")
    parser.add_argument("--companies", type=int, default=1000)
    parser.add_argument("--latency-ms", type=int, default=150)
    parser.add_argument(
        "--observe", type=float, default=300.0, help="seconds watched after all started"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=[2, 3],
        help="a takeover with each number of workers (at least 2), one after the other",
    )
    parser.add_argument(
        "--interval", type=float, help="schedule.interval_seconds, jitter 0 (default: 60 s, 5 s)"
    )
    parser.add_argument("--job-slots", type=int, help="fleet_job_slots (default: the default)")
    parser.add_argument(
        "--dispatch-interval",
        type=float,
        help="schedule.dispatch_interval_seconds (default: 10 s); new work brings a company's "
        "dispatcher forward whatever it is",
    )
    parser.add_argument("--lease", type=float, help="fleet_lease_seconds (default: the default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the logs here (a new folder)"
    )
    parser.add_argument("--render", type=Path, metavar="JSON", help="the table of a --json file")
    parser.add_argument("--sandbox-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sandbox_child:
        latency, log, ready = args.sandbox_child
        sandbox_child(int(latency), Path(log), Path(ready))
        return
    if args.render:
        print(render(ObservedFigures(**json.loads(args.render.read_text(encoding="utf-8")))))
        return
    if not args.database_url:
        parser.error("--database-url is required (fleet mode runs on PostgreSQL only)")
    if any(count < 2 for count in args.workers):
        parser.error("--workers: a takeover needs at least 2 workers (one is killed)")
    settings: dict[str, Any] = {}
    if args.interval is not None:
        settings["schedule"] = {"interval_seconds": args.interval, "jitter_seconds": 0}
    if args.job_slots is not None:
        settings["fleet_job_slots"] = args.job_slots
    if args.dispatch_interval is not None:
        schedule = settings.setdefault("schedule", {})
        schedule["dispatch_interval_seconds"] = args.dispatch_interval
    if args.lease is not None:
        settings["fleet_lease_seconds"] = args.lease
    figures = measure(
        args.database_url,
        companies=args.companies,
        latency_ms=args.latency_ms,
        observe=args.observe,
        workers=args.workers,
        settings=settings,
        say=lambda m: print(m, file=sys.stderr, flush=True),
        keep=args.keep,
    )
    print(render(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(figures), indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
