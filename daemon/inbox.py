"""The durable inbox: WMS batches accepted whole, once, or rejected whole.

The intake asks the connector for ready batches, stores each batch's events in one
transaction (with the batch's cursor, if any) and only then lets the connector commit the
batch (move the file away, advance its position). Re-delivery of an event with the same id
and content is a no-op; the same id with different content rejects the batch as a conflict
naming both sources.

One batch never blocks the rest: a batch that fails for any reason (not only invalid data) is
rejected with the reason, and one that cannot even be rejected is reported as an attention
item (``file_not_taken``) while the next batches flow. Ids longer than their column are
bounded with a hash of the whole (the same id always gives the same bounded id).

The admin side (``nebridge inbox list|retry``) is :mod:`daemon.inbox_admin`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import delete
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session, col, select

from daemon import attention
from daemon.attention import AttentionKind
from daemon.fleet.leases import LeaseLost
from daemon.serialize import content_hash, event_external_id, event_kind, event_to_json
from daemon.stock import take_snapshots
from daemon.store.engine import Bind, DatabaseUnavailable, insert_many, write_session
from daemon.store.models import (
    BatchState,
    Cursor,
    EventState,
    InboxBatch,
    InboxEvent,
    WmsProduct,
    utcnow,
)
from hooks.actions import bounded
from hooks.connectors import ConnectorContext, InboundBatch, WmsConnector
from hooks.errors import BatchRejected, RecordError, StepNotReady
from hooks.records import EventKind, Problem, WmsEvent

log = logging.getLogger(__name__)

PRODUCTS_CURSOR = "wms.products.version"
#: Column sizes of ``inbox_event``: longer ids are bounded (hashed), longer warehouses refused.
_EXTERNAL_ID_LENGTH = 128
_WAREHOUSE_LENGTH = 32
#: Errors that mean the database cannot be reached at all: no batch is to blame.
_UNREACHABLE = (OperationalError, InterfaceError)


def _close_quietly(batches: Iterator[InboundBatch]) -> None:
    """End a connector's batch generator now (it returns a batch it claimed); an error there
    is logged, not raised, as the reason the pass stops is already on its way up."""
    close = getattr(batches, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:
        log.info("the connector could not settle its claimed file: %s", exc)


def _unguarded(what: str) -> None:
    """Default guard of WMS writes: always allowed (no lease or instance lock to lose)."""


_EVENT_COLUMNS = (
    "kind",
    "external_id",
    "warehouse",
    "content_hash",
    "payload",
    "source",
    "state",
    "attempts",
    "received_at",
)
T = TypeVar("T")


def chunked(items: Iterator[T], size: int) -> Iterator[list[T]]:
    """Split an iterator into lists of at most ``size`` items."""
    while chunk := list(islice(items, size)):
        yield chunk


#: The start of every ``file_not_taken`` key the intake reports (both kinds).
_NOT_TAKEN_PREFIX = f"{AttentionKind.FILE_NOT_TAKEN}:"


class _Pass:
    """What one intake pass reads once: the connector context (built at first use and again
    only after the pass stored what it reflects) and the open ``file_not_taken`` keys."""

    def __init__(self, build: Callable[[], ConnectorContext]) -> None:
        self._build = build
        self._context: ConnectorContext | None = None
        self.not_taken: set[str] | None = None

    def context(self) -> ConnectorContext:
        """The context to lend the connector now."""
        if self._context is None:
            self._context = self._build()
        return self._context

    def changed(self) -> None:
        """The pass stored products or a cursor: the next context is read afresh."""
        self._context = None


@dataclass
class IntakeReport:
    """What one intake pass did."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0
    warehouses: set[str] = field(default_factory=set)
    products_updated: bool = False
    stock_snapshots: list[int] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class Intake:
    """Moves data from the WMS connector into the durable inbox."""

    def __init__(
        self,
        engine: Bind,
        connector: WmsConnector,
        context: Callable[[], ConnectorContext],
        chunk_size: int = 1000,
        guard: Callable[[str], None] = _unguarded,
    ) -> None:
        self.engine = engine
        self.connector = connector
        self.context = context
        self.chunk_size = chunk_size
        #: Raises (a LeaseLost) once this process may no longer write into the company's WMS
        #: folders: called right before each file is filed away or rejected (a file claimed
        #: meanwhile goes back to the inbox when the pass stops, or at the next start).
        self.guard = guard

    def run_once(self, dry_run: bool = False) -> IntakeReport:
        """Refresh the product master, then take every ready batch of every kind.

        One pass reads what the connector is lent (the product codes, the ``wms.`` cursors,
        the product master's version among them) once, and again only after it stored
        something that changes it; it reads the open ``file_not_taken`` items of both kinds
        once. An idle pass (nothing new in the WMS) costs two reading transactions.
        """
        report = IntakeReport()
        run = _Pass(self.context)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("product master", partial(self._refresh_products, run, report, dry_run)),
            *(
                (f"{kind.value}s", partial(self._take_all, run, kind, report, dry_run))
                for kind in (EventKind.SHIPMENT, EventKind.RECEIPT)
            ),
            *([("stock counts", partial(self._take_stock, run, report))] if not dry_run else []),
        ]
        for what, step in steps:
            try:
                step()
            except DatabaseUnavailable:
                raise  # the database, not the WMS: the scheduler holds all work back
            except LeaseLost as exc:  # another worker serves the company now: not an error
                exc.warn(log)
                report.failures.append(str(exc))
                break
            except Exception as exc:  # the WMS being down must not stop the other steps
                log.error("reading %s from the WMS failed: %s", what, exc)
                report.failures.append(
                    f"reading {what} from the WMS failed: {exc}; it is retried at the next intake"
                )
        return report

    def _take_all(self, run: _Pass, kind: EventKind, report: IntakeReport, dry_run: bool) -> None:
        """Take every ready batch of ``kind``; one that cannot be taken never stops the rest.

        Once the connector listed them all, files reported as not taken that did not fail
        again in this pass (taken, rejected or gone) are resolved. The open items of both
        kinds are read once a pass, before the first kind is listed: an item is only ever
        resolved if it was open before its kind was listed (one opened since, by another
        process, is looked at by the next pass), and resolving one that was closed meanwhile
        changes nothing.
        """
        if not dry_run and run.not_taken is None:
            run.not_taken = attention.open_problem_keys(self.engine, _NOT_TAKEN_PREFIX)
        failed: set[str] = set()
        batches = self.connector.pending_batches(kind, run.context())
        try:
            for batch in batches:
                if not self._take(run, batch, report, dry_run):
                    failed.add(not_taken_key(kind, batch.source))
        except LeaseLost:
            _close_quietly(batches)  # its own clean-up may be refused too: the lease is gone
            raise
        if run.not_taken is not None:
            prefix = not_taken_key(kind, "")
            attention.resolve(
                self.engine, {k for k in run.not_taken if k.startswith(prefix)} - failed
            )

    def _take_stock(self, run: _Pass, report: IntakeReport) -> None:
        """Store the stock snapshots the WMS dropped (after the events they may follow)."""
        taken = take_snapshots(
            self.engine, self.connector, run.context(), take=False, guard=self.guard
        )
        report.stock_snapshots.extend(taken.stored)
        report.accepted.extend(taken.accepted)
        report.rejected.extend(taken.rejected)

    # -- products ---------------------------------------------------------------------------

    def _refresh_products(self, run: _Pass, report: IntakeReport, dry_run: bool) -> None:
        context = run.context()  # its cursors hold the master's version (a ``wms.`` cursor)
        known = context.cursors.get(PRODUCTS_CURSOR)
        snapshot = self.connector.product_snapshot(context, known)
        if snapshot is None or snapshot.version == known:
            return
        report.products_updated = True
        run.changed()  # the product codes and the master's version: read again when next lent
        if dry_run:
            report.planned.append(
                f"product master would be replaced by version {snapshot.version} "
                f"({len(snapshot.products)} products)"
            )
        now = utcnow()
        with write_session(self.engine) as session:
            session.execute(delete(WmsProduct))
            session.add_all(
                WmsProduct(
                    product_code=p.product_code,
                    link_code=p.link_code or None,
                    version=snapshot.version,
                    updated_at=now,
                )
                for p in snapshot.products
            )
            _set_cursor(session, PRODUCTS_CURSOR, snapshot.version)
        log.info(
            "product master updated to %s (%d products)", snapshot.version, len(snapshot.products)
        )

    # -- batches ----------------------------------------------------------------------------

    def _take(self, run: _Pass, batch: InboundBatch, report: IntakeReport, dry_run: bool) -> bool:
        """Store one batch's events and settle it; False if it could be neither taken nor
        rejected (then it is reported as an attention item and the next batch goes on).

        Whatever goes wrong with one batch — invalid data, an error writing its report, a
        value the database refuses, running out of memory — rejects that batch with the
        reason. Only a database that cannot be reached at all stops the pass (every batch
        would fail alike; they are taken at the next intake). A batch that changed while it
        was read (:class:`StepNotReady`) is left to the connector to offer again.
        """
        try:
            counts, warehouses = self._store(batch, dry_run)
            if batch.cursor is not None:
                run.changed()  # a cursor the connector is lent moved: read again when next lent
        except BatchRejected as rejection:
            return self._reject(batch, rejection, report, dry_run)
        except StepNotReady as exc:
            log.info("%s not taken yet: %s", batch.source, exc)
            return True
        except _UNREACHABLE:
            raise
        except Exception as exc:
            if not dry_run:  # the file may be gone because the company's new holder took it
                self.guard(f"rejecting {batch.source}")
            log.exception("could not take %s", batch.source)
            return self._reject(batch, _poison(batch.source, exc), report, dry_run)
        if dry_run:
            report.planned.append(
                f"would accept {batch.source}: {counts['new']} new {batch.kind.value}(s), "
                f"{counts['dup']} already known"
            )
            return True
        self.guard(f"filing {batch.source} away")  # stored: the holder files it away
        try:
            batch.commit()
        except Exception as exc:  # stored: taking it again later is a no-op
            return self._not_taken(batch, exc, report)
        report.accepted.append(batch.source)
        report.events += counts["new"]
        report.duplicates += counts["dup"]
        report.warehouses |= warehouses
        log.info(
            "accepted %s: %d new %s event(s), %d duplicate(s)",
            batch.source,
            counts["new"],
            batch.kind.value,
            counts["dup"],
        )
        return True

    def _store(self, batch: InboundBatch, dry_run: bool) -> tuple[dict[str, int], set[str]]:
        """Store the batch's events (and cursor, and accepted record) in one transaction."""
        counts = {"new": 0, "dup": 0}
        warehouses: set[str] = set()
        with write_session(self.engine) as session:
            for chunk in chunked(batch.events(), self.chunk_size):
                new, dup = self._store_chunk(session, batch.source, chunk)
                counts["new"] += new
                counts["dup"] += dup
                warehouses.update(e.warehouse for e in chunk)
            if batch.cursor is not None:
                _set_cursor(session, *batch.cursor)
            if not dry_run:
                session.add(
                    InboxBatch(
                        source=batch.source[:512],
                        kind=batch.kind.value,
                        state=BatchState.ACCEPTED,
                        events=counts["new"],
                        duplicates=counts["dup"],
                    )
                )
        return counts, warehouses

    def _not_taken(self, batch: InboundBatch, exc: Exception, report: IntakeReport) -> bool:
        """A batch that can be neither taken nor rejected: report it for a person; False."""
        log.error("could not take or reject %s: %s: %s", batch.source, type(exc).__name__, exc)
        reason = f"{batch.source} could be neither taken nor rejected: {type(exc).__name__}: {exc}"
        fix = (
            "correct the cause (see the log: permissions, disk space, the file name), or "
            "move the file out of the WMS inbox by hand; the other files go on meanwhile"
        )
        report.failures.append(f"{reason}; {fix}")
        try:
            attention.report(
                self.engine,
                Problem(
                    key=not_taken_key(batch.kind, batch.source),
                    kind=AttentionKind.FILE_NOT_TAKEN,
                    reason=reason,
                    fix=fix,
                    subject=batch.source[:128],
                ),
                source="intake",
            )
        except Exception:
            log.exception("could not record that %s was not taken", batch.source)
        return False

    def _store_chunk(
        self, session: Session, source: str, events: Sequence[WmsEvent]
    ) -> tuple[int, int]:
        prepared = []
        for event in events:
            payload = event_to_json(event)
            prepared.append(
                (
                    event_kind(event).value,
                    bounded(event_external_id(event), _EXTERNAL_ID_LENGTH),
                    event,
                    payload,
                    content_hash(payload),
                )
            )
        ids_by_kind: dict[str, list[str]] = {}
        for kind, external_id, *_ in prepared:
            ids_by_kind.setdefault(kind, []).append(external_id)
        existing = {
            (kind, external_id): (digest, first_source)
            for kind, ids in ids_by_kind.items()
            for external_id, digest, first_source in session.execute(
                select(
                    col(InboxEvent.external_id),
                    col(InboxEvent.content_hash),
                    col(InboxEvent.source),
                )
                .where(col(InboxEvent.kind) == kind)
                .where(col(InboxEvent.external_id).in_(ids))
            )
        }
        conflicts: list[RecordError] = []
        new_rows: list[tuple[Any, ...]] = []
        dup = 0
        now, pending, short_source = utcnow(), EventState.PENDING.value, source[:512]
        for kind, external_id, event, payload, digest in prepared:
            old = existing.get((kind, external_id))
            if len(event.warehouse) > _WAREHOUSE_LENGTH:
                conflicts.append(
                    RecordError(
                        source,
                        (
                            f"{kind} {external_id}: warehouse {event.warehouse[:40]!r}... is "
                            f"longer "
                            f"than {_WAREHOUSE_LENGTH} characters, so it is no configured warehouse"
                        ),
                    )
                )
            elif old is None:
                new_rows.append(
                    (
                        kind,
                        external_id,
                        event.warehouse,
                        digest,
                        payload,
                        short_source,
                        pending,
                        0,
                        now,
                    )
                )
            elif old[0] == digest:
                dup += 1
            else:
                conflicts.append(
                    RecordError(
                        source=source,
                        reason=(
                            f"{kind} {external_id} was already accepted from {old[1]} "
                            "with different content; a confirmed "
                            f"{kind} cannot change — send corrections under a new id"
                        ),
                    )
                )
        if conflicts:
            raise BatchRejected(source, conflicts)
        insert_many(
            session,
            InboxEvent.__table__,  # type: ignore[attr-defined]
            _EVENT_COLUMNS,
            new_rows,
        )
        return len(new_rows), dup

    def _reject(
        self, batch: InboundBatch, rejection: BatchRejected, report: IntakeReport, dry_run: bool
    ) -> bool:
        """Reject the batch with every reason; False (reported) if even that fails."""
        if dry_run:
            report.planned.append(f"would reject {batch.source}: {rejection}")
            return True
        # A worker that lost the company must not report the holder's file as rejected.
        self.guard(f"rejecting {batch.source}")
        try:
            batch.reject(rejection)
            text = "\n".join(str(e) for e in rejection.errors)
            with write_session(self.engine) as session:
                session.add(
                    InboxBatch(
                        source=batch.source[:512],
                        kind=batch.kind.value,
                        state=BatchState.REJECTED,
                        errors=text,
                    )
                )
        except _UNREACHABLE:
            raise
        except Exception as exc:
            return self._not_taken(batch, exc, report)
        report.rejected.append(batch.source)
        log.warning("rejected %s: %s", batch.source, rejection)
        return True


def not_taken_key(kind: EventKind, source: str) -> str:
    """The attention key of a batch that could not be taken (within the key column)."""
    return bounded(f"{AttentionKind.FILE_NOT_TAKEN}:{kind.value}:{source}", 200)


def _poison(source: str, exc: Exception) -> BatchRejected:
    """The rejection of a batch that failed for a reason other than its data's validation."""
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    reason = (
        f"could not be taken ({what[:500]}); nothing of it was stored — correct the file "
        "(or the cause in the log), then `nebridge inbox retry` it"
    )
    return BatchRejected(source, [RecordError(source, reason)])


def _set_cursor(session: Session, name: str, value: str) -> None:
    row = session.get(Cursor, name)
    if row is None:
        session.add(Cursor(name=name, value=value))
    else:
        row.value = value
        row.updated_at = utcnow()
        session.add(row)
