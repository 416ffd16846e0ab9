"""Phase 2 — fault storm: the same workload while Next Engine misbehaves.

About 30 % of Next Engine calls fail: overload (``003001``), maintenance (``003004``,
``002007``), ``000001``, ``999999``, timeouts (a latency longer than the daemon's read
timeout: NE applies the call after the client gave up), connections dropped before and after
NE applied the change. People edit orders in Next Engine meanwhile (``last_modified`` moves:
before a write applies, and at random), and the access token expires every 50 calls, so the
pair rotates. The real long-running daemon runs throughout; when an answer carrying a rotated
pair is lost, the stored pair is dead (real NE behaviour): the daemon stops Next Engine work
and asks for ``nebridge connect``, which the campaign does through the sandbox's sign-in like
an admin. After the storm, Next Engine calms down and everything must settle exactly.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from tests.reliability.checks import check
from tests.reliability.probe import Probe
from tests.reliability.results import PhaseReport
from tests.reliability.security import issued_secrets
from tests.reliability.settle import Settlement, settle
from tests.reliability.workload import WmsPlayer, Workload, drop_products
from tests.reliability.world import World, make_world, wait_until

READ_TIMEOUT_S = 0.5
TIMEOUT_LATENCY_S = 0.8
FAULTS: dict[str, Any] = {
    "rates": {"003001": 0.07, "003004": 0.007, "002007": 0.004, "000001": 0.08, "999999": 0.06},
    "drop_before_rate": 0.05,
    "drop_after_rate": 0.05,
    "human_edit_rate": 0.05,
    "expire_access_token_every_n_calls": 50,
}
TIMEOUT_RATE = 0.015
UPLOAD_TIMEOUT_RATE = 0.15  # uploads are few; their lost answers need the queue search


def run_storm_phase(root: Path, seed: int, orders: int, others: int) -> PhaseReport:
    """Run the phase and check its end state."""
    report = PhaseReport("fault storm")
    started = time.monotonic()
    world = make_world(
        root,
        overrides={
            "nextengine": {"read_timeout_seconds": READ_TIMEOUT_S, "timeout_grace_seconds": 0.5}
        },
    )
    try:
        workload = Workload(seed, orders, others)
        workload.build(world.sandbox.state)
        drop_products(world, workload)
        probe = Probe(
            world.sandbox,
            seed=seed,
            timeout_rate=TIMEOUT_RATE,
            upload_timeout_rate=UPLOAD_TIMEOUT_RATE,
            timeout_latency_s=TIMEOUT_LATENCY_S,
        )
        with probe.installed():
            world.sandbox.faults.update(seed=seed, **FAULTS)
            player = WmsPlayer(world, workload, seed, duration_s=20.0).start()
            chaos = Chaos(world, player, seed).start()
            proc = world.start("run")
            try:
                storm_ok = wait_until(lambda: _all_sent(world, workload, player), 900.0, 0.5)
                report.notes["everything sent while the storm lasted"] = storm_ok
                chaos.stop_edits()
                world.sandbox.faults.reset()
                probe.timeout_rate = probe.upload_timeout_rate = 0.0
                if not wait_until(lambda: _all_sent(world, workload, player), 300.0, 0.5):
                    report.problems.append("not everything was sent 5 minutes after the storm")
                time.sleep(3.0)
                code = proc.terminate()
                if code != 0:
                    report.problems.append(f"SIGTERM: the daemon exited with {code}")
            finally:
                chaos.stop()
                player.stop()
                if proc.alive():
                    proc.kill()
            if player.error is not None:
                report.problems.append(f"the WMS player failed: {player.error!r}")
            if chaos.error is not None:
                report.problems.append(f"the admin/editor thread failed: {chaos.error!r}")
            report.settlement = settle(world, Settlement())
            if not report.settlement.ok:
                report.problems.append(
                    "`run --once` never came back clean: " + report.settlement.last_output[-2000:]
                )
            report.calls = len(probe.calls)
            report.faults.update(probe.fault_counts())
            report.faults["order edited by a person at random"] = chaos.edits
            report.failing_share = probe.failing_share()
            _token_rules(world, probe, chaos, report)
        report.outcome = check(world, workload, player)
        report.runs = world.runs
        report.workload = {
            "Next Engine orders (shipment confirmations with tracking)": len(workload.orders),
            "shipments not from Next Engine and receipts": len(workload.events),
            "WMS files delivered (some twice)": player.files_dropped,
        }
        report.formula_cells = len(player.formula_cells)
    finally:
        report.secrets |= issued_secrets(world)
        world.sandbox.stop()
        report.seconds = time.monotonic() - started
    return report


def _all_sent(world: World, workload: Workload, player: WmsPlayer) -> bool:
    """Every order shipped and every stock change uploaded, as far as Next Engine shows."""
    if not player.finished:
        return False
    ledger = world.sandbox.ledger
    if len(set(ledger.shipped_order_ids())) < len(workload.orders):
        return False
    world.sandbox.state.process_ques()
    uploaded: dict[str, int] = {}
    for entry in ledger.entries(kind="stock.upload"):
        code = (entry.goods_code or "").casefold()
        uploaded[code] = uploaded.get(code, 0) + (entry.delta or 0)
    return all(uploaded.get(code, 0) == want for code, want in workload.expected_upload.items())


class Chaos:
    """People editing orders in Next Engine, and the admin who re-connects when asked."""

    def __init__(self, world: World, player: WmsPlayer, seed: int) -> None:
        self.world, self.player = world, player
        self.rng = random.Random(seed + 1)
        self.edits = 0
        self.reconnects = 0
        self.connect_attempts = 0
        self.error: BaseException | None = None
        self._editing = threading.Event()
        self._editing.set()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._edit, daemon=True),
            threading.Thread(target=self._admin, daemon=True),
        ]

    def start(self) -> Chaos:
        """Start editing and watching the link."""
        for thread in self._threads:
            thread.start()
        return self

    def stop_edits(self) -> None:
        """The storm is over: nobody edits any more."""
        self._editing.clear()

    def stop(self) -> None:
        """Stop both threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _edit(self) -> None:
        state = self.world.sandbox.state
        try:
            while not self._stop.wait(0.2):
                if not self._editing.is_set():
                    continue
                shipped = set(self.world.sandbox.ledger.shipped_order_ids())
                open_orders = [o for o in list(self.player.instructed) if o not in shipped]
                if open_orders:
                    state.human_edit(self.rng.choice(open_orders))
                    self.edits += 1
        except BaseException as exc:
            self.error = exc

    def _admin(self) -> None:
        try:
            while not self._stop.wait(0.3):
                if self.world.link_state() == "needs_reconnect":
                    self.connect_attempts += self.world.connect()
                    self.reconnects += 1
        except BaseException as exc:
            self.error = exc


