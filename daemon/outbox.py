"""The transactional outbox: Next Engine actions stored with the decision that caused them.

Plugins decide; the pipeline stores their actions here in the same transaction that marks the
WMS event processed. The :class:`Dispatcher` then hands due items to the executor registered
for their kind. An item moves pending → in_flight → done / failed / in_doubt; an item found
in flight after a crash has an unknown outcome and goes to its executor's ``reconcile`` before
anything is sent again. Listing, retrying and resolving items is :mod:`daemon.outbox_admin`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import case, func, update
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from daemon import attention
from daemon.fleet.leases import LeaseLost
from daemon.owners import not_yours_fix, owner_of
from daemon.serialize import dumps
from daemon.store.engine import Bind, DatabaseUnavailable, insert_many, read_session, write_session
from daemon.store.models import OutboxItem, OutboxState, utcnow
from hooks.actions import PlannedItem
from hooks.records import Problem

log = logging.getLogger(__name__)


def insert_ignoring_duplicates(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert outbox rows; rows whose idempotency key exists already are silently skipped.

    Every row names the same columns. Returns the number of rows actually inserted.
    """
    if not rows:
        return 0
    columns = list(rows[0])
    if any(row.keys() != rows[0].keys() for row in rows):
        raise ValueError("every outbox row must name the same columns")
    return insert_many(
        session,
        OutboxItem.__table__,  # type: ignore[attr-defined]
        columns,
        [tuple(row[c] for c in columns) for row in rows],
        skip_conflicts_on="idempotency_key",
    )


_PENDING = OutboxState.PENDING.value


