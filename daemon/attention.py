"""Everything that waits for a person, in one place.

An unattended daemon must never hide work it cannot finish. This module gathers every such
thing into one list of :class:`AttentionItem` — what it is, why it waits and the exact command
or action that resolves it — for ``nebridge attention``, ``status``, ``doctor``, the metrics
and ``run --once``'s exit code alike.

Most items are read from where they already live (held orders, held events, failed and
in-doubt actions, rejected batches). What has no other home — a Logikura schedule renumbered
by staff, a file that cannot be taken, a partial shipment — is stored as an
:class:`~daemon.store.models.AttentionProblem` through :func:`report` and closed by
:func:`resolve`. Live conditions that are not in the database (a stage paused because an
enabled plugin is not loaded) are passed to :func:`collect` by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, union_all
from sqlmodel import Session, col, select

from daemon.attention_items import (
    ACTION_STATES,
    Found,
    action_item,
    held_event_item,
    held_order_item,
    rejected_file_item,
    report_of,
)
from daemon.attention_items import AttentionItem as AttentionItem
from daemon.attention_items import AttentionKind as AttentionKind
from daemon.attention_items import AttentionReport as AttentionReport
from daemon.attention_items import paused_stage_items as paused_stage_items
from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import (
    AttentionProblem,
    BatchState,
    EventState,
    ImportedOrder,
    ImportState,
    InboxBatch,
    InboxEvent,
    OutboxItem,
    OutboxState,
    ProblemState,
    utcnow,
)
from hooks.records import Problem

#: ``ImportedOrder.state`` of an order held at import (mirrors ``daemon.importer.HELD``).
HELD_ORDER_STATE = ImportState.HELD
#: ``InboxBatch.state`` of a rejected batch still waiting for the admin.
REJECTED_BATCH_STATE = BatchState.REJECTED


# -- stored problems --------------------------------------------------------------------------


def report(engine: Bind, problem: Problem, source: str = "", now: datetime | None = None) -> None:
    """Store (or refresh) ``problem`` as open, in its own transaction."""
    with write_session(engine) as session:
        report_in(session, problem, source, now)


def report_in(
    session: Session, problem: Problem, source: str = "", now: datetime | None = None
) -> None:
    """Store (or refresh) ``problem`` inside ``session``'s transaction.

    Reporting a key that is already open updates its reason and fix and counts it again;
    reporting a resolved key opens it anew.
    """
    moment = now or utcnow()
    key = problem.key[:200]
    row = session.get(AttentionProblem, key)
    if row is None:
        row = AttentionProblem(
            key=key, kind=problem.kind[:32], first_seen=moment, reason="", fix="", occurrences=0
        )
    elif row.state != ProblemState.OPEN.value:
        row.first_seen, row.occurrences, row.resolved_at = moment, 0, None
    row.kind = problem.kind[:32]
    row.severity = problem.severity
    row.warehouse = problem.warehouse[:32]
    row.subject = problem.subject[:128]
    row.reason, row.fix = problem.reason, problem.fix
    row.source = source[:64]
    row.state = ProblemState.OPEN.value
    row.occurrences += 1
    row.last_seen = moment
    session.add(row)


def resolve(engine: Bind, keys: Iterable[str], now: datetime | None = None) -> int:
    """Close the open problems named by ``keys``; return how many were open."""
    wanted = [k[:200] for k in keys]
    if not wanted:
        return 0
    with write_session(engine) as session:
        return resolve_in(session, wanted, now)


def resolve_in(session: Session, keys: Iterable[str], now: datetime | None = None) -> int:
    """Close the open problems named by ``keys`` inside ``session``'s transaction."""
    closed = 0
    for key in keys:
        row = session.get(AttentionProblem, key[:200])
        if row is not None and row.state == ProblemState.OPEN.value:
            row.state, row.resolved_at = ProblemState.RESOLVED.value, now or utcnow()
            session.add(row)
            closed += 1
    return closed


def open_problem_keys(engine: Bind, prefix: str) -> set[str]:
    """Keys of the open problems that start with ``prefix`` (to resolve what is gone)."""
    with read_session(engine) as session:
        return set(
            session.scalars(
                select(col(AttentionProblem.key))
                .where(col(AttentionProblem.state) == ProblemState.OPEN.value)
                .where(col(AttentionProblem.key).startswith(prefix))
            )
        )


# -- collecting -------------------------------------------------------------------------------

#: A source reads ``(session, limit, warehouse)``; ``warehouse`` (None: all) keeps the items
#: of that warehouse and those tied to none.
Source = Callable[[Session, int, str | None], Found]


