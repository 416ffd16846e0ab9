"""Fleet workers on the CI PostgreSQL: one service per held company, moved with the leases,
and companies added, changed and removed while running (in process, and on SIGHUP)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from daemon.config import load_config
from daemon.fleet.companies import Companies, Company
from daemon.fleet.leases import Lease, fleet_engine
from daemon.fleet.worker import FleetWorker
from tests.conftest import ConfigFactory, dump_yaml

ROOT = Path(__file__).resolve().parents[2]


def company_file(folder: Path, code: str, page_size: int = 100) -> None:
    (folder / f"{code}.yaml").write_text(
        dump_yaml(
            {
                "wms": {
                    "connector": "csv",
                    "csv": {"inbox": f"{code}/in", "outbox": f"{code}/out"},
                },
                "warehouses": [{"code": "MAIN", "ne_linked": True}],
                "nextengine": {"page_size": page_size},
            }
        ),
        encoding="utf-8",
    )


@dataclass
class Recorder:
    """Services that only record their start (with the configuration seen) and stop."""

    events: list[tuple[str, str, int]] = field(default_factory=list)

    def start(self, company: Company, lease: Lease) -> Recorder.Service:
        self.events.append(("start", company.code, company.config.nextengine.page_size))
        return Recorder.Service(self, company.code)

    @dataclass
    class Service:
        recorder: Recorder
        code: str

        def stop(self) -> None:
            self.recorder.events.append(("stop", self.code, 0))


def step(worker: FleetWorker, timeout: float = 30.0) -> None:
    """One round, then wait for the services it started (they start on their own threads)."""
    worker.step()
    deadline = time.monotonic() + timeout
    while worker.starting() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.starting(), f"services still starting: {worker.starting()}"


def test_services_follow_the_leases_and_the_company_files(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "companies"
    folder.mkdir()
    for code in "abcd":
        company_file(folder, code)
    config = make_config(database_url=fleet_url, companies_dir="companies")
    engine = fleet_engine(fleet_url, lease_seconds=10.0)
    one, two = Recorder(), Recorder()
    first = FleetWorker(
        Companies(load_config(config)), engine, one.start, lease_seconds=10.0, worker_id="first"
    )
    step(first)
    assert first.serving() == ["a", "b", "c", "d"]
    second = FleetWorker(
        Companies(load_config(config)), engine, two.start, lease_seconds=10.0, worker_id="second"
    )
    step(second)
    assert second.serving() == []  # all held: nothing taken from a live worker
    step(first)  # two live workers: its share is 2, the surplus is stopped, then released
    assert first.serving() == ["a", "b"] and ("stop", "d", 0) in one.events
    step(second)
    assert second.serving() == ["c", "d"]

    company_file(folder, "a", page_size=7)  # changed
    os.remove(folder / "b.yaml")  # removed
    company_file(folder, "e")  # added
    (folder / "f.yaml").write_text("warehouses: 3\n")  # refused alone
    for worker in (first, second):
        changes = worker.reload()
        assert (changes.added, changes.changed, changes.removed) == (("e",), ("a",), ("b",))
    for _ in range(2):
        step(first)
        step(second)
    serving = first.serving() + second.serving()
    assert sorted(serving) == ["a", "c", "d", "e"] and len(set(serving)) == 4
    assert max(len(first.serving()), len(second.serving())) <= 2
    assert ("start", "a", 7) in one.events + two.events  # restarted with its new file
    assert one.events.index(("stop", "b", 0)) > one.events.index(("start", "b", 100))
    with engine.connect() as conn:
        holder = conn.execute(text("SELECT holder FROM fleet_lease WHERE company = 'b'")).scalar()
    assert holder is None  # the removed company's lease was given up

    stop = threading.Event()
    stop.set()
    second.serve(stop)  # one round, then every service stopped and every lease released
    assert second.serving() == []
    step(first)
    assert first.serving() == ["a", "c", "d", "e"]
    engine.dispose()


def test_a_company_whose_service_fails_to_start_holds_up_no_other(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "companies"
    folder.mkdir()
    for code in "abc":
        company_file(folder, code)
    broken = {"b"}
    recorder = Recorder()

    def start(company: Company, lease: Lease) -> Recorder.Service:
        if company.code in broken:
            raise RuntimeError(f"plugin of {company.code} failed")
        return recorder.start(company, lease)

    config = make_config(database_url=fleet_url, companies_dir="companies")
    engine = fleet_engine(fleet_url, lease_seconds=10.0)
    worker = FleetWorker(Companies(load_config(config)), engine, start, lease_seconds=10.0)
    step(worker)
    assert worker.serving() == ["a", "c"]
    broken.clear()
    step(worker)  # tried again each round
    assert worker.serving() == ["a", "b", "c"]
    engine.dispose()


SIGHUP_WORKER = """
import json, sys, threading
from pathlib import Path
from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.leases import fleet_engine
from daemon.fleet.worker import FleetWorker

