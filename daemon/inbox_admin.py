"""The admin side of the inbox (``nebridge inbox list|retry``).

Lists what arrived, what waits and what was refused, sets held events back to pending and
hands fixed rejected batches back to the connector. Taking batches in is :mod:`daemon.inbox`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import func
from sqlmodel import Session, col, select

from daemon.shipcheck import MISMATCH, PARTIAL, SECOND, confirmed_reason
from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import BatchState, EventState, InboxBatch, InboxEvent
from hooks.connectors import ConnectorContext, RequeueingConnector, WmsConnector
from hooks.records import EventKind


class InboxError(Exception):
    """An inbox request that cannot be carried out; the message says what to do instead."""


class ListState(StrEnum):
    """What ``nebridge inbox list --state`` shows."""

    ACCEPTED = "accepted"
    PENDING = "pending"
    HELD = "held"
    REJECTED = "rejected"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class AcceptedBatchRow:
    """An accepted batch (a file) and what it brought."""

    id: int
    source: str
    kind: str
    received_at: str
    events: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class RejectedBatchRow:
    """A rejected batch, still waiting for the admin, with every error as recorded."""

    id: int
    source: str
    kind: str
    received_at: str
    reason: str


@dataclass(frozen=True, slots=True)
class EventRow:
    """A pending or held event; ``reason`` is its last error (why it is held or deferred)."""

    id: int
    kind: str
    external_id: str
    warehouse: str
    source: str
    attempts: int
    received_at: str
    reason: str | None

    @property
    def ref(self) -> str:
        """How ``nebridge inbox retry --event`` names it: ``kind:external id``."""
        return f"{self.kind}:{self.external_id}"


R = TypeVar("R", AcceptedBatchRow, RejectedBatchRow, EventRow)


@dataclass
class InboxSection(Generic[R]):
    """One part of the listing: the first ``limit`` rows and how many there are in all."""

    total: int
    rows: list[R]


@dataclass
class InboxListing:
    """What ``nebridge inbox list`` shows; sections not asked for are None."""

    limit: int
    accepted: InboxSection[AcceptedBatchRow] | None = None
    pending: InboxSection[EventRow] | None = None
    held: InboxSection[EventRow] | None = None
    rejected: InboxSection[RejectedBatchRow] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The stable ``--json`` structure: ``{limit, <state>: {total, items: [...]}}``,
        with one key per state asked for (all four for ``--state all``)."""
        data: dict[str, Any] = {"limit": self.limit}
        for state in ListState:
            section = getattr(self, state.value, None)
            if section is not None:
                data[state.value] = {
                    "total": section.total,
                    "items": [asdict(row) for row in section.rows],
                }
        return data


def list_inbox(engine: Bind, state: ListState = ListState.ALL, limit: int = 50) -> InboxListing:
    """Accepted batches (newest first), pending and held events (oldest first, the order the
    pipeline takes them) and rejected batches not yet retried (newest first), each cut at
    ``limit`` rows."""
    wanted = set(ListState) - {ListState.ALL} if state is ListState.ALL else {state}
    listing = InboxListing(limit=limit)
    with read_session(engine) as session:
        if ListState.ACCEPTED in wanted:
            batches, total = _batches(session, BatchState.ACCEPTED, limit)
            listing.accepted = InboxSection(
                total,
                [
                    AcceptedBatchRow(
                        b.id or 0, b.source, b.kind, _iso(b.received_at), b.events, b.duplicates
                    )
                    for b in batches
                ],
            )
        if ListState.PENDING in wanted:
            listing.pending = _events(session, EventState.PENDING, limit)
        if ListState.HELD in wanted:
            listing.held = _events(session, EventState.HELD, limit)
        if ListState.REJECTED in wanted:
            batches, total = _batches(session, BatchState.REJECTED, limit)
            listing.rejected = InboxSection(
                total,
                [
                    RejectedBatchRow(
                        b.id or 0, b.source, b.kind, _iso(b.received_at), b.errors or ""
                    )
                    for b in batches
                ],
            )
    return listing


def _batches(session: Session, state: BatchState, limit: int) -> tuple[list[InboxBatch], int]:
    """The newest ``limit`` batches in ``state`` and how many there are."""
    where = col(InboxBatch.state) == state
    rows = list(
        session.scalars(
            select(InboxBatch).where(where).order_by(col(InboxBatch.id).desc()).limit(limit)
        )
    )
    total = session.scalar(select(func.count()).select_from(InboxBatch).where(where)) or 0
    return rows, int(total)


def _events(session: Session, state: EventState, limit: int) -> InboxSection[EventRow]:
    """The oldest ``limit`` events in ``state`` and how many there are."""
    where = col(InboxEvent.state) == state.value
    rows = session.scalars(
        select(InboxEvent).where(where).order_by(col(InboxEvent.id)).limit(limit)
    )
    total = session.scalar(select(func.count()).select_from(InboxEvent).where(where)) or 0
    return InboxSection(int(total), [_event_row(e) for e in rows])


def _event_row(event: InboxEvent) -> EventRow:
    return EventRow(
        event.id or 0,
        event.kind,
        event.external_id,
        event.warehouse,
        event.source,
        event.attempts,
        _iso(event.received_at),
        event.last_error,
    )


def _iso(moment: datetime) -> str:
    """A stored (aware) time as ISO 8601 in UTC, the same on every database."""
    return moment.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    """What retrying a held event does, said before it is done.

    ``warning`` is set when the retry overrides a shipment check and changes Next Engine
    in a way the check held back (a partial or mismatching shipment ships the order whole,
    as Next Engine has it): the command asks before it. ``effect`` is the one line after.
    """

    warning: str | None
    effect: str


