"""The admin side of the outbox (``nebridge outbox list|retry|resolve``).

Listing what waits and settling what the engine cannot settle alone: failed or skipped items
queued again, in-doubt items resolved with what the admin found in Next Engine. The engine side
(storing and dispatching) is :mod:`daemon.outbox`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlmodel import Session, col, select

from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import OutboxItem, OutboxState, utcnow


class OutboxError(Exception):
    """An admin request on the outbox that cannot be done; the message says why."""


def list_items(engine: Bind, states: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """Outbox items, newest first, optionally only in ``states``."""
    stmt = select(OutboxItem).order_by(col(OutboxItem.id).desc()).limit(limit)
    if states:
        stmt = stmt.where(col(OutboxItem.state).in_(list(states)))
    with read_session(engine) as session:
        items = list(session.scalars(stmt))
    return [
        {
            "id": i.id,
            "kind": i.kind,
            "subject": i.subject,
            "warehouse": i.warehouse,
            "plugin": i.plugin,
            "state": i.state,
            "attempts": i.attempts,
            "payload": json.loads(i.payload),
            "last_error": i.last_error,
            "result": i.result,
            "dispatch_ref": i.dispatch_ref,
            "created_at": i.created_at.isoformat(),
            "updated_at": i.updated_at.isoformat(),
        }
        for i in items
    ]


def shown_outcome(row: Mapping[str, Any]) -> str:
    """The one text a listing shows for an item of :func:`list_items`: a done item's result
    (an error it met on the way — an outcome unknown, settled by reading Next Engine back —
    is history, kept in ``last_error`` for ``--json``), else its last error, else its result."""
    if row["state"] == OutboxState.DONE.value and row["result"]:
        return str(row["result"])
    return str(row["last_error"] or row["result"] or "")


def _get(session: Session, item_id: int) -> OutboxItem:
    item = session.get(OutboxItem, item_id)
    if item is None:
        raise OutboxError(f"no outbox item {item_id}; `nebridge outbox list` shows them")
    return item


def retry_item(engine: Bind, item_id: int) -> str:
    """Put a failed or skipped item back in the queue."""
    with write_session(engine) as session:
        item = _get(session, item_id)
        if item.state == OutboxState.IN_DOUBT.value:
            raise OutboxError(
                f"item {item_id} is in doubt: it may already be applied in Next Engine. Check "
                f"there, then `nebridge outbox resolve {item_id} --applied` or `--not-applied`"
            )
        if item.state not in (OutboxState.FAILED.value, OutboxState.SKIPPED.value):
            raise OutboxError(
                f"item {item_id} is {item.state}; only failed or skipped items can be retried"
            )
        item.state, item.next_attempt_at, item.updated_at = (
            OutboxState.PENDING.value,
            utcnow(),
            utcnow(),
        )
        item.dispatch_ref = None
        session.add(item)
    return f"item {item_id} queued again; the dispatcher sends it on its next run"


def resolve_item(engine: Bind, item_id: int, applied: bool) -> str:
    """Settle an in-doubt item with what the admin found in Next Engine."""
    with write_session(engine) as session:
        item = _get(session, item_id)
        if item.state != OutboxState.IN_DOUBT.value:
            raise OutboxError(f"item {item_id} is {item.state}, not in doubt; nothing to resolve")
        now = utcnow()
        if applied:
            item.state, item.result = OutboxState.DONE.value, "resolved by admin: applied"
        else:
            item.state, item.next_attempt_at = OutboxState.PENDING.value, now
            item.dispatch_ref = None
            item.last_error = "resolved by admin: not applied; will be sent again"
        item.updated_at = now
        session.add(item)
    return (
        f"item {item_id} marked done"
        if applied
        else f"item {item_id} will be sent again on the dispatcher's next run"
    )
