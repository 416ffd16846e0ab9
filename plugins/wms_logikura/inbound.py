"""Confirmed shipments (``/api/v1/shipping_histories``) and receipts
(``/api/v1/receiving_histories``) → inbound batches, one history per batch.

Each intake pass reads the histories dated from the stored window position minus
``overlap_days`` up to today (Japan), page by page. A history becomes one event (its id is
``LK-SH-<id>`` / ``LK-RH-<id>``); the inbox accepts an id with the same content once, so the
overlap never doubles anything. After the histories, one event-less batch carries the new
window position (``InboundBatch.cursor``), stored atomically like any batch.

* A shipment is *from Next Engine* when its ``sales_order.order_number`` is a Next Engine
  order nebridge imported (or the schedule nebridge created for it); any other (wholesale,
  shops) is not.
* Histories at Logikura warehouses not configured in nebridge are not nebridge's business.
* A history naming a product variant the engine does not know yet waits (the window is kept
  open for it) while the product master is read again; one naming a variant Logikura does
  not have either is rejected, like any invalid history, with the reason — and read again by
  id after ``nebridge inbox retry <source>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from hooks.connectors import ConnectorContext, InboundBatch
from hooks.errors import BatchRejected, RecordError
from hooks.records import (
    EventKind,
    ReceiptLine,
    ShipmentLine,
    WmsEvent,
    WmsReceipt,
    WmsShipment,
)
from plugins.wms_logikura.catalog import Catalog, resolve_warehouses
from plugins.wms_logikura.client import Json, LogikuraClient
from plugins.wms_logikura.config import JST, LogikuraConfig
from plugins.wms_logikura.errors import LogikuraRefused
from plugins.wms_logikura.store import LocalStore

TRACKING_MAX = 50
_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True)
class HistoryKind:
    """Where one kind of history lives and how its events are named."""

    kind: EventKind
    path: str
    key: str
    one_key: str
    date_field: str
    source: str
    event_prefix: str
    cursor: str


KINDS: dict[EventKind, HistoryKind] = {
    EventKind.SHIPMENT: HistoryKind(EventKind.SHIPMENT, "/api/v1/shipping_histories",
                                    "shipping_histories", "shipping_history", "shipped_date",
                                    "logikura:shipping_history", "LK-SH-",
                                    "wms.logikura.shipments"),
    EventKind.RECEIPT: HistoryKind(EventKind.RECEIPT, "/api/v1/receiving_histories",
                                   "receiving_histories", "receiving_history", "received_date",
                                   "logikura:receiving_history", "LK-RH-",
                                   "wms.logikura.receipts"),
}


class Problem(Exception):
    """A history that cannot become an event; ``column`` names the field."""

    def __init__(self, reason: str, column: str | None = None) -> None:
        super().__init__(reason)
        self.column = column


class Defer(Exception):
    """A history that must wait (the engine does not know one of its products yet)."""


class UnknownVariant(Exception):
    """A history names a product variant that is not in the catalog."""

    def __init__(self, variant_id: int) -> None:
        super().__init__(variant_id)
        self.variant_id = variant_id


class HistoryBatch:
    """One history (or the window position alone), accepted or rejected as a whole."""

    def __init__(self, source: str, kind: EventKind, events: list[WmsEvent],
                 cursor: tuple[str, str] | None, on_commit: Callable[[], None],
                 on_reject: Callable[[BatchRejected], None],
                 error: BatchRejected | None = None) -> None:
        self.source = source
        self.kind = kind
        self.cursor = cursor
        self._events = events
        self._on_commit = on_commit
        self._on_reject = on_reject
        self._error = error

    def events(self) -> Iterator[WmsEvent]:
        """The history's event, or BatchRejected with its problem."""
        if self._error is not None:
            raise self._error
        yield from self._events

    def commit(self) -> None:
        """The engine stored the event (and the position)."""
        self._on_commit()

    def reject(self, error: BatchRejected) -> None:
        """The engine rejected the batch (invalid, or a conflicting re-delivery)."""
        self._on_reject(error)


