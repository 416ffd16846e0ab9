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
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from daemon.pluginmanager import PluginHost
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
from hooks.notify import for_company
from hooks.records import Problem

#: ``ImportedOrder.state`` of an order held at import (mirrors ``daemon.importer.HELD``).
HELD_ORDER_STATE = ImportState.HELD
#: ``InboxBatch.state`` of a rejected batch still waiting for the admin.
REJECTED_BATCH_STATE = BatchState.REJECTED


class AttentionKind(StrEnum):
    """The kinds of things that wait for a person."""

    HELD_ORDER = "held_order"
    HELD_EVENT = "held_event"
    FAILED_ACTION = "failed_action"
    IN_DOUBT_ACTION = "in_doubt_action"
    REJECTED_FILE = "rejected_file"
    FILE_NOT_TAKEN = "file_not_taken"
    PAUSED_STAGE = "paused_stage"
    CRASHED_STAGE = "crashed_stage"
    HELD_INSTRUCTION = "held_instruction"
    WMS_MISMATCH = "wms_mismatch"
    WMS_READ_FAILED = "wms_read_failed"
    NE_LINK_LOST = "ne_link_lost"
    NE_TOKEN_EXPIRING = "ne_token_expiring"
    WMS_AUTH_LOST = "wms_auth_lost"
    NOTIFY_FAILING = "notify_failing"
    ORDER_CHANGED = "order_changed"
    STOCK_DRIFT = "stock_drift"
    SERVICE_NOT_STARTED = "service_not_started"


@dataclass(frozen=True, slots=True)
class AttentionItem:
    """One thing that waits for a person, with the command that resolves it."""

    kind: str
    key: str
    reason: str
    fix: str
    since: datetime
    warehouse: str = ""
    subject: str = ""
    severity: str = "error"

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` form (``since`` as ISO 8601 UTC)."""
        data = asdict(self)
        data["since"] = self.since.astimezone(UTC).isoformat()
        return data

    def of_company(self, company: str) -> AttentionItem:
        """This item with its commands run for ``company`` (see :func:`for_company`)."""
        if not company:
            return self
        return replace(
            self, reason=for_company(self.reason, company), fix=for_company(self.fix, company)
        )


@dataclass
class AttentionReport:
    """Counts of every kind (complete) and the newest items (bounded by ``limit``)."""

    counts: dict[str, int] = field(default_factory=dict)
    items: list[AttentionItem] = field(default_factory=list)
    limit: int = 50

    @property
    def total(self) -> int:
        """How many things wait in all."""
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """The stable ``--json`` structure."""
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "limit": self.limit,
            "items": [item.as_dict() for item in self.items],
        }


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
Source = Callable[[Session, int, str | None], tuple[dict[str, int], list[AttentionItem]]]


def _count(session: Session, query: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def _of(query: Any, column: Any, warehouse: str | None) -> Any:
    """``query`` kept to ``warehouse`` and to rows tied to no warehouse."""
    return query if warehouse is None else query.where(col(column).in_([warehouse, ""]))


def _held_orders(
    session: Session, limit: int, warehouse: str | None
) -> tuple[dict[str, int], list[AttentionItem]]:
    query = _of(
        select(ImportedOrder).where(col(ImportedOrder.state) == HELD_ORDER_STATE),
        ImportedOrder.warehouse,
        warehouse,
    )
    rows = session.scalars(query.order_by(col(ImportedOrder.updated_at).desc()).limit(limit))
    items = [
        AttentionItem(
            kind=AttentionKind.HELD_ORDER,
            key=f"held_order:{o.ne_order_id}",
            reason=o.hold_reason or "held at import",
            fix=(
                "correct the cause (the order in Next Engine, the WMS product master or "
                "connector settings); an order changed in Next Engine is taken again by "
                f"itself, otherwise `nebridge orders retry {o.ne_order_id}` (or `nebridge "
                f"orders drop {o.ne_order_id}` to never import it)"
            ),
            since=o.updated_at,
            warehouse=o.warehouse,
            subject=o.ne_order_id,
        )
        for o in rows
    ]
    return {AttentionKind.HELD_ORDER: _count(session, query)}, items


def _held_events(
    session: Session, limit: int, warehouse: str | None
) -> tuple[dict[str, int], list[AttentionItem]]:
    query = _of(
        select(InboxEvent).where(col(InboxEvent.state) == EventState.HELD.value),
        InboxEvent.warehouse,
        warehouse,
    )
    rows = session.scalars(query.order_by(col(InboxEvent.id).desc()).limit(limit))
    items = [
        AttentionItem(
            kind=AttentionKind.HELD_EVENT,
            key=f"held_event:{e.kind}:{e.external_id}",
            reason=e.last_error or "held",
            fix=(
                f"correct the cause, then `nebridge inbox retry --event {e.kind}:{e.external_id}`"
            ),
            since=e.processed_at or e.received_at,
            warehouse=e.warehouse,
            subject=f"{e.kind}:{e.external_id}",
        )
        for e in rows
    ]
    return {AttentionKind.HELD_EVENT: _count(session, query)}, items