class Service:
    def __init__(self, code):
        print(json.dumps(["start", code]), flush=True)
        self.code = code
    def stop(self):
        print(json.dumps(["stop", self.code]), flush=True)

loaded = load_config(Path(sys.argv[1]))
engine = fleet_engine(loaded.config.resolved_database_url, lease_seconds=1.5)
worker = FleetWorker(Companies(loaded), engine, lambda company, lease: Service(company.code),
                     lease_seconds=1.5)
worker.serve(threading.Event())
"""


def test_a_running_worker_takes_added_and_drops_removed_companies_on_sighup(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "companies"
    folder.mkdir()
    company_file(folder, "acme")
    config = make_config(
        database_url=fleet_url, companies_dir="companies", companies_watch_seconds=0
    )
    process = subprocess.Popen(
        [sys.executable, "-c", SIGHUP_WORKER, str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True
    ).start()
    try:
        assert json.loads(lines.get(timeout=30)) == ["start", "acme"]
        company_file(folder, "beta")
        os.remove(folder / "acme.yaml")
        time.sleep(0.2)
        os.kill(process.pid, signal.SIGHUP)
        seen = {tuple(json.loads(lines.get(timeout=30))) for _ in range(2)}
        assert seen == {("stop", "acme"), ("start", "beta")}
    finally:
        process.kill()
        process.wait(10)


def test_a_company_whose_service_hangs_at_start_holds_up_no_lease(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    """A plugin hanging at import: the round returns, the other companies are served, the
    hung company is given up as failed after the start deadline and its lease kept (no other
    worker takes it and hangs too), and the leases go on being renewed."""
    folder = tmp_path / "companies"
    folder.mkdir()
    for code in "abc":
        company_file(folder, code)
    hang = threading.Event()
    recorder = Recorder()

    def start(company: Company, lease: Lease) -> Recorder.Service:
        if company.code == "b":
            hang.wait()  # never returns until the test ends
        return recorder.start(company, lease)

    config = make_config(database_url=fleet_url, companies_dir="companies")
    engine = fleet_engine(fleet_url, lease_seconds=3.0)
    told: list[tuple[str, str]] = []
    worker = FleetWorker(
        Companies(load_config(config)),
        engine,
        start,
        lease_seconds=3.0,
        start_seconds=1.0,
        worker_id="hung",
        on_failed=lambda company, reason: told.append((company.code, reason)),
    )
    other = FleetWorker(
        Companies(load_config(config)),
        engine,
        Recorder().start,
        lease_seconds=3.0,
        worker_id="other",
    )
    try:
        began = time.monotonic()
        worker.step()
        assert time.monotonic() - began < 2.0  # the round did not wait for the hung start
        deadline = time.monotonic() + 10
        while worker.serving() != ["a", "c"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.serving() == ["a", "c"] and worker.starting() == ["b"]
        for _ in range(4):  # 4 s: past the start deadline and past one lease time
            time.sleep(1.0)
            worker.step()
        assert worker.starting() == [] and list(worker.failures()) == ["b"]
        assert "did not start within 1 s" in worker.failures()["b"].reason
        deadline = time.monotonic() + 10
        while not told and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [code for code, _ in told] == ["b"]  # told once (shown as an attention item)
        with engine.connect() as conn:
            holders = dict(
                conn.execute(
                    text(
                        "SELECT company, holder FROM fleet_lease WHERE company IN ('a', 'b', 'c') "
                        "AND expires_at > clock_timestamp()"
                    )
                )
                .tuples()
                .all()
            )
        assert holders == {"a": "hung", "b": "hung", "c": "hung"}  # renewed, b kept
        step(other)
        assert other.serving() == []  # nobody else takes the hung company
    finally:
        hang.set()
        other.keeper.stop()
        stop = threading.Event()
        stop.set()
        worker.serve(stop)
        engine.dispose()


HUNG_WORKER = """
import signal, sys, threading
from pathlib import Path
from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.leases import fleet_engine
from daemon.fleet.worker import FleetWorker