def _digest(event: WmsEvent) -> str:
    data = json.dumps(dataclasses.asdict(event), sort_keys=True, ensure_ascii=False,
                      default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _day(value: Any, column: str) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise Problem(f"{column} {value!r} is not a date", column) from None


def _quantity(value: Any, column: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Problem(f"{column} {value!r} is not a whole number", column)
    try:
        number = int(value)
    except ValueError:
        raise Problem(f"{column} {value!r} is not a whole number", column) from None
    if number < 0:
        raise Problem(f"{column} {number} is negative", column)
    return number


class HistoryReader:
    """Turns Logikura histories into inbound batches (see the module docstring)."""

    def __init__(self, config: LogikuraConfig, client: LogikuraClient, store: LocalStore,
                 catalog: Callable[[bool], Catalog], log: _Log) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.catalog = catalog
        self.log = log
        self.delivered: dict[EventKind, dict[str, str]] = {k: {} for k in KINDS}
        self._stock_inventory: dict[int, int] = {}
        self._inventory_warehouse: dict[int, int] = {}

    def batches(self, kind: EventKind, ctx: ConnectorContext) -> Iterator[InboundBatch]:
        """The new or changed histories of ``kind`` in the window, then the new position."""
        spec = KINDS[kind]
        today = ctx.clock().astimezone(JST).date()
        stored = ctx.cursors.get(spec.cursor)
        last = date.fromisoformat(stored) if stored else None
        overlap = timedelta(days=self.config.overlap_days)
        start = min(last - overlap if last else (self.config.start_date or today), today)
        catalog = self.catalog(False)
        ours = self._ours(catalog, ctx)
        records = {int(r["id"]): r for r in self.client.get_all(
            spec.path, spec.key, {f"{spec.date_field}_from": start.isoformat(),
                                  f"{spec.date_field}_to": today.isoformat()})}
        requeued = self._requeued(spec, records)
        rejected = self.store.rejected(spec.source + ":")
        delivered = self.delivered[kind]
        window: set[str] = set()
        waiting: list[date] = []
        refreshed = False
        for hid in sorted(records):
            record = records[hid]
            source = f"{spec.source}:{hid}"
            window.add(source)
            try:
                try:
                    event = self._event(spec, record, catalog, ours, ctx)
                except UnknownVariant:
                    if refreshed:
                        raise
                    catalog, refreshed = self.catalog(True), True
                    ours = self._ours(catalog, ctx)
                    event = self._event(spec, record, catalog, ours, ctx)
            except (UnknownVariant, Problem) as exc:
                if isinstance(exc, UnknownVariant):
                    exc = Problem(f"product variant {exc.variant_id} is not in Logikura's "
                                  "product master", "product_variant_id")
                raw = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
                if source in requeued or rejected.get(source) != raw:
                    yield self._rejected(spec, source, BatchRejected(
                        source, [RecordError(source, str(exc), column=exc.column)]), raw)
                continue
            except Defer as exc:
                self.log.info("%s waits: %s", source, exc)
                waiting.append(_day(record.get(spec.date_field), spec.date_field))
                continue
            if event is None:
                continue
            digest = _digest(event)
            again = source in requeued
            if delivered.get(source) == digest or (not again and rejected.get(source) == digest):
                continue
            yield self._accepted(spec, source, event, digest, again)
        for source in list(delivered):
            if source not in window:
                del delivered[source]
        position = today if not waiting else min(today, min(waiting) + overlap)
        if position.isoformat() != stored:
            yield HistoryBatch(f"{spec.source} window {start}..{today}", kind, [],
                               (spec.cursor, position.isoformat()), lambda: None,
                               lambda error: None)

    def _ours(self, catalog: Catalog, ctx: ConnectorContext) -> dict[int, str]:
        """Logikura warehouse id → nebridge code, for every configured warehouse."""
        resolved = resolve_warehouses(self.config, catalog, ctx.warehouses)
        return {warehouse_id: code for code, warehouse_id in resolved.items()}

    # ---------------------------------------------------------------- batches
    def _accepted(self, spec: HistoryKind, source: str, event: WmsEvent, digest: str,
                  again: bool) -> HistoryBatch:
        def commit() -> None:
            self.delivered[spec.kind][source] = digest
            if again:
                self.store.settle(source)

        def reject(error: BatchRejected) -> None:
            self.store.mark_rejected(source, digest)
            self.log.warning("Logikura history %s", error)

        return HistoryBatch(source, spec.kind, [event], None, commit, reject)

    def _rejected(self, spec: HistoryKind, source: str, error: BatchRejected,
                  digest: str) -> HistoryBatch:
        def reject(rejection: BatchRejected) -> None:
            self.store.mark_rejected(source, digest)
            self.log.warning("Logikura history %s", rejection)

        return HistoryBatch(source, spec.kind, [], None, lambda: None, reject, error)

    def _requeued(self, spec: HistoryKind, records: dict[int, Json]) -> set[str]:
        """Read re-queued histories by id (they may be older than the window)."""
        sources = {s for s in self.store.requeued() if s.startswith(spec.source + ":")}
        for source in sources:
            hid = int(source.rsplit(":", 1)[1])
            if hid in records:
                continue
            try:
                records[hid] = self.client.get(f"{spec.path}/{hid}")[spec.one_key]
            except LogikuraRefused as exc:
                if exc.status != 404:
                    raise
                self.log.warning("%s was re-queued but Logikura no longer has it", source)
                self.store.settle(source)
        return sources

    # ---------------------------------------------------------------- events
    def _event(self, spec: HistoryKind, record: Json, catalog: Catalog,
               ours: Mapping[int, str], ctx: ConnectorContext) -> WmsEvent | None:
        hid = int(record["id"])
        warehouse = self._warehouse(record, ours)
        if warehouse is None:
            return None
        when = datetime.combine(_day(record.get(spec.date_field), spec.date_field),
                                datetime.min.time(), JST)
        if spec.kind is EventKind.SHIPMENT:
            if record.get("shipping_composite_items"):
                raise Problem("set products (shipping_composite_items) are not supported; "
                              "record their components instead", "shipping_composite_items")
            lines = self._lines(record.get("shipping_items"), "shipping_quantity", catalog, ctx)
            if not lines:
                return None
            tracking = str(record.get("tracking_number") or "").strip() or None
            if tracking is not None and len(tracking) > TRACKING_MAX:
                raise Problem(f"tracking number longer than {TRACKING_MAX} characters "
                              "(Next Engine's limit)", "tracking_number")
            number = str((record.get("sales_order") or {}).get("order_number") or "").strip()
            from_ne = bool(number) and (self.store.order_of_schedule(hid) == number
                                        or ctx.is_imported_order(number))
            return WmsShipment(f"{spec.event_prefix}{hid}", warehouse,
                               number if from_ne else None, tracking, when,
                               tuple(ShipmentLine(c, q) for c, q in lines))
        lines = self._lines(record.get("receiving_items"), "stocked_quantity", catalog, ctx)
        if not lines:
            return None
        return WmsReceipt(f"{spec.event_prefix}{hid}", warehouse, when,
                          tuple(ReceiptLine(c, q) for c, q in lines))

    def _lines(self, items: Any, quantity_field: str, catalog: Catalog,
               ctx: ConnectorContext) -> list[tuple[str, int]]:
        if not isinstance(items, list):
            raise Problem("the history has no item list", quantity_field)
        totals: dict[str, int] = {}
        for item in items:
            quantity = _quantity(item.get(quantity_field), quantity_field)
            if quantity == 0:
                continue
            variant = catalog.by_id.get(int(item.get("product_variant_id") or 0))
            if variant is None:
                raise UnknownVariant(int(item.get("product_variant_id") or 0))
            if not ctx.is_known_product(variant.product_code):
                raise Defer(f"product {variant.product_code} is new; it is taken with the "
                            "next product master")
            totals[variant.product_code] = totals.get(variant.product_code, 0) + quantity
        return sorted(totals.items())

    def _warehouse(self, record: Json, ours: Mapping[int, str]) -> str | None:
        """The nebridge code of the history's warehouse; None if not configured here."""
        if record.get("warehouse_id") is not None:
            return ours.get(int(record["warehouse_id"]))
        stocks = {int(p["stock_id"]) for item in record.get("shipping_items") or []
                  for p in item.get("packing_items") or [] if p.get("stock_id") is not None}
        if not stocks:
            raise Problem("the history says neither its warehouse_id nor the stock it was "
                          "packed from", "warehouse_id")
        found = {self._warehouse_of_stock(stock, ours) for stock in sorted(stocks)}
        if len(found) > 1:
            raise Problem("the history was packed from stock at several warehouses",
                          "packing_items")
        warehouse_id = found.pop()
        return None if warehouse_id is None else ours.get(warehouse_id)

    def _warehouse_of_stock(self, stock_id: int, ours: Mapping[int, str]) -> int | None:
        """stock (lot) → inventory (``/stocks/{id}``) → warehouse (the inventory lists of the
        configured warehouses); both cached, the lists read again when an inventory is new."""
        inventory = self._stock_inventory.get(stock_id)
        if inventory is None:
            answer = self.client.get(f"/api/v1/stocks/{stock_id}")
            inventory = self._stock_inventory[stock_id] = int(answer["stock"]["inventory_id"])
        if inventory not in self._inventory_warehouse:
            for warehouse_id in ours:
                for record in self.client.get_all("/api/v1/inventories", "inventories",
                                                  {"warehouse_id": str(warehouse_id)}):
                    self._inventory_warehouse[int(record["id"])] = warehouse_id
        return self._inventory_warehouse.get(inventory)