def _actions(
    session: Session, limit: int, warehouse: str | None
) -> tuple[dict[str, int], list[AttentionItem]]:
    counts: dict[str, int] = {}
    items: list[AttentionItem] = []
    for state, kind, fix in (
        (
            OutboxState.FAILED,
            AttentionKind.FAILED_ACTION,
            "correct the cause in Next Engine, then `nebridge outbox retry {id}`",
        ),
        (
            OutboxState.IN_DOUBT,
            AttentionKind.IN_DOUBT_ACTION,
            "look the item up in Next Engine, then `nebridge outbox resolve {id} --applied` or "
            "`--not-applied`",
        ),
    ):
        query = _of(
            select(OutboxItem).where(col(OutboxItem.state) == state.value),
            OutboxItem.warehouse,
            warehouse,
        )
        counts[kind] = _count(session, query)
        for item in session.scalars(query.order_by(col(OutboxItem.id).desc()).limit(limit)):
            items.append(
                AttentionItem(
                    kind=kind,
                    key=f"{kind}:{item.id}",
                    reason=f"{item.kind} {item.subject}: {item.last_error or state.value}",
                    fix=fix.format(id=item.id),
                    since=item.updated_at,
                    warehouse=item.warehouse,
                    subject=item.subject,
                )
            )
    return counts, items


def _rejected_files(
    session: Session,
    limit: int,
    warehouse: str | None,  # files are tied to no warehouse
) -> tuple[dict[str, int], list[AttentionItem]]:
    query = select(InboxBatch).where(col(InboxBatch.state) == REJECTED_BATCH_STATE)
    rows = session.scalars(query.order_by(col(InboxBatch.id).desc()).limit(limit))
    items = [
        AttentionItem(
            kind=AttentionKind.REJECTED_FILE,
            key=f"rejected_file:{b.id}",
            reason=(b.errors or "rejected").split("\n", 1)[0],
            fix=(
                f"correct the file (every reason: `nebridge inbox list --state rejected`), "
                f"then `nebridge inbox retry {b.source}` — or have the WMS send it again"
            ),
            since=b.received_at,
            subject=b.source,
        )
        for b in rows
    ]
    return {AttentionKind.REJECTED_FILE: _count(session, query)}, items


def _stored(
    session: Session, limit: int, warehouse: str | None
) -> tuple[dict[str, int], list[AttentionItem]]:
    where = col(AttentionProblem.state) == ProblemState.OPEN.value
    counts = {
        str(kind): int(n)
        for kind, n in session.execute(
            _of(
                select(col(AttentionProblem.kind), func.count()).where(where),
                AttentionProblem.warehouse,
                warehouse,
            ).group_by(col(AttentionProblem.kind))
        )
    }
    rows = session.scalars(
        _of(select(AttentionProblem).where(where), AttentionProblem.warehouse, warehouse)
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


def paused_stage_items(host: PluginHost) -> list[AttentionItem]:
    """One live item per pipeline stage paused because an enabled plugin is not loaded."""
    items = []
    for stage, records in sorted(host.stage_blockers().items()):
        names = [r.name for r in records]
        items.append(
            AttentionItem(
                kind=AttentionKind.PAUSED_STAGE,
                key=f"paused_stage:{stage}",
                reason=(
                    f"stage {stage} is paused for every warehouse: "
                    + "; ".join(
                        f"plugin {r.name} is enabled but {r.state.value}: {r.error}"
                        for r in records
                    )
                ),
                fix=(
                    f"repair {' and '.join(names)} (`nebridge config check` names the error) or "
                    f"disable it (`nebridge plugins disable {names[0]}`), then restart the daemon "
                    "(`systemctl restart nebridge`)"
                ),
                since=host.loaded_at,
                subject=stage,
            )
        )
    return items


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
    result = AttentionReport(limit=limit)
    items = [i for i in live if warehouse is None or i.warehouse in (warehouse, "")]
    for item in items:
        result.counts[item.kind] = result.counts.get(item.kind, 0) + 1
    if engine is not None:
        with read_session(engine) as session:
            for source in SOURCES:
                counts, found = source(session, limit, warehouse)
                for kind, n in counts.items():
                    result.counts[str(kind)] = result.counts.get(str(kind), 0) + n
                items.extend(found)
    result.counts = {k: n for k, n in result.counts.items() if n}
    items.sort(key=lambda i: i.since, reverse=True)
    result.items = [item.of_company(company) for item in items[:limit]]
    return result
