"""Per-company leases on the CI PostgreSQL: real worker processes, real signals.

Three workers share thirty companies: each company is held by exactly one worker, no worker
holds more than ⌈C/W⌉ + 1; a SIGKILLed worker's companies are taken over within the lease
time (plus one renewal round); a worker SIGSTOPped past its lease and then SIGCONTed has its
next fenced transactions refused and commits nothing for the companies it lost.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import Engine, text

from daemon.fleet.leases import (
    FleetUnavailable,
    LeaseKeeper,
    LeaseLost,
    fair_share,
    fence,
    fleet_engine,
    overview,
)
from daemon.fleet.vault import TokenVault, VaultKey, VaultKeys
from daemon.store.engine import DatabaseUnavailable, make_engine, upgrade

ROOT = Path(__file__).resolve().parents[2]
LEASE = 4.0
COMPANIES = 30


@dataclass
class Worker:
    """One ``tests.fleet.lease_worker`` process and the JSON lines it printed."""

    process: subprocess.Popen[str]
    lines: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    worker_id: str = ""

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            record = json.loads(line)
            self.worker_id = record.get("worker", self.worker_id)
            self.lines.append((time.monotonic(), record))

    def refused_after(self, moment: float) -> list[dict[str, Any]]:
        return [rec for at, rec in list(self.lines) if at > moment and "refused" in rec]


def start_worker(url: str) -> Worker:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fleet.lease_worker",
            url,
            "--companies",
            str(COMPANIES),
            "--lease",
            str(LEASE),
            "--every",
            "0.2",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = Worker(process)
    assert process.stdout is not None
    threading.Thread(target=worker.read, args=(process.stdout,), daemon=True).start()
    return worker


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def holders(engine: Engine) -> dict[str, str | None]:
    """Each company's holder, None for a free or expired lease (the database's clock)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT company, CASE WHEN expires_at > clock_timestamp() THEN holder END "
                "FROM fleet_lease"
            )
        ).all()
    return {row[0]: row[1] for row in rows}


def by_holder(engine: Engine) -> dict[str | None, list[str]]:
    spread: dict[str | None, list[str]] = defaultdict(list)
    for company, holder in sorted(holders(engine).items()):
        spread[holder].append(company)
    return spread


def balanced(engine: Engine, workers: list[Worker]) -> dict[str | None, list[str]] | None:
    """The spread once every company is held by one of ``workers``, each within its share."""
    spread = by_holder(engine)
    ids = {w.worker_id for w in workers}
    share = fair_share(COMPANIES, len(workers))
    if set(spread) != ids or sum(len(v) for v in spread.values()) != COMPANIES:
        return None
    return spread if all(len(v) <= share for v in spread.values()) else None


@pytest.fixture
def workers(fleet_url: str) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            with_signal(worker, signal.SIGCONT)
            worker.process.kill()
        worker.process.wait(10)


def with_signal(worker: Worker, sig: signal.Signals) -> None:
    os.kill(worker.process.pid, sig)


