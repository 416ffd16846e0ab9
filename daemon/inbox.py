"""The durable inbox: WMS batches accepted whole, once, or rejected whole.

The intake asks the connector for ready batches, stores each batch's events in one
transaction (with the batch's cursor, if any) and only then lets the connector commit the
batch (move the file away, advance its position). Re-delivery of an event with the same id
and content is a no-op; the same id with different content rejects the batch as a conflict
naming both sources.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

from sqlalchemy import Engine, delete, tuple_
from sqlmodel import Session, col, select

from daemon.serialize import content_hash, event_external_id, event_kind, event_to_json
from daemon.store.engine import read_session, write_session
from daemon.store.models import Cursor, InboxBatch, InboxEvent, WmsProduct, utcnow
from hooks.connectors import ConnectorContext, InboundBatch, WmsConnector
from hooks.errors import BatchRejected, RecordError
from hooks.records import EventKind, WmsEvent

log = logging.getLogger(__name__)

PRODUCTS_CURSOR = "wms.products.version"
T = TypeVar("T")


def chunked(items: Iterator[T], size: int) -> Iterator[list[T]]:
    """Split an iterator into lists of at most ``size`` items."""
    while chunk := list(islice(items, size)):
        yield chunk


@dataclass
class IntakeReport:
    """What one intake pass did."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0
    warehouses: set[str] = field(default_factory=set)
    products_updated: bool = False
    planned: list[str] = field(default_factory=list)


class Intake:
    """Moves data from the WMS connector into the durable inbox."""

    def __init__(
        self,
        engine: Engine,
        connector: WmsConnector,
        context: Callable[[], ConnectorContext],
        chunk_size: int = 1000,
    ) -> None:
        self.engine = engine
        self.connector = connector
        self.context = context
        self.chunk_size = chunk_size

    def run_once(self, dry_run: bool = False) -> IntakeReport:
        """Refresh the product master, then take every ready batch of every kind."""
        report = IntakeReport()
        self._refresh_products(report, dry_run)
        for kind in (EventKind.SHIPMENT, EventKind.RECEIPT):
            for batch in self.connector.pending_batches(kind, self.context()):
                self._take(batch, report, dry_run)
        return report

    # -- products ---------------------------------------------------------------------------

    def _refresh_products(self, report: IntakeReport, dry_run: bool) -> None:
        with read_session(self.engine) as session:
            cursor = session.get(Cursor, PRODUCTS_CURSOR)
            known = cursor.value if cursor else None
        snapshot = self.connector.product_snapshot(self.context(), known)
        if snapshot is None or snapshot.version == known:
            return
        report.products_updated = True
        if dry_run:
            report.planned.append(
                f"product master would be replaced by version {snapshot.version} "
                f"({len(snapshot.products)} products)"
            )
            return
        now = utcnow()
        with write_session(self.engine) as session:
            session.execute(delete(WmsProduct))
            session.add_all(
                WmsProduct(product_code=p.product_code, link_code=p.link_code or None,
                           version=snapshot.version, updated_at=now)
                for p in snapshot.products
            )
            _set_cursor(session, PRODUCTS_CURSOR, snapshot.version)
        log.info("product master updated to %s (%d products)", snapshot.version,
                 len(snapshot.products))

    # -- batches ----------------------------------------------------------------------------

    def _take(self, batch: InboundBatch, report: IntakeReport, dry_run: bool) -> None:
        counts = {"new": 0, "dup": 0}
        warehouses: set[str] = set()
        try:
            with write_session(self.engine) as session:
                for chunk in chunked(batch.events(), self.chunk_size):
                    new, dup = self._store_chunk(session, batch.source, chunk)
                    counts["new"] += new
                    counts["dup"] += dup
                    warehouses.update(e.warehouse for e in chunk)
                if batch.cursor is not None:
                    _set_cursor(session, *batch.cursor)
                if dry_run:
                    session.rollback()
                else:
                    session.add(InboxBatch(source=batch.source, kind=batch.kind.value,
                                           state="accepted", events=counts["new"],
                                           duplicates=counts["dup"]))
        except BatchRejected as rejection:
            self._reject(batch, rejection, report, dry_run)
            return
        if dry_run:
            report.planned.append(
                f"would accept {batch.source}: {counts['new']} new {batch.kind.value}(s), "
                f"{counts['dup']} already known"
            )
            return
        batch.commit()
        report.accepted.append(batch.source)
        report.events += counts["new"]
        report.duplicates += counts["dup"]
        report.warehouses |= warehouses
        log.info("accepted %s: %d new %s event(s), %d duplicate(s)", batch.source,
                 counts["new"], batch.kind.value, counts["dup"])

    def _store_chunk(
        self, session: Session, source: str, events: Sequence[WmsEvent]
    ) -> tuple[int, int]:
        prepared = []
        for event in events:
            payload = event_to_json(event)
            prepared.append((event_kind(event).value, event_external_id(event), event,
                             payload, content_hash(payload)))
        keys = [(k, x) for k, x, *_ in prepared]
        existing = {
            (row.kind, row.external_id): row
            for row in session.scalars(
                select(InboxEvent).where(
                    tuple_(col(InboxEvent.kind), col(InboxEvent.external_id)).in_(keys)
                )
            )
        }
        conflicts: list[RecordError] = []
        new_rows: list[InboxEvent] = []
        dup = 0
        for kind, external_id, event, payload, digest in prepared:
            old = existing.get((kind, external_id))
            if old is None:
                new_rows.append(InboxEvent(kind=kind, external_id=external_id,
                                           warehouse=event.warehouse, content_hash=digest,
                                           payload=payload, source=source[:512]))
            elif old.content_hash == digest:
                dup += 1
            else:
                conflicts.append(RecordError(
                    source=source,
                    reason=(f"{kind} {external_id} was already accepted from {old.source} "
                            "with different content; a confirmed "
                            f"{kind} cannot change — send corrections under a new id"),
                ))
        if conflicts:
            raise BatchRejected(source, conflicts)
        session.add_all(new_rows)
        session.flush()
        return len(new_rows), dup

    def _reject(
        self, batch: InboundBatch, rejection: BatchRejected, report: IntakeReport, dry_run: bool
    ) -> None:
        if dry_run:
            report.planned.append(f"would reject {batch.source}: {rejection}")
            return
        batch.reject(rejection)
        text = "\n".join(str(e) for e in rejection.errors)
        with write_session(self.engine) as session:
            session.add(InboxBatch(source=batch.source, kind=batch.kind.value,
                                   state="rejected", errors=text))
        report.rejected.append(batch.source)
        log.warning("rejected %s: %s", batch.source, rejection)


def _set_cursor(session: Session, name: str, value: str) -> None:
    row = session.get(Cursor, name)
    if row is None:
        session.add(Cursor(name=name, value=value))
    else:
        row.value = value
        row.updated_at = utcnow()
        session.add(row)
