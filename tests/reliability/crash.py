"""Phase 1 — crash consistency: the daemon is SIGKILLed at seeded random points and restarted.

Kill points (each armed on one daemon process, which is killed the moment it is reached):

* ``after NE applied a write`` — a few milliseconds after the sandbox answered a ``shipped``,
  ``bulkupdate`` or stock upload: between Next Engine's response and nebridge's commit;
* ``during upload-queue polling`` — right after a ``system_que`` search was answered;
* ``while taking a WMS file`` — a file sits in ``.claimed/``: moved, not yet filed away;
* ``while importing orders`` — after the order search answered, while recording and writing
  the order file;
* ``at a random moment`` — 0.3–3 s after the start.

A point not reached within its time is counted as such and the process killed anyway (at a
random moment). The daemon is the real long-running one (``nebridge run``); one run in four
is ``run --once``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.reliability.checks import check
from tests.reliability.probe import QUE_SEARCH, ROW_SEARCH, WRITE_PATHS, CallRecord, Probe
from tests.reliability.results import PhaseReport
from tests.reliability.security import issued_secrets
from tests.reliability.settle import Settlement, settle
from tests.reliability.workload import WmsPlayer, Workload, drop_products
from tests.reliability.world import Proc, World, make_world, wait_until

KINDS = {
    "ne_applied": "after Next Engine applied a write, before nebridge recorded it",
    "que_poll": "during upload-queue polling",
    "file_move": "while taking a WMS file (claimed, not yet filed away)",
    "order_import": "while importing orders (read, not yet recorded and written out)",
    "random": "at a random moment",
}
TRIGGER_TIMEOUT_S = 8.0
MAX_DELAY_S = {
    "ne_applied": 0.004,
    "que_poll": 0.003,
    "file_move": 0.01,
    "order_import": 0.03,
    "random": 3.0,
}


@dataclass(frozen=True)
class KillPoint:
    """Where to kill the next daemon process, and whether it runs ``--once``."""

    kind: str
    delay_s: float
    once: bool


def kill_points(rng: random.Random) -> Iterator[KillPoint]:
    """An endless seeded sequence of kill points, every kind in each round of five."""
    while True:
        kinds = list(KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            low = 0.3 if kind == "random" else 0.0
            yield KillPoint(kind, rng.uniform(low, MAX_DELAY_S[kind]), rng.random() < 0.25)


class Trigger:
    """One armed kill point on one process."""

    def __init__(self, world: World, probe: Probe, point: KillPoint, proc: Proc) -> None:
        self.world, self.probe, self.point, self.proc = world, probe, point, proc
        self.fired = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def arm(self) -> Trigger:
        """Start watching for the point."""
        kind = self.point.kind
        if kind in ("ne_applied", "que_poll", "order_import"):
            self.probe.listen(self._on_call)
        elif kind == "file_move":
            self._watcher = threading.Thread(target=self._watch_claimed, daemon=True)
            self._watcher.start()
        else:
            self._fire()
        return self

    def disarm(self) -> None:
        """Stop watching."""
        self._stop.set()
        self.probe.unlisten(self._on_call)
        if self._watcher is not None:
            self._watcher.join()

    def _on_call(self, record: CallRecord) -> None:
        if not record.answered or self.fired.is_set():
            return
        kind = self.point.kind
        if (
            (kind == "ne_applied" and record.path in WRITE_PATHS)
            or (kind == "que_poll" and record.path == QUE_SEARCH)
            or (kind == "order_import" and record.path == ROW_SEARCH)
        ):
            self._fire()

    def _watch_claimed(self) -> None:
        claimed = self.world.inbox / ".claimed"
        while not self._stop.is_set() and self.proc.alive():
            if claimed.is_dir() and any(claimed.iterdir()):
                self._fire()
                return
            time.sleep(0.001)

    def _fire(self) -> None:
        if self.fired.is_set():
            return
        self.fired.set()
        threading.Timer(self.point.delay_s, self._kill).start()

    def _kill(self) -> None:
        if self.proc.alive() and not self._stop.is_set():
            os.kill(self.proc.pid, signal.SIGKILL)


def run_crash_phase(root: Path, seed: int, orders: int, others: int, kills: int) -> PhaseReport:
    """Run the phase and check its end state."""
    report = PhaseReport("crash consistency")
    started = time.monotonic()
    rng = random.Random(seed)
    world = make_world(root, sandbox_options={"faults": {"latency_ms": 1}})
    try:
        workload = Workload(seed, orders, others)
        workload.build(world.sandbox.state)
        drop_products(world, workload)
        probe = Probe(world.sandbox, seed=seed)
        with probe.installed():
            player = WmsPlayer(world, workload, seed, duration_s=max(10.0, kills * 3.0)).start()
            try:
                _kill_loop(world, probe, rng, kills, report)
                _drain(world, workload, player, report)
            finally:
                player.stop()
            if player.error is not None:
                report.problems.append(f"the WMS player failed: {player.error!r}")
            report.settlement = settle(world, Settlement())
            if not report.settlement.ok:
                report.problems.append(
                    "`run --once` never came back clean: " + report.settlement.last_output[-2000:]
                )
            report.calls = len(probe.calls)
            report.faults.update(probe.fault_counts())
        report.outcome = check(world, workload, player)
        _traffic_rules(world, report)
        report.runs = world.runs
        report.workload = {
            "Next Engine orders (shipment confirmations with tracking)": len(workload.orders),
            "shipments not from Next Engine and receipts": len(workload.events),
            "WMS files delivered (some twice)": player.files_dropped,
            "files delivered a second time": player.redelivered,
        }
        report.formula_cells = len(player.formula_cells)
    finally:
        report.secrets |= issued_secrets(world)
        world.sandbox.stop()
        report.seconds = time.monotonic() - started
    return report


def _kill_loop(
    world: World, probe: Probe, rng: random.Random, kills: int, report: PhaseReport
) -> None:
    points = kill_points(rng)
    attempts = 0
    while sum(report.kills.values()) < kills and attempts < kills * 3:
        attempts += 1
        point = next(points)
        proc = world.start("run", "--once") if point.once else world.start("run")
        trigger = Trigger(world, probe, point, proc).arm()
        wait_until(lambda proc=proc: not proc.alive(), TRIGGER_TIMEOUT_S)
        trigger.disarm()
        if proc.alive():  # the point was not reached in time: kill at this random moment
            proc.kill()
            report.kills[f"{KINDS[point.kind]} — not reached, killed at random"] += 1
            continue
        code = proc.wait(30)
        if code == -signal.SIGKILL:
            report.kills[KINDS[point.kind]] += 1
        elif not point.once:
            report.problems.append(f"the daemon exited by itself with {code} ({proc.log})")


def _drain(world: World, workload: Workload, player: WmsPlayer, report: PhaseReport) -> None:
    """Run the daemon without kills until the WMS has said everything and it is all sent."""
    proc = world.start("run")
    ledger = world.sandbox.ledger

    def done() -> bool:
        if not player.finished:
            return False
        return len(set(ledger.shipped_order_ids())) >= len(workload.orders)

    reached = wait_until(done, 600.0, interval=0.5)
    time.sleep(3.0)  # the last stock uploads and their queues
    code = proc.terminate()
    if not reached:
        report.problems.append("the daemon did not ship every order within 10 minutes")
    if code != 0:
        report.problems.append(f"SIGTERM: the daemon exited with {code}, not 0 ({proc.log})")


def _traffic_rules(world: World, report: PhaseReport) -> None:
    """NE's rules: one request in flight per company; no rotated pair sent."""
    traffic = world.sandbox.state.traffic
    in_flight = traffic.max_in_flight(world.sandbox.state.company_id)
    report.notes["most requests in flight for the company"] = in_flight
    dead = traffic.dead_pair_uses()
    report.notes["requests sent with a dead token pair"] = len(dead)
    if in_flight > 1:
        report.problems.append(f"{in_flight} requests were in flight for one company")
    if dead:
        report.problems.append(f"{len(dead)} request(s) used a dead token pair: {dead[:3]}")
