"""Bringing a world to rest like an admin would: stop the daemon, run ``run --once`` until it
is content, and settle every in-doubt action by looking at Next Engine (the sandbox), never
by guessing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlmodel import col, select

from daemon.store.engine import read_session
from daemon.store.models import OutboxItem, OutboxState, StockUpload
from tests.reliability.world import World


@dataclass
class Settlement:
    """In-doubt actions found and how each was settled; ``runs`` of ``run --once``."""

    in_doubt: int = 0
    applied: list[int] = field(default_factory=list)
    not_applied: list[int] = field(default_factory=list)
    runs: int = 0
    last_output: str = ""
    ok: bool = False


def settle(world: World, result: Settlement, attempts: int = 12) -> Settlement:
    """``run --once`` until it exits 0; in-doubt actions are resolved in between."""
    for _ in range(attempts):
        done = world.cli("run", "--once")
        result.runs += 1
        result.last_output = done.stdout
        if done.returncode == 0:
            result.ok = True
            return result
        resolve_in_doubt(world, result)
        time.sleep(0.5)  # let retry delays pass
    return result


def resolve_in_doubt(world: World, result: Settlement) -> None:
    """Look each in-doubt action up in Next Engine and ``nebridge outbox resolve`` it."""
    engine = world.engine()
    try:
        with read_session(engine) as session:
            doubtful = list(
                session.scalars(
                    select(OutboxItem).where(col(OutboxItem.state) == OutboxState.IN_DOUBT.value)
                )
            )
            uploads = {u.ref: u for u in session.scalars(select(StockUpload))}
    finally:
        engine.dispose()
    claimed = {u.que_id for u in uploads.values() if u.que_id}
    verdicts: dict[str, bool] = {}
    for item in doubtful:
        result.in_doubt += 1
        if item.kind == "ship_order":
            snapshot = world.sandbox.state.order_snapshot(int(item.subject))
            applied = snapshot["receive_order_order_status_id"] == "50"
        else:
            ref = item.dispatch_ref or ""
            if ref not in verdicts:
                verdicts[ref] = _upload_found(world, uploads[ref], claimed)
            applied = verdicts[ref]
        flag = "--applied" if applied else "--not-applied"
        done = world.cli("outbox", "resolve", str(item.id), flag)
        if done.returncode != 0:
            raise RuntimeError(f"outbox resolve {item.id} failed: {done.stdout}")
        (result.applied if applied else result.not_applied).append(item.id or 0)


def _upload_found(world: World, upload: StockUpload, claimed: set[str | None]) -> bool:
    """Whether Next Engine's queue holds an applied upload with exactly these deltas that no
    other upload of nebridge claims (the admin compares the upload history)."""
    wanted = {k.casefold(): v for k, v in json.loads(upload.deltas).items()}
    for que in world.sandbox.state.ques.values():
        if str(que.que_id) in claimed or que.status_id != 2:
            continue
        got = {
            row["syohin_code"].casefold(): int(row["zaiko_su"])
            for row in que.rows
            if row.get("zaiko_su")
        }
        if got == wanted:
            claimed.add(str(que.que_id))
            return True
    return False


def count_states(world: World, states: Iterable[str]) -> int:
    """Outbox items in any of ``states``."""
    engine = world.engine()
    try:
        with read_session(engine) as session:
            return len(
                list(
                    session.scalars(
                        select(OutboxItem.id).where(col(OutboxItem.state).in_(list(states)))
                    )
                )
            )
    finally:
        engine.dispose()