def retry_outcome(engine: Bind, ref: str) -> RetryOutcome:
    """What :func:`retry_held_event` would do to ``ref``; changes nothing (raises as it)."""
    with read_session(engine) as session:
        event = _held_event(session, ref)
        source, held = f"{event.kind}:{event.external_id}", event.last_error or ""
    later = "the next pipeline run of its warehouse"
    if held.startswith((PARTIAL, MISMATCH)):
        prefix = PARTIAL if held.startswith(PARTIAL) else MISMATCH
        order = held[len(prefix) :].split(":", 1)[0]
        why = held.split(";", 1)[0]
        return RetryOutcome(
            warning=(
                f"{source} is held: {why}. Retrying confirms it as it is: Next Engine order "
                f"{order} is shipped WHOLE as Next Engine holds it (出荷確定 of every line, its "
                "stock moved for all of them), not as the WMS shipped it. Do it only once the "
                "order in Next Engine holds exactly what was shipped (split or edited)"
            ),
            effect=f"{later} ships Next Engine order {order} whole as confirmed",
        )
    if held.startswith(SECOND):
        return RetryOutcome(None, f"{later} acknowledges it; nothing is sent to Next Engine")
    return RetryOutcome(None, f"{later} processes it with every check, as a new event")


def retry_held_event(engine: Bind, ref: str) -> EventRow:
    """Set a held event back to pending, so the pipeline runs the plugins on it again.

    ``ref`` is ``kind:external id`` (``shipment:S-1``) or the external id alone when only one
    event has it. Repeating an event never doubles anything: its actions have deterministic
    idempotency keys, so those already in the outbox are not added again. A shipment held by
    the shipment checks is taken as confirmed (:func:`retry_outcome` says what that does).
    """
    with write_session(engine) as session:
        event = _held_event(session, ref)
        event.state = EventState.PENDING.value
        # a shipment held by the engine's shipment checks is taken as the admin confirmed it
        event.last_error = confirmed_reason(event.last_error)
        session.add(event)
    return _event_row(event)


def _held_event(session: Session, ref: str) -> InboxEvent:
    """The held event ``ref`` names; an :class:`InboxError` saying what to do otherwise."""
    kind, external_id = _parse_ref(ref)
    query = select(InboxEvent).where(col(InboxEvent.external_id) == external_id)
    if kind is not None:
        query = query.where(col(InboxEvent.kind) == kind)
    rows: list[InboxEvent] = list(session.scalars(query))
    if not rows:
        raise InboxError(
            f"no event {ref!r} in the inbox; `nebridge inbox list --state held` "
            "shows the held ones (name them as kind:id, e.g. shipment:S-1)"
        )
    if len(rows) > 1:
        choices = " or ".join(f"{r.kind}:{r.external_id}" for r in rows)
        raise InboxError(f"more than one event is called {external_id!r}; say which: {choices}")
    event = rows[0]
    if event.state != EventState.HELD.value:
        raise InboxError(
            f"{event.kind} {event.external_id} is {event.state}, not held; "
            f"{_NOT_HELD_HINT.get(event.state, 'only held events are retried')}"
        )
    return event


_NOT_HELD_HINT = {
    EventState.PENDING.value: "the next pipeline run of its warehouse takes it",
    EventState.PROCESSED.value: "its actions are already in the outbox (`nebridge status`)",
}


def _parse_ref(ref: str) -> tuple[str | None, str]:
    """``shipment:S-1`` → (``shipment``, ``S-1``); an id without a known kind → (None, id)."""
    prefix, sep, rest = ref.strip().partition(":")
    kinds = {kind.value for kind in EventKind}
    kind, external_id = (prefix, rest) if sep and prefix in kinds else (None, ref.strip())
    if not external_id:
        raise InboxError(f"{ref!r} names no event; give it as kind:id, e.g. shipment:S-1")
    return kind, external_id


def requeue_rejected(
    engine: Bind,
    connector: WmsConnector,
    connector_name: str,
    ctx: ConnectorContext,
    name: str,
) -> str:
    """Hand the rejected batch ``name`` back to the connector to be taken again; return where
    it went.

    The oldest still-rejected batch record with that source is marked ``requeued`` in the
    same transaction (so ``inbox list`` stops showing it); if the connector refuses, nothing
    changes.
    """
    if not isinstance(connector, RequeueingConnector):
        raise InboxError(
            f"the WMS connector {connector_name!r} cannot put a rejected batch back "
            "(it has no requeue); have the WMS send the corrected data again"
        )
    with write_session(engine) as session:
        record = session.scalars(
            select(InboxBatch)
            .where(col(InboxBatch.state) == BatchState.REJECTED)
            .where(col(InboxBatch.source) == name)
            .order_by(col(InboxBatch.id))
            .limit(1)
        ).first()
        try:
            where = connector.requeue(name, ctx)
        except KeyError as exc:
            message = str(exc.args[0]) if exc.args else name
            if message == name:
                message = (
                    f"no rejected batch named {name!r}; "
                    "`nebridge inbox list --state rejected` shows them"
                )
            raise InboxError(message) from None
        except ValueError as exc:
            raise InboxError(str(exc)) from None
        if record is not None:
            record.state = BatchState.REQUEUED
            session.add(record)
    return where