def _count(session: Session, query: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def _of(query: Any, column: Any, warehouse: str | None) -> Any:
    """``query`` kept to ``warehouse`` and to rows tied to no warehouse."""
    return query if warehouse is None else query.where(col(column).in_([warehouse, ""]))


# What counts as each kind read from the tables: the rows of these queries, counted by
# :func:`counts` and listed (newest first) by the sources of :func:`collect`.


def _held_orders_query(warehouse: str | None) -> Any:
    return _of(
        select(ImportedOrder).where(col(ImportedOrder.state) == HELD_ORDER_STATE),
        ImportedOrder.warehouse,
        warehouse,
    )


def _held_events_query(warehouse: str | None) -> Any:
    return _of(
        select(InboxEvent).where(col(InboxEvent.state) == EventState.HELD.value),
        InboxEvent.warehouse,
        warehouse,
    )


def _actions_query(state: str, warehouse: str | None) -> Any:
    return _of(
        select(OutboxItem).where(col(OutboxItem.state) == OutboxState(state).value),
        OutboxItem.warehouse,
        warehouse,
    )


def _rejected_files_query() -> Any:  # files are tied to no warehouse
    return select(InboxBatch).where(col(InboxBatch.state) == REJECTED_BATCH_STATE)


def _stored_query(what: Any, warehouse: str | None) -> Any:
    return _of(
        select(what).where(col(AttentionProblem.state) == ProblemState.OPEN.value),
        AttentionProblem.warehouse,
        warehouse,
    )


def _stored_counts(warehouse: str | None) -> Any:
    """``(kind, count)`` of the open stored problems."""
    return (
        _stored_query(col(AttentionProblem.kind), warehouse)
        .add_columns(func.count())
        .group_by(col(AttentionProblem.kind))
    )


def _held_orders(session: Session, limit: int, warehouse: str | None) -> Found:
    query = _held_orders_query(warehouse)
    rows = session.scalars(query.order_by(col(ImportedOrder.updated_at).desc()).limit(limit))
    items = [held_order_item(o.ne_order_id, o.hold_reason, o.updated_at, o.warehouse) for o in rows]
    return {AttentionKind.HELD_ORDER: _count(session, query)}, items


def _held_events(session: Session, limit: int, warehouse: str | None) -> Found:
    query = _held_events_query(warehouse)
    rows = session.scalars(query.order_by(col(InboxEvent.id).desc()).limit(limit))
    items = [
        held_event_item(
            e.kind, e.external_id, e.last_error, e.processed_at or e.received_at, e.warehouse
        )
        for e in rows
    ]
    return {AttentionKind.HELD_EVENT: _count(session, query)}, items


def _actions(session: Session, limit: int, warehouse: str | None) -> Found:
    counts: dict[str, int] = {}
    items: list[AttentionItem] = []
    for state, kind, fix in ACTION_STATES:
        query = _actions_query(state, warehouse)
        counts[kind] = _count(session, query)
        items.extend(
            action_item(
                kind,
                fix,
                state,
                item.id,
                item.kind,
                item.subject,
                item.last_error,
                item.updated_at,
                item.warehouse,
            )
            for item in session.scalars(query.order_by(col(OutboxItem.id).desc()).limit(limit))
        )
    return counts, items


def _rejected_files(session: Session, limit: int, warehouse: str | None) -> Found:
    query = _rejected_files_query()
    rows = session.scalars(query.order_by(col(InboxBatch.id).desc()).limit(limit))
    items = [rejected_file_item(b.id, b.errors, b.source, b.received_at) for b in rows]
    return {AttentionKind.REJECTED_FILE: _count(session, query)}, items


def _stored(session: Session, limit: int, warehouse: str | None) -> Found:
    counts = {str(kind): int(n) for kind, n in session.execute(_stored_counts(warehouse))}
    rows = session.scalars(
        _stored_query(AttentionProblem, warehouse)
        .order_by(col(AttentionProblem.last_seen).desc())
        .limit(limit)
    )
    items = [
        AttentionItem(
            kind=p.kind,
            key=p.key,
            reason=p.reason,
            fix=p.fix,
            since=p.first_seen,
            warehouse=p.warehouse,
            subject=p.subject,
            severity=p.severity,
        )
        for p in rows
    ]
    return counts, items


SOURCES: tuple[Source, ...] = (_held_orders, _held_events, _actions, _rejected_files, _stored)


def collect(
    engine: Bind | None,
    live: Iterable[AttentionItem] = (),
    limit: int = 50,
    warehouse: str | None = None,
    company: str = "",
) -> AttentionReport:
    """Every kind counted, and the newest ``limit`` items of all kinds, newest first.

    ``live`` are conditions the caller knows of that are not stored (paused stages);
    without ``engine`` (a database not usable yet) only they are reported. ``warehouse``
    keeps that warehouse's items and those tied to no warehouse (paused stages, files).
    ``company`` (fleet mode) makes each fix's commands carry ``--company``.
    """
    if engine is None:
        return report_of(live, (), limit, warehouse, company)
    with read_session(engine) as session:
        found = [source(session, limit, warehouse) for source in SOURCES]
    return report_of(live, found, limit, warehouse, company)


def counts(
    engine: Bind, live: Iterable[AttentionItem] = (), warehouse: str | None = None
) -> dict[str, int]:
    """:func:`collect`'s counts (kinds with none left out) in one statement, reading no
    item: what the metrics refresh of every company needs once a minute."""
    counted = [
        (AttentionKind.HELD_ORDER, _held_orders_query(warehouse)),
        (AttentionKind.HELD_EVENT, _held_events_query(warehouse)),
        *((kind, _actions_query(state, warehouse)) for state, kind, _fix in ACTION_STATES),
        (AttentionKind.REJECTED_FILE, _rejected_files_query()),
    ]
    statement = union_all(
        *(
            select(literal(str(kind)), func.count()).select_from(query.subquery())
            for kind, query in counted
        ),
        _stored_counts(warehouse),
    )
    with read_session(engine) as session:
        found: list[Found] = [({str(kind): int(n)}, []) for kind, n in session.execute(statement)]
    return report_of(live, found, 0, warehouse, "").counts