def _token_rules(world: World, probe: Probe, chaos: Chaos, report: PhaseReport) -> None:
    """One request in flight per company; a dead pair sent only when nebridge could not know.

    The client cannot know that a pair is dead while it has seen no answer saying so: the
    answer carrying the rotated pair was lost, and every earlier send of the dead pair lost
    its answer (the refusal) too. Any other dead-pair request is a bug.
    """
    traffic = world.sandbox.state.traffic
    in_flight = traffic.max_in_flight(world.sandbox.state.company_id)
    uses = traffic.token_uses()
    lost = set(probe.lost_rotations())
    rotated_at = {u.pair_id: u.call_no for u in uses if u.verdict == "rotated"}
    dead = traffic.dead_pair_uses()
    unexplained, repeats = [], 0
    seen: dict[int | None, list[int]] = {}
    for use in dead:
        earlier = seen.setdefault(use.pair_id, [])
        rotation = rotated_at.get(use.pair_id)
        known = (
            rotation is None
            or rotation not in lost
            or rotation > use.call_no
            or any(probe.answer_reached(n) for n in earlier)
        )
        if known:
            history = [
                (u.call_no, u.path, u.verdict, probe.faults_of(u.call_no))
                for u in uses
                if u.pair_id == use.pair_id
            ]
            unexplained.append((use.call_no, use.path, history))
        repeats += bool(earlier)
        earlier.append(use.call_no)
    report.notes.update(
        {
            "token pairs rotated by Next Engine": len(rotated_at),
            "rotations whose answer was lost (dropped or timed out)": len(lost),
            "requests with a dead pair, each after a lost rotation": len(dead),
            "of which resent because the refusal was lost too": repeats,
            "re-connections by the admin (nebridge connect)": chaos.reconnects,
            "sign-in attempts for them (sign-in calls meet faults too)": chaos.connect_attempts,
            "most requests in flight for the company": in_flight,
        }
    )
    if in_flight > 1:
        report.problems.append(f"{in_flight} requests were in flight for one company")
    if unexplained:
        report.problems.append(
            f"{len(unexplained)} request(s) used a pair nebridge could have "
            f"known was dead: {unexplained[:3]}"
        )
