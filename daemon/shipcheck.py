"""Whether a WMS shipment may ship a Next Engine order, for every connector.

Next Engine has no partial 出荷確定: shipping an order (status 50) takes the whole order's
goods off Next Engine stock. So a shipment ships an order only if it carries exactly the
products and quantities nebridge instructed for it (summed per WMS product code; the
instruction is read from its recorded batch), and only once:

- **a partial shipment** (less than ordered, nothing else) is held with what was shipped and
  what was not. When later shipments of the same order, held the same way, together carry
  exactly the order, the last of them ships the order once and the earlier ones are marked
  processed ("shipped together with …"). Their sum never ships more or less than ordered;
- **a shipment with products or quantities the order does not have** (alone or together with
  the held partial ones) is held with the difference;
- **a second shipment** of an order already decided to ship (its ``ship:<order>`` action is in
  the outbox, or an earlier event of the same chunk ships it) is held with its tracking number
  and the first shipment, never dropped silently.

``nebridge inbox retry --event shipment:ID`` of an event held by these checks is the admin's
confirmation: the event is processed as it is (a mismatching shipment ships its order — after
the order was split or edited in Next Engine to match; a second shipment is acknowledged and
changes nothing in Next Engine). Orders nebridge did not instruct (``ship_unimported_orders``)
have no instruction to compare with: only the second-shipment rule applies to them.

Everything is looked up once per chunk of events: the instructed orders, the ship actions
already decided, and the instruction batches (parsed once and kept for the next chunks).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlmodel import col

from daemon.store.engine import Bind, read_session
from daemon.store.models import (
    EventState,
    ImportedOrder,
    InboxEvent,
    InstructionBatchRecord,
    OutboxItem,
)
from hooks.records import WmsShipment

#: ``last_error`` of a held event the admin retried after one of these checks held it.
CONFIRMED = "confirmed by the admin (`nebridge inbox retry`): "
#: How the reasons of these holds start (so a retry can tell them from other holds).
PARTIAL = "partial shipment of Next Engine order "
MISMATCH = "shipment does not match Next Engine order "
SECOND = "second shipment of Next Engine order "
_REASONS = (PARTIAL, MISMATCH, SECOND)
#: Orders of instruction batches kept parsed between chunks (about 100 bytes each).
_ORDERS_KEPT = 100_000

Quantities = dict[str, int]


def confirmed_reason(last_error: str | None) -> str | None:
    """What a retried held event's ``last_error`` becomes: the confirmation mark when these
    checks held it (so the pipeline takes it as it is), else None."""
    if last_error and last_error.startswith(_REASONS):
        return CONFIRMED + last_error
    return None


def summed(lines: Iterable[tuple[str, int]]) -> Quantities:
    """Quantities per product code (lines of the same product added up, zeros left out)."""
    out: Quantities = {}
    for product, quantity in lines:
        out[product] = out.get(product, 0) + quantity
    return {p: q for p, q in out.items() if q}


def describe(quantities: Mapping[str, int]) -> str:
    """``A ×2, B ×1`` (sorted), or ``nothing``."""
    return ", ".join(f"{p} ×{q}" for p, q in sorted(quantities.items())) or "nothing"


class InstructedLines:
    """The instructed quantities of orders, read from their instruction batches; the batches
    last used stay parsed, up to about ``_ORDERS_KEPT`` orders (a batch never changes once
    recorded)."""

    def __init__(self, engine: Bind) -> None:
        self._engine = engine
        self._batches: OrderedDict[str, dict[str, Quantities]] = OrderedDict()

    def of(self, wanted: Mapping[str, str]) -> dict[str, Quantities]:
        """The instructed quantities of each order of ``wanted`` (order → batch key)."""
        keys = set(wanted.values())
        missing = [k for k in keys if k not in self._batches]
        if missing:
            with read_session(self._engine) as session:
                for key, orders in session.execute(
                    select(
                        col(InstructionBatchRecord.key), col(InstructionBatchRecord.orders)
                    ).where(col(InstructionBatchRecord.key).in_(missing))
                ):
                    self._batches[key] = {
                        o["ne_order_id"]: summed(
                            (x["product_code"], int(x["quantity"])) for x in o["lines"]
                        )
                        for o in json.loads(orders)
                    }
        for key in keys:
            if key in self._batches:
                self._batches.move_to_end(key)
        out = {
            order: self._batches[key][order]
            for order, key in wanted.items()
            if order in self._batches.get(key, {})
        }
        while len(self._batches) > 1 and sum(len(b) for b in self._batches.values()) > _ORDERS_KEPT:
            self._batches.popitem(last=False)
        return out


@dataclass
class Verdict:
    """What the check decided for one order a shipment ships."""

    #: Why the event is held ("" when it may ship, or ``leave`` it).
    hold: str = ""
    #: An acknowledged second shipment: the order is not shipped again (nothing is sent).
    leave: bool = False
    #: Held events of the same order this shipment ships together with (marked processed).
    together: list[tuple[int, str]] = field(default_factory=list)
    notice: str = ""


class ShipmentCheck:
    """The checks for one chunk of shipment events of one warehouse."""

    def __init__(
        self, engine: Bind, warehouse: str, orders: set[str], instructed: InstructedLines
    ) -> None:
        self._engine = engine
        self._warehouse = warehouse
        self._instructed = instructed
        self._asked: set[str] = set()
        self._ordered: dict[str, Quantities] = {}
        self._shipped_by: dict[str, str] = {}
        #: Partial shipments held in this chunk, per order: (event id, external id, lines).
        self._partials: dict[str, list[tuple[int, str, Quantities]]] = {}
        self._load(orders)

    def _load(self, orders: set[str]) -> None:
        ids = sorted(orders - self._asked)
        if not ids:
            return
        self._asked |= set(ids)
        with read_session(self._engine) as session:
            batches = {
                o: b
                for o, b in session.execute(
                    select(col(ImportedOrder.ne_order_id), col(ImportedOrder.instruction_batch))
                    .where(col(ImportedOrder.ne_order_id).in_(ids))
                    .where(col(ImportedOrder.warehouse) == self._warehouse)
                    .where(col(ImportedOrder.instruction_batch).is_not(None))
                )
            }
            for key, payload in session.execute(
                select(col(OutboxItem.idempotency_key), col(OutboxItem.payload)).where(
                    col(OutboxItem.idempotency_key).in_([f"ship:{i}" for i in ids])
                )
            ):
                source = str(json.loads(payload).get("source_event") or "an earlier event")
                self._shipped_by[key.removeprefix("ship:")] = source
        self._ordered.update(self._instructed.of(batches))

    def check(self, event_id: int, event: WmsShipment, order: str, confirmed: bool) -> Verdict:
        """The verdict for ``event`` shipping ``order``; an order that may ship is noted as
        shipped for the rest of the chunk."""
        self._load({order})
        source = f"shipment:{event.shipment_id}"
        first = self._shipped_by.get(order)
        if first is not None and first != source:
            if confirmed:
                return Verdict(
                    leave=True,
                    notice=(
                        f"second shipment of order {order} acknowledged by the admin; Next Engine "
                        f"was not changed (the order was shipped by {first})"
                    ),
                )
            return Verdict(
                hold=(
                    f"{SECOND}{order} (tracking number {event.tracking_number or 'none'}, "
                    f"warehouse {event.warehouse}); the order is already shipped by {first}, so "
                    "nothing was changed in Next Engine. Fix: if these are more parcels of the "
                    f"same order, add the tracking number to order {order}'s note (備考) in Next "
                    "Engine by hand (it has one 発送伝票番号 field), then `nebridge inbox retry "
                    f"--event {source}` acknowledges this shipment (nothing is sent)"
                )
            )
        ordered = self._ordered.get(order)
        shipped = summed((line.product_code, line.quantity) for line in event.lines)
        verdict = Verdict()
        if ordered is not None and shipped != ordered and not confirmed:
            verdict = self._compare(event_id, event, order, ordered, shipped)
        if not verdict.hold:
            self._shipped_by[order] = source
        return verdict

    def _compare(
        self,
        event_id: int,
        event: WmsShipment,
        order: str,
        ordered: Quantities,
        shipped: Quantities,
    ) -> Verdict:
        """The verdict on a shipment that alone does not carry the order."""
        source = f"shipment:{event.shipment_id}"
        others = self._held_partials(order) if _within(shipped, ordered) else []
        total = summed(
            [*((p, q) for _, _, lines in others for p, q in lines.items()), *shipped.items()]
        )
        names = ", ".join(f"shipment:{x}" for _, x, _ in others)
        with_others = f" (together with held {names})" if others else ""
        if total == ordered:
            return Verdict(
                together=[(i, x) for i, x, _ in others],
                notice=(
                    f"order {order} shipped by {source} together with {names}, which together "
                    "carry exactly the order"
                ),
            )
        extra = {p: q - ordered.get(p, 0) for p, q in total.items() if q > ordered.get(p, 0)}
        short = {p: q - total.get(p, 0) for p, q in ordered.items() if total.get(p, 0) < q}
        if extra:
            return Verdict(
                hold=(
                    f"{MISMATCH}{order}: it shipped {describe(shipped)}{with_others}, the order "
                    f"has {describe(ordered)} — more than ordered: {describe(extra)}"
                    + (f"; missing: {describe(short)}" if short else "")
                    + "; nothing was changed in Next Engine. Fix: if the shipment names the wrong "
                    "order, ship the right order in Next Engine by hand and correct the stock "
                    "there; if the order really changed, edit order "
                    f"{order} in Next Engine to what was shipped, then `nebridge inbox retry "
                    f"--event {source}` ships it as it is"
                )
            )
        self._partials.setdefault(order, []).append((event_id, event.shipment_id, shipped))
        return Verdict(
            hold=(
                f"{PARTIAL}{order}: shipped {describe(shipped)}{with_others}, not shipped "
                f"{describe(short)} (ordered {describe(ordered)}); Next Engine has no partial "
                "出荷確定, so the order was not shipped and its stock not moved. Fix: ship "
                "the rest in the WMS — a later shipment with the rest ships the order once, "
                f"together with this one; or split order {order} in Next Engine (受注分割) so "
                "it holds exactly what was shipped, then "
                f"`nebridge inbox retry --event {source}` ships it"
            )
        )

    def _held_partials(self, order: str) -> list[tuple[int, str, Quantities]]:
        """Shipments of ``order`` held as partial (stored, or earlier in this chunk)."""
        found = {i: (i, x, q) for i, x, q in self._partials.get(order, [])}
        with read_session(self._engine) as session:
            for event_id, external_id, payload in session.execute(
                select(col(InboxEvent.id), col(InboxEvent.external_id), col(InboxEvent.payload))
                .where(col(InboxEvent.state) == EventState.HELD.value)
                .where(col(InboxEvent.warehouse) == self._warehouse)
                .where(col(InboxEvent.kind) == "shipment")
                .where(col(InboxEvent.last_error).startswith(f"{PARTIAL}{order}:", autoescape=True))
            ):
                data = json.loads(payload)
                if str(data.get("ne_order_id") or "") != order or event_id is None:
                    continue
                found[event_id] = (
                    event_id,
                    external_id,
                    summed(
                        (x["product_code"], int(x["quantity"])) for x in data.get("lines") or ()
                    ),
                )
        return sorted(found.values())


def _within(shipped: Quantities, ordered: Quantities) -> bool:
    """True when ``shipped`` has no product or quantity beyond ``ordered``."""
    return all(q <= ordered.get(p, 0) for p, q in shipped.items())