def test_three_workers_share_thirty_companies_and_survive_kill_and_pause(
    fleet_url: str, workers: list[Worker]
) -> None:
    engine = make_engine(fleet_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE fleet_effect (id bigserial PRIMARY KEY, company text, "
                "epoch bigint, worker text, at timestamptz DEFAULT clock_timestamp())"
            )
        )
    workers.extend(start_worker(fleet_url) for _ in range(3))
    wait_until(lambda: all(w.worker_id for w in workers), 90, "workers started")
    spread = wait_until(lambda: balanced(engine, workers), 60, "30 companies over 3 workers")
    assert max(len(v) for v in spread.values()) <= math.ceil(COMPANIES / 3) + 1
    time.sleep(LEASE)  # steady: nobody steals, nothing moves
    assert balanced(engine, workers) == spread

    # SIGKILL: the dead worker's companies are taken over within the lease time (+ a round)
    killed, alive = workers[0], workers[1:]
    orphans = spread[killed.worker_id]
    with_signal(killed, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(
        lambda: all(holders(engine)[c] in {w.worker_id for w in alive} for c in orphans),
        LEASE * 3,
        "the killed worker's companies taken over",
    )
    takeover = time.monotonic() - killed_at
    assert takeover <= LEASE + LEASE / 3 + 2.0, takeover
    spread = wait_until(lambda: balanced(engine, alive), 60, "30 companies over 2 workers")

    # SIGSTOP past the lease, then SIGCONT: the paused worker commits nothing it lost
    paused, other = alive
    lost = {c: epoch for c, epoch in epochs(engine).items() if c in spread[paused.worker_id]}
    with_signal(paused, signal.SIGSTOP)
    wait_until(
        lambda: all(holders(engine)[c] == other.worker_id for c in lost),
        LEASE * 4,
        "the paused worker's companies taken over",
    )
    taken = acquired_at(engine, lost)
    with_signal(paused, signal.SIGCONT)
    resumed_at = time.monotonic()
    refused = wait_until(
        lambda: paused.refused_after(resumed_at),
        30,
        "the resumed worker's fenced transactions refused",
    )
    assert {r["refused"] for r in refused} <= set(lost)
    assert all(r["epoch"] == lost[r["refused"]] for r in refused)
    wait_until(lambda: balanced(engine, alive), 60, "rebalanced after the pause")
    time.sleep(1.0)
    for worker in alive:
        worker.process.kill()
        worker.process.wait(10)

    with engine.connect() as conn:
        effects = conn.execute(
            text("SELECT company, epoch, worker, at FROM fleet_effect ORDER BY id")
        ).all()
    assert len(effects) > COMPANIES * 10
    tenure: dict[tuple[str, int], str] = {}
    last_epoch: dict[str, int] = {}
    for company, epoch, worker, at in effects:
        assert tenure.setdefault((company, epoch), worker) == worker, (company, epoch)
        assert epoch >= last_epoch.get(company, 0), f"{company}: epoch {epoch} after newer"
        last_epoch[company] = epoch
        if worker == paused.worker_id and company in lost and epoch == lost[company]:
            assert at < taken[company], f"{company}: committed after it was taken over"
    engine.dispose()
    print(f"takeover after SIGKILL: {takeover:.2f} s (lease {LEASE} s)")


def epochs(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            row[0]: int(row[1])
            for row in conn.execute(text("SELECT company, epoch FROM fleet_lease"))
        }


def acquired_at(engine: Engine, companies: dict[str, int]) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            row[0]: row[1]
            for row in conn.execute(
                text("SELECT company, acquired_at FROM fleet_lease WHERE company = ANY(:c)"),
                {"c": list(companies)},
            )
        }


# -- in one process: fencing, release, refusals --------------------------------------------------


def test_fence_refuses_after_takeover_and_release_hands_over_at_once(fleet_url: str) -> None:
    engine = fleet_engine(fleet_url, lease_seconds=1.0)
    first = LeaseKeeper(engine, ["acme"], lease_seconds=1.0, worker_id="first")
    assert first.tick().acquired[0].company == "acme"
    epoch = first.held()["acme"]
    with engine.begin() as conn:
        fence(conn, "acme", epoch)  # held: passes

    second = LeaseKeeper(engine, ["acme"], lease_seconds=1.0, worker_id="second")
    assert second.tick().acquired == ()  # held and unexpired by the first
    time.sleep(1.2)  # the first is "paused": no renewal
    with pytest.raises(LeaseLost, match="expired"), engine.begin() as conn:
        fence(conn, "acme", epoch)
    taken = second.tick()
    assert [lease.epoch for lease in taken.acquired] == [epoch + 1]
    with pytest.raises(LeaseLost, match="taken over"), engine.begin() as conn:
        first.fence(conn, "acme")
    assert first.lost_reason("acme") is not None
    assert second.lost_reason("acme") is None
    lost: list[str] = []
    first.on_lost = lambda company, reason: lost.append(company)
    assert first.tick().lost == ("acme",) and lost == ["acme"]
    assert first.held() == {}

    leases, workers = overview(engine)
    assert [(lease.company, lease.holder, lease.epoch) for lease in leases] == [
        ("acme", "second", epoch + 1)
    ]
    assert leases[0].expires_in_seconds is not None and 0 < leases[0].expires_in_seconds <= 1
    assert {(w.worker_id, w.holds) for w in workers} == {("first", 0), ("second", 1)}

    released: list[str] = []
    second.before_release = released.append
    second.stop()
    assert released == ["acme"]
    assert [lease.epoch for lease in first.tick().acquired] == [epoch + 2]  # at once
    first.stop()
    engine.dispose()