def start(company, lease):
    print("starting", company.code, flush=True)
    threading.Event().wait()  # a plugin that hangs at import

loaded = load_config(Path(sys.argv[1]))
engine = fleet_engine(loaded.config.resolved_database_url, lease_seconds=3.0)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
FleetWorker(Companies(loaded), engine, start, lease_seconds=3.0).serve(stop)
print("exited", flush=True)
"""


def test_sigterm_ends_a_worker_whose_company_hangs_at_start(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "companies"
    folder.mkdir()
    company_file(folder, "stuck")
    config = make_config(database_url=fleet_url, companies_dir="companies")
    process = subprocess.Popen(
        [sys.executable, "-c", HUNG_WORKER, str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().split() == ["starting", "stuck"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        assert process.stdout.read().split() == ["exited"]
    finally:
        process.kill()
        process.wait(10)


def test_a_slow_stop_of_one_company_lets_no_other_lease_run_out(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    """The round thread waits for a company's work to stop (a job finishing); meanwhile the
    other companies' leases and the worker's heartbeat are renewed (#19)."""
    folder = tmp_path / "companies"
    folder.mkdir()
    for code in "ab":
        company_file(folder, code)
    stopping = threading.Event()

    @dataclass
    class SlowStop:
        code: str

        def stop(self) -> None:
            if self.code == "a":
                stopping.set()
                time.sleep(5.0)  # longer than the 3 s lease

    config = make_config(database_url=fleet_url, companies_dir="companies")
    engine = fleet_engine(fleet_url, lease_seconds=3.0)
    worker = FleetWorker(
        Companies(load_config(config)),
        engine,
        lambda company, lease: SlowStop(company.code),
        lease_seconds=3.0,
    )
    stop = threading.Event()
    serving = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
    serving.start()
    try:
        deadline = time.monotonic() + 10
        while worker.serving() != ["a", "b"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.serving() == ["a", "b"]
        os.remove(folder / "a.yaml")
        worker.request_reload()
        assert stopping.wait(10)
        time.sleep(4.0)  # the round thread is still in a's stop, past b's lease time
        with engine.connect() as conn:
            live = conn.execute(
                text(
                    "SELECT holder FROM fleet_lease WHERE company = 'b' "
                    "AND expires_at > clock_timestamp()"
                )
            ).scalar()
        assert live == worker.keeper.worker_id
        with engine.connect() as conn:  # and the worker is not shown as dead meanwhile
            beating = conn.execute(
                text(
                    "SELECT expires_at > clock_timestamp() FROM fleet_worker "
                    "WHERE worker_id = :worker"
                ),
                {"worker": worker.keeper.worker_id},
            ).scalar()
        assert beating is True
    finally:
        stop.set()
        serving.join(30)
        engine.dispose()


def test_a_worker_starts_the_companies_it_takes_back_to_back_not_four_a_round(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    """A start that ends launches the next waiting company at once: a worker taking many
    companies (after a takeover) does not wait a round (a third of the lease) per four."""
    folder = tmp_path / "companies"
    folder.mkdir()
    codes = [f"c{number:02d}" for number in range(12)]
    for code in codes:
        company_file(folder, code)
    recorder = Recorder()

    def slow_start(company: Company, lease: Lease) -> Recorder.Service:
        time.sleep(0.05)  # a company's runtime being built
        return recorder.start(company, lease)

    config = make_config(database_url=fleet_url, companies_dir="companies")
    engine = fleet_engine(fleet_url, lease_seconds=60.0)
    worker = FleetWorker(Companies(load_config(config)), engine, slow_start, lease_seconds=60.0)
    try:
        step(worker)  # one round only: the next would come 20 s later
        assert worker.serving() == codes
    finally:
        worker.keeper.stop()
        engine.dispose()
