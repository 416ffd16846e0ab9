"""The audit trail of one order, shipment or receipt: from arrival to Next Engine's answer.

Built from the records nebridge keeps anyway — the inbox batch and event, the plugins' notes,
the outbox actions with their attempts, errors and results, the stock upload and its queue,
the imported-order map and its instruction batch — in time order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from daemon.orderwatch import order_changes
from daemon.store.engine import Bind, read_session
from daemon.store.models import (
    BatchState,
    ImportedOrder,
    InboxBatch,
    InboxEvent,
    InstructionBatchRecord,
    OutboxItem,
    StockUpload,
)
from hooks.actions import SHIP_ORDER, describe


@dataclass(frozen=True, slots=True)
class Step:
    """One thing that happened, when, and what came of it."""

    at: datetime | None
    what: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "at": self.at.isoformat() if self.at else None,
            "what": self.what,
            "detail": self.detail,
        }


def event_history(db: Bind, kind: str, external_id: str) -> list[Step]:
    """The trail of a shipment or receipt (``kind`` = shipment | receipt)."""
    with read_session(db) as session:
        event = session.scalars(
            select(InboxEvent)
            .where(col(InboxEvent.kind) == kind)
            .where(col(InboxEvent.external_id) == external_id)
        ).first()
        if event is None:
            return []
        batch = session.scalars(
            select(InboxBatch)
            .where(col(InboxBatch.source) == event.source)
            .where(col(InboxBatch.state) == BatchState.ACCEPTED)
            .order_by(col(InboxBatch.id))
        ).first()
        items = list(
            session.scalars(
                select(OutboxItem)
                .where(col(OutboxItem.event_id) == event.id)
                .order_by(col(OutboxItem.id))
            )
        )
        uploads = {
            u.ref: u
            for u in session.scalars(
                select(StockUpload).where(
                    col(StockUpload.ref).in_([i.dispatch_ref for i in items if i.dispatch_ref])
                )
            )
        }
    payload = json.loads(event.payload)
    steps = [
        Step(
            event.received_at,
            f"{kind} {external_id} accepted into the inbox",
            f"from {event.source}, warehouse {event.warehouse}, "
            f"{len(payload['lines'])} line(s)"
            + (f", file accepted with {batch.events} event(s)" if batch else ""),
        )
    ]
    if event.processed_at is not None or event.state != "pending":
        steps.append(
            Step(event.processed_at, f"plugins decided: {event.state}", event.last_error or "")
        )
    for item in items:
        steps.extend(_item_steps(item, uploads.get(item.dispatch_ref or "")))
    return sorted(steps, key=_order)


def order_history(db: Bind, order_id: str) -> list[Step]:
    """The trail of a Next Engine order: import, instruction, shipment, write-back."""
    steps: list[Step] = []
    with read_session(db) as session:
        imported = session.get(ImportedOrder, order_id)
        batch = (
            session.get(InstructionBatchRecord, imported.instruction_batch)
            if imported and imported.instruction_batch
            else None
        )
        shipments = list(
            session.scalars(
                select(InboxEvent)
                .where(col(InboxEvent.kind) == "shipment")
                .where(col(InboxEvent.payload).contains(f'"ne_order_id":"{order_id}"'))
            )
        )
        items = list(
            session.scalars(
                select(OutboxItem)
                .where(col(OutboxItem.kind) == SHIP_ORDER.name)
                .where(col(OutboxItem.subject) == order_id)
            )
        )
    if imported is not None:
        what = (
            "imported into warehouse " + imported.warehouse
            if imported.state == "instructed"
            else f"held at import ({imported.warehouse})"
        )
        steps.append(
            Step(
                imported.imported_at,
                f"order {order_id} {what}",
                imported.hold_reason or f"Next Engine last modified {imported.ne_last_modified}",
            )
        )
    if batch is not None:
        steps.append(Step(batch.created_at, f"instruction batch {batch.key} recorded"))
        if batch.pushed_at is not None:
            steps.append(Step(batch.pushed_at, "instructions delivered to the WMS"))
    steps.extend(_change_steps(db, order_id))
    for event in shipments:
        steps.extend(event_history(db, "shipment", event.external_id))
    known = {s.what for s in steps}
    for item in items:
        steps.extend(s for s in _item_steps(item, None) if s.what not in known)
    return sorted(steps, key=_order)


_TOLD = {
    "pending": "the WMS is not told yet (every run tries again)",
    "sent": "the WMS was told to drop it",
    "refused": "the WMS refused to drop it",
    "manual": "the WMS connector cannot cancel: a person must stop it in the WMS",
}


def _change_steps(db: Bind, order_id: str) -> list[Step]:
    """Changes ``order_watch`` found in Next Engine and what the WMS was told."""
    steps = []
    for change in order_changes(db, order_id):
        told = _TOLD.get(change.state, change.state)
        answer = f": {change.wms_answer}" if change.wms_answer else ""
        again = (
            f"; new content instructed in batch {change.reinstruction}"
            if change.reinstruction
            else ""
        )
        steps.append(
            Step(
                change.detected_at,
                f"order {order_id} {change.kind} in Next Engine",
                f"{change.detail}; {told}{answer} (cancellations {change.batch}){again}",
            )
        )
    return steps


def goods_history(db: Bind, goods: str) -> list[Step]:
    """The stock corrections of a Next Engine goods code (``nebridge stock reconcile``)."""
    with read_session(db) as session:
        items = list(
            session.scalars(
                select(OutboxItem)
                .where(col(OutboxItem.idempotency_key).startswith("reconcile:"))
                .where(col(OutboxItem.idempotency_key).endswith(f":{goods}"))
                .order_by(col(OutboxItem.id))
            )
        )
        uploads = {
            u.ref: u
            for u in session.scalars(
                select(StockUpload).where(
                    col(StockUpload.ref).in_([i.dispatch_ref for i in items if i.dispatch_ref])
                )
            )
        }
    steps: list[Step] = []
    for item in items:
        steps.extend(_item_steps(item, uploads.get(item.dispatch_ref or "")))
    return sorted(steps, key=_order)


def _item_steps(item: OutboxItem, upload: StockUpload | None) -> list[Step]:
    what = f"action #{item.id}: {describe(item.kind, item.subject, json.loads(item.payload))}"
    steps = [Step(item.created_at, what, f"decided by {item.plugin}")]
    outcome = item.result or item.last_error or ""
    if upload is not None:
        outcome += (
            f" (upload {upload.ref}: {upload.state}"
            + (f", queue {upload.que_id}" if upload.que_id else "")
            + ")"
        )
    steps.append(
        Step(
            item.updated_at,
            f"action #{item.id} {item.state} after {item.attempts} attempt(s)",
            outcome,
        )
    )
    return steps


def _order(step: Step) -> float:
    """Time order; steps at the same instant keep the order they happened in (stable sort)."""
    return step.at.timestamp() if step.at else 0.0