def test_a_fenced_transaction_commits_before_a_takeover_or_not_at_all(fleet_url: str) -> None:
    patient = fleet_engine(fleet_url, lease_seconds=10.0)  # the server waits 10 s on idle
    holder = LeaseKeeper(patient, ["acme"], lease_seconds=1.0, worker_id="holder")
    holder.tick()
    taker = LeaseKeeper(patient, ["acme"], lease_seconds=1.0, worker_id="taker")
    with patient.begin() as conn:
        holder.fence(conn, "acme")
        conn.execute(text("UPDATE fleet_worker SET host = 'committed' WHERE worker_id = 'holder'"))
        time.sleep(1.2)  # the lease runs out while the transaction is open
        assert taker.tick().acquired == ()  # the row is locked: skipped, not waited for
    assert [lease.company for lease in taker.tick().acquired] == ["acme"]  # after the commit

    strict = fleet_engine(fleet_url, lease_seconds=1.0)  # the server ends 1 s idle sessions
    with pytest.raises(DatabaseUnavailable, match="idle-in-transaction"), strict.begin() as conn:
        taker.fence(conn, "acme")
        conn.execute(text("UPDATE fleet_worker SET host = 'lost' WHERE worker_id = 'taker'"))
        time.sleep(1.5)  # paused inside the transaction: the server ends it, lock and all
    holder.tick()  # free again: the holder's share (1 company, 2 workers) lets it take it
    assert holder.lease("acme") is not None
    with patient.connect() as conn:
        hosts = dict(conn.execute(text("SELECT worker_id, host FROM fleet_worker")).all())
    assert hosts["holder"] == "committed" and hosts["taker"] != "lost"
    patient.dispose()
    strict.dispose()


def test_sqlite_and_an_unmigrated_database_are_refused_with_the_way_out(
    tmp_path: Path, fleet_url: str
) -> None:
    sqlite = make_engine(f"sqlite:///{tmp_path / 'one.db'}")
    upgrade(sqlite)
    with pytest.raises(FleetUnavailable, match=r"needs PostgreSQL.*remove `companies_dir`"):
        LeaseKeeper(sqlite, ["acme"])
    with pytest.raises(FleetUnavailable, match="needs PostgreSQL"):
        TokenVault(
            sqlite, VaultKeys(VaultKey.from_text(base64.b64encode(bytes(32)).decode(), "test"))
        )
    sqlite.dispose()

    engine = make_engine(fleet_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
    with pytest.raises(FleetUnavailable, match=r"0005.*nebridge db upgrade"):
        LeaseKeeper(engine, ["acme"])
    engine.dispose()


def test_leases_kept_stay_renewed_while_released_ones_stop_slowly(fleet_url: str) -> None:
    engine = fleet_engine(fleet_url, lease_seconds=1.0)
    keeper = LeaseKeeper(engine, ["a", "b", "c", "d"], lease_seconds=1.0, worker_id="slow")
    keeper.tick()
    keeper.before_release = lambda company: time.sleep(0.8)  # a company's work ends slowly
    keeper.set_companies(["a", "b"])
    assert keeper.tick().released == ("c", "d")  # 1.6 s of stopping: longer than the lease
    for company in ("a", "b"):
        assert keeper.lost_reason(company) is None
    engine.dispose()