def outbox_row(
    item: PlannedItem, warehouse: str, event_id: int | None, now: datetime
) -> dict[str, Any]:
    """The ``outbox_item`` row (for :func:`insert_ignoring_duplicates`) of a planned action,
    pending and due ``now``."""
    return {
        "idempotency_key": item.key,
        "kind": item.kind,
        "warehouse": warehouse,
        "plugin": item.plugin,
        "subject": item.subject,
        "event_id": event_id,
        "payload": dumps(item.payload),
        "state": _PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


class Executor(Protocol):
    """Executes outbox items of one kind against Next Engine (registered by the engine).

    An executor may set ``max_batch``: the most items it takes in one call when it sends a whole
    call to Next Engine as one request (the stock deltas due in one dispatch become one upload;
    README, "Dispatch"). Without it, it gets the dispatcher's ``batch_size`` items per call.
    """

    kind: str

    def reconcile(self, items: Sequence[OutboxItem]) -> None:
        """Settle items whose outcome is unknown (found in flight) before anything else."""
        ...

    def execute(self, items: Sequence[OutboxItem]) -> None:
        """Send due items and record each one's outcome."""
        ...


@dataclass
class DispatchReport:
    """What one dispatcher pass did."""

    reconciled: int = 0
    executed: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    blocked: str = ""
    errors: list[str] = field(default_factory=list)
    #: When the earliest pending item that was not due yet comes due (a retry's backoff),
    #: None when none waits: the scheduler runs the dispatcher again then.
    next_due: datetime | None = None


@dataclass
class OutboxSummary:
    """What the outbox holds for a dispatcher pass, read in one statement: an idle pass
    (nothing pending, nothing in flight) costs one round trip and no more."""

    #: Kinds with items found in flight (their outcome unknown: reconciled first).
    in_flight: set[str] = field(default_factory=set)
    #: Pending items by kind, and those due now.
    pending: dict[str, int] = field(default_factory=dict)
    due: dict[str, int] = field(default_factory=dict)
    #: Each kind's earliest pending item not due yet.
    next_due: dict[str, datetime] = field(default_factory=dict)


def outbox_summary(engine: Bind, now: datetime) -> OutboxSummary:
    """Pending and in-flight items by kind, with what is due at ``now`` and what comes due
    next (one grouped read over the due index)."""
    waits = col(OutboxItem.next_attempt_at) > now
    stmt = (
        core_select(  # five columns: more than sqlmodel's typed select takes
            col(OutboxItem.kind),
            col(OutboxItem.state),
            func.count(),
            func.count(case((~waits, 1))),
            func.min(case((waits, col(OutboxItem.next_attempt_at)))),
        )
        .where(col(OutboxItem.state).in_([_PENDING, OutboxState.IN_FLIGHT.value]))
        .group_by(col(OutboxItem.kind), col(OutboxItem.state))
    )
    summary = OutboxSummary()
    with read_session(engine) as session:
        rows = session.execute(stmt).all()
    for kind, state, count, due, next_due in rows:
        if state != _PENDING:
            summary.in_flight.add(str(kind))
            continue
        summary.pending[str(kind)] = int(count)
        if due:
            summary.due[str(kind)] = int(due)
        if next_due is not None:
            summary.next_due[str(kind)] = _aware(next_due)
    return summary


def _aware(value: datetime) -> datetime:
    """A time read by a bare aggregate (no column type applied): UTC when naive (SQLite)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


#: Key prefix of the attention item of an action kind whose executor fails.
DISPATCH_PROBLEM = f"{attention.AttentionKind.CRASHED_STAGE}:dispatch:"


def _failure_problem(kind: str, exc: Exception) -> Problem:
    """The attention item of ``kind``'s failed executor, with the fix for a file the
    daemon may not open (a token file root took over), else where the traceback is."""
    waiting = f"the {kind} actions wait and are tried again at every dispatch"
    if isinstance(exc, PermissionError) and exc.filename:
        path = Path(exc.filename)
        owner = owner_of(path.parent)  # the folder's owner: the installation's user
        fix = f"{not_yours_fix(path, owner) if owner else 'check its owner and mode'}; {waiting}"
    else:
        fix = (
            "the log has the traceback (`journalctl -u nebridge`); "
            f"{waiting} — if it keeps failing, report the traceback"
        )
    return Problem(
        key=DISPATCH_PROBLEM + kind,
        kind=attention.AttentionKind.CRASHED_STAGE,
        reason=f"sending {kind} actions failed: {type(exc).__name__}: {exc}",
        fix=fix,
        subject=f"dispatch {kind}",
    )


class Dispatcher:
    """Drains the outbox by kind through the registered executors."""

    def __init__(
        self,
        engine: Bind,
        executors: Mapping[str, Executor] | None = None,
        batch_size: int = 1000,
        clock: Callable[[], datetime] = utcnow,
        blocked: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.executors: dict[str, Executor] = dict(executors or {})
        self.batch_size = batch_size
        self.clock = clock
        self.blocked = blocked

    def run_once(self, should_stop: Callable[[], bool] = lambda: False) -> DispatchReport:
        """Reconcile in-flight items, then execute due items kind by kind.

        A kind whose executor fails opens a ``crashed_stage`` attention item (a daemon that
        cannot send anything must say so, not only log it); it closes once the kind's
        executor runs through again.
        """
        report = DispatchReport()
        summary = outbox_summary(self.engine, self.clock())
        ours = summary.pending.keys() | summary.in_flight
        reason = "no executors" if not self.executors else (self.blocked() if ours else None)
        if reason:
            report.blocked = reason
            report.waiting = dict(summary.pending)
            return report
        report.waiting = {k: n for k, n in summary.pending.items() if k not in self.executors}
        failed: dict[str, Exception] = {}
        ran: set[str] = set()
        for kind, executor in self.executors.items():
            if kind not in summary.in_flight:
                continue
            stuck = self._load(kind, [OutboxState.IN_FLIGHT], due_only=False)
            if stuck:
                self._guard(report, kind, executor.reconcile, stuck, failed, ran)
                report.reconciled += len(stuck)
        for kind, executor in self.executors.items():
            if kind not in summary.due and kind not in ran:
                continue  # nothing due (an item reconciled back to pending may be)
            limit: int = getattr(executor, "max_batch", None) or self.batch_size
            while not should_stop():
                due = self._load(kind, [OutboxState.PENDING], due_only=True, limit=limit)
                if not due:
                    break
                if not self._guard(report, kind, executor.execute, due, failed, ran):
                    break
                report.executed[kind] = report.executed.get(kind, 0) + len(due)
                if len(due) < limit:
                    break
        self._attention(failed, ran - failed.keys())
        if ran or failed:  # what ran may have left retries behind
            summary = outbox_summary(self.engine, self.clock())
        report.next_due = min(
            (when for kind, when in summary.next_due.items() if kind in self.executors),
            default=None,
        )
        return report

    def _guard(
        self,
        report: DispatchReport,
        kind: str,
        fn: Callable[[Sequence[OutboxItem]], None],
        items: Sequence[OutboxItem],
        failed: dict[str, Exception],
        ran: set[str],
    ) -> bool:
        try:
            fn(items)
        except (DatabaseUnavailable, LeaseLost):
            raise  # not an executor bug: the scheduler holds the work back
        except Exception as exc:  # an executor bug must not stop the other kinds
            log.exception("outbox executor %s failed", kind)
            report.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            failed.setdefault(kind, exc)
            return False
        ran.add(kind)
        return True

    def _attention(self, failed: Mapping[str, Exception], ran: set[str]) -> None:
        """Open an attention item per failed kind; close those of kinds that ran through
        (read only when something ran: an idle dispatch writes nothing)."""
        for kind, exc in failed.items():
            attention.report(self.engine, _failure_problem(kind, exc), source="dispatcher")
        if ran:
            keys = attention.open_problem_keys(self.engine, DISPATCH_PROBLEM)
            attention.resolve(self.engine, keys & {DISPATCH_PROBLEM + kind for kind in ran})

    def _load(
        self, kind: str, states: Iterable[OutboxState], due_only: bool, limit: int | None = None
    ) -> list[OutboxItem]:
        stmt = (
            select(OutboxItem)
            .where(col(OutboxItem.kind) == kind)
            .where(col(OutboxItem.state).in_([s.value for s in states]))
            .order_by(col(OutboxItem.id))
            .limit(limit or self.batch_size)
        )
        if due_only:
            stmt = stmt.where(col(OutboxItem.next_attempt_at) <= self.clock())
        with read_session(self.engine) as session:
            return list(session.scalars(stmt))


# -- state transitions used by executors ------------------------------------------------------


def transition(
    engine: Bind,
    ids: Sequence[int],
    state: OutboxState,
    *,
    error: str | None = None,
    result: str | None = None,
    retry_in: timedelta | None = None,
    count_attempt: bool = False,
    dispatch_ref: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Move items to ``state`` in one committed transaction."""
    if not ids:
        return
    now = clock()
    values: dict[str, Any] = {"state": state.value, "updated_at": now}
    if error is not None:
        values["last_error"] = error
    if result is not None:
        values["result"] = result
    if retry_in is not None:
        values["next_attempt_at"] = now + retry_in
    if dispatch_ref is not None:
        values["dispatch_ref"] = dispatch_ref
    if count_attempt:
        values["attempts"] = OutboxItem.attempts + 1
    with write_session(engine) as session:
        session.execute(
            update(OutboxItem).where(col(OutboxItem.id).in_(list(ids))).values(**values)
        )


def pending_by_kind(engine: Bind) -> dict[str, int]:
    """Pending item counts by kind."""
    with read_session(engine) as session:
        rows = session.execute(
            select(col(OutboxItem.kind), func.count())
            .where(col(OutboxItem.state) == OutboxState.PENDING.value)
            .group_by(col(OutboxItem.kind))
        ).all()
    return {str(kind): int(n) for kind, n in rows}


def backlog_by_state(engine: Bind) -> dict[str, int]:
    """Item counts by state (for ``status``)."""
    with read_session(engine) as session:
        rows = session.execute(
            select(col(OutboxItem.state), func.count()).group_by(col(OutboxItem.state))
        ).all()
    counts: dict[str, int] = defaultdict(int)
    for state, n in rows:
        counts[str(state)] = int(n)
    return dict(counts)
