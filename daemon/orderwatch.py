"""Order watch (plugin ``order_watch``): instructed orders that change in Next Engine.

An order nebridge instructed and that is not shipped yet is watched. It is *cancelled* when
``receive_order_cancel_type_id`` ≠ 0, *deleted* when ``receive_order_deleted_flag`` = 1, and
*edited* when the instruction nebridge would send now differs from the one it sent (rows,
goods, quantities, consignee, delivery method). Nebridge's own writes (status, tracking
number, claim tag) and fields the warehouse never sees are therefore never edits.

The watch costs no Next Engine call of its own: the order import's cursor search is widened
to every order of the warehouse's shops modified since the cursor (status and cancellation are
then checked here, not in the search), and the rows it returns feed both import and watch.

Nothing lost, nothing doubled: a change is recorded (``order_change``, state ``pending``, with
its cancellation batch key) and the order's state moved in one transaction *before* the
connector is told; a crash before the connector answered delivers the same batch again under
the same key at the next run. Pending cancellations of a warehouse are always pushed before
any order batch of it, so the WMS never gets an edited order's new content before the
cancellation of the old one, and an edited order is re-instructed only once its cancellation
was accepted (state ``reinstruct`` until then). What the WMS refuses to drop (picking
started) waits in ``nebridge attention`` and the order stays watched.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from daemon import attention
from daemon.outbox import insert_ignoring_duplicates, outbox_row
from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import (
    AttentionProblem,
    ChangeState,
    ImportedOrder,
    ImportState,
    InboxEvent,
    InstructionBatchRecord,
    OrderChange,
    OutboxItem,
)
from hooks.actions import ADJUST_STOCK, SHIP_ORDER, SUBJECT_LENGTH, PlannedItem
from hooks.connectors import (
    CancellationBatch,
    CancellingConnector,
    ConnectorContext,
    OrderCancellation,
    WmsConnector,
)
from hooks.errors import CancellationsRefused
from hooks.records import OrderInstruction, Problem

log = logging.getLogger(__name__)

PLUGIN = "order_watch"
#: ``ImportedOrder.state`` of an order cancelled or deleted in Next Engine after import.
CANCELLED = ImportState.CANCELLED
#: ``ImportedOrder.state`` of an edited order whose cancellation the WMS accepted: its new
#: content is instructed at the next order import.
REINSTRUCT = ImportState.REINSTRUCT
#: Fields of an instruction that matter to the warehouse, with the words shown for each.
COMPARED = {
    "delivery_method": "delivery method",
    "consignee_name": "consignee name",
    "consignee_zip": "postal code",
    "consignee_address": "address",
    "consignee_tel": "telephone",
}
#: ``OrderChange.state`` values.
PENDING, SENT, REFUSED, MANUAL = (
    ChangeState.PENDING,
    ChangeState.SENT,
    ChangeState.REFUSED,
    ChangeState.MANUAL,
)
#: The attention kind of every watch problem (a person must stop or decide an order).
KIND = attention.AttentionKind.ORDER_CHANGED


def stop_key(ne_order_id: str) -> str:
    """Attention key: the WMS could not drop the order; a person must stop it."""
    return f"order_watch:stop:{ne_order_id}"


@dataclass(frozen=True, slots=True)
class Change:
    """A change found on one watched order."""

    ne_order_id: str
    kind: str  # cancelled | edited | deleted
    detail: str
    last_modified: str


def compare(sent: OrderInstruction, now: OrderInstruction) -> str:
    """What differs between the sent instruction and the one Next Engine gives now, in words
    ("" when nothing that matters to the warehouse changed)."""
    diffs = [
        f"{words} {getattr(sent, name)!r} → {getattr(now, name)!r}"
        for name, words in COMPARED.items()
        if getattr(sent, name) != getattr(now, name)
    ]
    old = {(x.product_code, x.ne_goods_code): x.quantity for x in sent.lines}
    new = {(x.product_code, x.ne_goods_code): x.quantity for x in now.lines}
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key, 0), new.get(key, 0)
        if before != after:
            diffs.append(f"{key[1]} quantity {before} → {after}")
    return "; ".join(diffs)


class OrderWatch:
    """Detects changes of one warehouse's instructed orders and tells its WMS."""

    def __init__(
        self,
        engine: Bind,
        connector: WmsConnector,
        connector_context: Callable[[], ConnectorContext],
        clock: Callable[[], datetime],
        guard: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.connector = connector
        self.connector_context = connector_context
        self.clock = clock
        #: Raises once this process may no longer write into the company's WMS.
        self.guard = guard

    # -- detecting --------------------------------------------------------------------------

    def watched(self, code: str, ids: Sequence[str]) -> dict[str, ImportedOrder]:
        """The instructed (or to-be-reinstructed) orders of ``code`` among ``ids``."""
        out: dict[str, ImportedOrder] = {}
        with read_session(self.engine) as session:
            for i in range(0, len(ids), 500):
                for row in session.scalars(
                    select(ImportedOrder)
                    .where(col(ImportedOrder.ne_order_id).in_(ids[i : i + 500]))
                    .where(col(ImportedOrder.warehouse) == code)
                    .where(col(ImportedOrder.state).in_(("instructed", REINSTRUCT)))
                ):
                    session.expunge(row)
                    out[row.ne_order_id] = row
        return out

    def reinstruct_ids(self, code: str) -> list[str]:
        """Edited orders of ``code`` whose cancellation was accepted, not re-instructed yet."""
        with read_session(self.engine) as session:
            return sorted(
                session.scalars(
                    select(col(ImportedOrder.ne_order_id))
                    .where(col(ImportedOrder.warehouse) == code)
                    .where(col(ImportedOrder.state) == REINSTRUCT)
                )
            )

    def sent_instructions(self, rows: Sequence[ImportedOrder]) -> dict[str, OrderInstruction]:
        """The instruction each order was last sent with, read from its batch."""
        from daemon.importer import instruction_from  # here: the importer imports this module

        wanted: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            if row.instruction_batch:
                wanted[row.instruction_batch].add(row.ne_order_id)
        out: dict[str, OrderInstruction] = {}
        with read_session(self.engine) as session:
            for key, ids in wanted.items():
                record = session.get(InstructionBatchRecord, key)
                if record is None:
                    continue
                for data in json.loads(record.orders):
                    if data["ne_order_id"] in ids:
                        out[data["ne_order_id"]] = instruction_from(data)
        return out

    @staticmethod
    def status_change(base: Mapping[str, str | None]) -> str:
        """``cancelled``/``deleted`` when Next Engine says so, else ""."""
        if str(base.get("receive_order_deleted_flag") or "0") not in ("", "0"):
            return "deleted"
        if str(base.get("receive_order_cancel_type_id") or "0") not in ("", "0"):
            return "cancelled"
        return ""

    # -- recording --------------------------------------------------------------------------

    def record(self, code: str, changes: Sequence[Change]) -> None:
        """Store the changes (pending) and move each order out of ``instructed``, at once."""
        if not changes:
            return
        now = self.clock()
        key = f"cancel-{code}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        with write_session(self.engine) as session:
            for change in changes:
                session.add(
                    OrderChange(
                        ne_order_id=change.ne_order_id,
                        warehouse=code,
                        kind=change.kind,
                        detail=change.detail,
                        ne_last_modified=change.last_modified,
                        state=PENDING,
                        batch=key,
                        detected_at=now,
                    )
                )
                row = session.get(ImportedOrder, change.ne_order_id)
                if row is not None:
                    row.ne_last_modified, row.updated_at = change.last_modified, now
                    if change.kind != "edited":
                        row.state = CANCELLED
                        row.hold_reason = f"{change.kind} in Next Engine: {change.detail}"
                    session.add(row)
        for change in changes:
            log.info(
                "warehouse=%s order %s %s in Next Engine: %s",
                code,
                change.ne_order_id,
                change.kind,
                change.detail,
            )

    @staticmethod
    def link_reinstruction(session: Any, ids: Sequence[str], key: str) -> None:
        """Inside the import's transaction: note that the edited orders among ``ids`` are
        re-instructed in batch ``key`` (for history)."""
        reinstructed = list(
            session.scalars(
                select(col(ImportedOrder.ne_order_id))
                .where(col(ImportedOrder.ne_order_id).in_(ids))
                .where(col(ImportedOrder.state) == REINSTRUCT)
            )
        )
        if not reinstructed:
            return
        for change in session.scalars(
            select(OrderChange)
            .where(col(OrderChange.ne_order_id).in_(reinstructed))
            .where(col(OrderChange.kind) == "edited")
            .where(col(OrderChange.state) == SENT)
            .where(col(OrderChange.reinstruction).is_(None))
        ):
            change.reinstruction = key
            session.add(change)

    # -- telling the WMS --------------------------------------------------------------------

    def deliver(self, code: str, notices: list[str], failures: list[str]) -> bool:
        """Push every pending cancellation batch of ``code``, oldest first; True when none is
        left pending (order batches may go out)."""
        with read_session(self.engine) as session:
            pending = list(
                session.scalars(
                    select(OrderChange)
                    .where(col(OrderChange.warehouse) == code)
                    .where(col(OrderChange.state) == PENDING)
                    .order_by(col(OrderChange.id))
                )
            )
            for row in pending:
                session.expunge(row)
        batches: dict[str, list[OrderChange]] = defaultdict(list)
        for row in pending:
            batches[row.batch].append(row)
        done = True
        for key, rows in batches.items():
            done = self._push(code, key, rows, notices, failures) and done
        return done

    def _push(
        self, code: str, key: str, rows: list[OrderChange], notices: list[str], failures: list[str]
    ) -> bool:
        batch = CancellationBatch(
            key=key,
            created_at=rows[0].detected_at,
            cancellations=[
                OrderCancellation(r.ne_order_id, code, r.kind, r.detected_at)  # type: ignore[arg-type]
                for r in rows
            ],
        )
        refused: dict[str, str] = {}
        if not isinstance(self.connector, CancellingConnector):
            self._settle(code, rows, {r.ne_order_id: "" for r in rows}, manual=True)
            notices.extend(
                f"order {r.ne_order_id} {r.kind} in Next Engine: stop it in the "
                "WMS by hand (the connector cannot cancel)"
                for r in rows
            )
            return True
        if self.guard is not None:
            self.guard(f"cancellations {batch.key}")
        try:
            self.connector.push_cancellations(batch, self.connector_context())
        except CancellationsRefused as exc:
            refused = {
                oid: why for oid, why in exc.refused.items() if oid in {r.ne_order_id for r in rows}
            }
        except Exception as exc:  # pushed again at the next run, under the same key
            log.error("cancellations %s not delivered: %s", key, exc)
            failures.append(
                f"cancellations {key} not delivered to the WMS yet: {exc}; "
                "every run tries again, order batches wait until they are"
            )
            return False
        self._settle(code, rows, refused, manual=False)
        for row in rows:
            if row.ne_order_id in refused:
                notices.append(
                    f"order {row.ne_order_id} {row.kind} in Next Engine, but the "
                    f"WMS refused to drop it: {refused[row.ne_order_id]}"
                )
            else:
                notices.append(
                    f"order {row.ne_order_id} {row.kind} in Next Engine: the WMS "
                    "was told to drop it"
                )
        return True

    def _settle(
        self, code: str, rows: list[OrderChange], refused: Mapping[str, str], manual: bool
    ) -> None:
        """Record what the WMS answered; an accepted edit becomes ``reinstruct``; a refused or
        manual one is put in front of a person, and the order stays watched."""
        now = self.clock()
        with write_session(self.engine) as session:
            for row in rows:
                change = session.get(OrderChange, row.id)
                if change is None or change.state != PENDING:
                    continue
                order = session.get(ImportedOrder, row.ne_order_id)
                if row.ne_order_id in refused:
                    change.state = MANUAL if manual else REFUSED
                    change.wms_answer = refused[row.ne_order_id] or None
                    attention.report_in(
                        session,
                        self._stop_problem(code, change, refused[row.ne_order_id], manual),
                        PLUGIN,
                        now,
                    )
                else:
                    change.state = SENT
                    if row.kind == "edited" and order is not None:
                        order.state, order.updated_at = REINSTRUCT, now
                        order.hold_reason = f"edited in Next Engine: {row.detail}"
                        session.add(order)
                change.sent_at = now
                session.add(change)

    @staticmethod
    def _stop_problem(code: str, change: OrderChange, answer: str, manual: bool) -> Problem:
        at = change.detected_at.strftime("%Y-%m-%d %H:%M UTC")
        what = {"edited": "edited", "deleted": "deleted"}.get(change.kind, "cancelled")
        said = (
            " (the WMS connector cannot cancel orders)"
            if manual
            else f" (the WMS refused: {answer})"
        )
        follow = (
            " its new content is not sent while the old one may be picked;"
            if change.kind == "edited"
            else ""
        )
        return Problem(
            key=stop_key(change.ne_order_id),
            kind=KIND,
            reason=(
                f"stop picking order {change.ne_order_id} in {code}: {what} in Next Engine "
                f"at {at}{said};{follow} {change.detail}".rstrip("; ")
            ),
            fix=(
                f"stop order {change.ne_order_id} in the WMS by hand; if it ships anyway "
                "nebridge never ships it in Next Engine and shows the shipment here. "
                f"`nebridge history --order {change.ne_order_id}` shows what happened; "
                f"`nebridge orders stopped {change.ne_order_id}` once it is stopped"
            ),
            warehouse=code,
            subject=change.ne_order_id,
        )


def order_changes(engine: Bind, ne_order_id: str) -> list[OrderChange]:
    """Every change found on one order, oldest first (``history --order``)."""
    with read_session(engine) as session:
        rows = list(
            session.scalars(
                select(OrderChange)
                .where(col(OrderChange.ne_order_id) == ne_order_id)
                .order_by(col(OrderChange.id))
            )
        )
        for row in rows:
            session.expunge(row)
    return rows


def counts(engine: Bind) -> dict[str, dict[str, int]]:
    """Changes found per warehouse and kind (``status``, metrics)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    with read_session(engine) as session:
        for warehouse, kind, n in session.execute(
            select(col(OrderChange.warehouse), col(OrderChange.kind), func.count()).group_by(
                col(OrderChange.warehouse), col(OrderChange.kind)
            )
        ).all():
            out[warehouse][kind] = int(n)
    return dict(out)


def as_dict(change: OrderChange) -> dict[str, Any]:
    """JSON view of one change."""
    return {
        "ne_order_id": change.ne_order_id,
        "warehouse": change.warehouse,
        "kind": change.kind,
        "detail": change.detail,
        "state": change.state,
        "batch": change.batch,
        "reinstruction": change.reinstruction,
        "wms_answer": change.wms_answer,
        "detected_at": change.detected_at.isoformat(),
        "sent_at": change.sent_at.isoformat() if change.sent_at else None,
    }


# -- goods shipped for an order cancelled in Next Engine ---------------------------------------


def shipped_key(ne_order_id: str) -> str:
    """Attention key: goods left the warehouse for an order cancelled in Next Engine."""
    return f"order_watch:shipped:{ne_order_id}"


class ShippedAnywayError(Exception):
    """``orders shipped-anyway`` cannot act; the message says why and what to do."""


def report_shipped_cancelled(engine: Bind, items: Sequence[OutboxItem]) -> None:
    """Put each shipment of an order cancelled in Next Engine in front of a person: the goods
    physically left, Next Engine shipped nothing, so its stock still counts them. The person
    decides with ``nebridge orders shipped-anyway``."""
    if not items:
        return
    with write_session(engine) as session:
        for item in items:
            event = session.get(InboxEvent, item.event_id) if item.event_id else None
            if event is None:
                continue
            lines = json.loads(event.payload)["lines"]
            shown = ", ".join(f"{x['product_code']} ×{x['quantity']}" for x in lines)
            oid = item.subject
            attention.resolve_in(session, [stop_key(oid)])
            attention.report_in(
                session,
                Problem(
                    key=shipped_key(oid),
                    kind=KIND,
                    reason=(
                        f"goods left {item.warehouse} for order {oid}, which was cancelled in "
                        f"Next Engine: shipment {event.external_id} ({shown}). Next Engine did "
                        "not ship the order, so its stock still counts these goods"
                    ),
                    fix=(
                        f"if the goods left for good, `nebridge orders shipped-anyway {oid} "
                        "--apply-stock` takes them off Next Engine stock (once); if they came "
                        f"back, `nebridge orders shipped-anyway {oid} --leave-stock`"
                    ),
                    warehouse=item.warehouse,
                    subject=oid,
                ),
                PLUGIN,
            )


def shipped_anyway(
    engine: Bind,
    ne_order_id: str,
    apply_stock: bool,
    linked: set[str],
    clock: Callable[[], datetime],
) -> str:
    """The admin's decision on goods shipped for a cancelled order: ``apply_stock`` queues one
    ``adjust_stock`` action per product (idempotency key per shipment and product: applied
    once however often asked), else the stock is left as it is. Closes the attention item."""
    now = clock()
    with write_session(engine) as session:
        problem = session.get(AttentionProblem, shipped_key(ne_order_id))
        if problem is None or problem.state != "open":
            raise ShippedAnywayError(
                f"no shipment of a cancelled order waits for a decision on order "
                f"{ne_order_id}; `nebridge attention` lists what waits"
            )
        items = list(
            session.scalars(
                select(OutboxItem)
                .where(col(OutboxItem.kind) == SHIP_ORDER.name)
                .where(col(OutboxItem.subject) == ne_order_id)
            )
        )
        events = [session.get(InboxEvent, i.event_id) for i in items if i.event_id]
        rows = []
        for item, event in zip(items, events, strict=True):
            if event is None or not apply_stock:
                continue
            if item.warehouse not in linked:
                raise ShippedAnywayError(
                    f"warehouse {item.warehouse} is not linked to Next Engine stock "
                    "(warehouses[].ne_linked): there is no stock to change; use --leave-stock"
                )
            for line in json.loads(event.payload)["lines"]:
                product = str(line["product_code"])
                rows.append(
                    outbox_row(
                        PlannedItem(
                            kind=ADJUST_STOCK.name,
                            key=ADJUST_STOCK.reversal_key(event.external_id, product),
                            subject=product[:SUBJECT_LENGTH],
                            plugin=PLUGIN,
                            payload={
                                "product_code": product,
                                "delta": -int(line["quantity"]),
                                "source_event": f"shipment:{event.external_id}",
                            },
                        ),
                        item.warehouse,
                        event.id,
                        now,
                    )
                )
        added = insert_ignoring_duplicates(session, rows)
        attention.resolve_in(session, [shipped_key(ne_order_id)], now)
    if apply_stock:
        return (
            f"order {ne_order_id}: {added} stock change(s) queued for Next Engine (the "
            "next dispatch applies them; `nebridge outbox list` shows them)"
        )
    return f"order {ne_order_id}: Next Engine stock left as it is"


def stopped(engine: Bind, ne_order_id: str) -> str:
    """The admin stopped the order in the WMS by hand: close its "stop picking" item."""
    if not attention.resolve(engine, [stop_key(ne_order_id)]):
        raise ShippedAnywayError(
            f"order {ne_order_id} is not waiting to be stopped in the WMS; `nebridge "
            "attention` lists what waits"
        )
    return (
        f"order {ne_order_id} noted as stopped in the WMS; should it ship anyway, "
        "nebridge still never ships it in Next Engine and shows the shipment"
    )
