"""Confirmed shipments (``/api/v1/shipping_histories``) and receipts
(``/api/v1/receiving_histories``) → inbound batches, one history per batch.

**What is read.** Logikura's history lists filter only by shipped/received date, and a
history can be entered with a date in the past (a backdated receipt or direct shipment). So
each kind is read over a *wide* date window — from ``lookback_days`` before the last sweep
(never before ``start_date``) with no end date — and read *by what changed*: the list answers
in the order the histories were entered, so a poll re-reads only the last page it reached and
the pages after it. If that page no longer starts with the histories it held, something was
inserted or deleted before it and the whole window is read again at once; the whole window is
also read every ``sweep_hours`` (and when the warehouses change) as a safety net, which also
notices deleted schedules and receipts — after the new histories are delivered, so they never
wait for a sweep. A history dated more than ``lookback_days`` before
the day it was entered is the one thing this cannot see (documented bound). The position is
carried by an event-less batch (``InboundBatch.cursor``) stored atomically like any batch.

**What a shipment is.** Each history becomes one event (``LK-SH-<id>`` / ``LK-RH-<id>``). A
shipment belongs to a Next Engine order by the record nebridge kept when it created the
schedule (schedule id → order), never by Logikura's editable order number; a history without
a schedule of nebridge's is an order's shipment only if its number is an order nebridge
imported and no other history shipped that order. Anything nebridge cannot apply exactly as
the warehouse did is *held* and put in front of a person (``ctx.report_problem``) with the
facts and what to do — a renumbered or blanked schedule, a partial shipment (Next Engine has
no partial 出荷確定), a second shipment of an order, an order's shipment from a warehouse
``daemon.yaml`` does not list, a tracking number changed after delivery, a deleted receipt or
schedule. ``nebridge inbox retry <source>`` takes a held history as the admin confirmed it.

**What is refused.** A history that is not a valid completed record (see :func:`_check`) is
rejected alone with its id and the reason; the others flow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import requests

from hooks.connectors import ConnectorContext, InboundBatch
from hooks.errors import BatchRejected, RecordError
from hooks.records import (
    EventKind,
    Problem,
    ReceiptLine,
    ShipmentLine,
    WmsEvent,
    WmsReceipt,
    WmsShipment,
)
from plugins.wms_logikura.catalog import Catalog, WarehouseMap
from plugins.wms_logikura.client import Json, LogikuraClient
from plugins.wms_logikura.config import JST, LogikuraConfig
from plugins.wms_logikura.errors import LogikuraConfigError, LogikuraError, LogikuraRefused
from plugins.wms_logikura.store import (
    CREATED,
    HELD,
    REJECTED,
    REQUEUED,
    LocalStore,
)

TRACKING_MAX = 50
MAX_PAGES = 100_000
WMS_MISMATCH = "wms_mismatch"
UNLISTED_KEY = "logikura:unlisted_warehouse:"
LEAVE = ":leave"
CHANGED, GONE, CLOSING, ACKED = "changed", "gone", "closing", "acknowledged"
_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True)
class HistoryKind:
    """Where one kind of history lives and how its events are named."""

    kind: EventKind
    path: str
    key: str
    one_key: str
    date_field: str
    items_field: str
    quantity_field: str
    source: str
    event_prefix: str
    cursor: str
    noun: str


KINDS: dict[EventKind, HistoryKind] = {
    EventKind.SHIPMENT: HistoryKind(
        EventKind.SHIPMENT,
        "/api/v1/shipping_histories",
        "shipping_histories",
        "shipping_history",
        "shipped_date",
        "shipping_items",
        "shipping_quantity",
        "logikura:shipping_history",
        "LK-SH-",
        "wms.logikura.shipments",
        "shipment",
    ),
    EventKind.RECEIPT: HistoryKind(
        EventKind.RECEIPT,
        "/api/v1/receiving_histories",
        "receiving_histories",
        "receiving_history",
        "received_date",
        "receiving_items",
        "stocked_quantity",
        "logikura:receiving_history",
        "LK-RH-",
        "wms.logikura.receipts",
        "receipt",
    ),
}


class Invalid(Exception):
    """A history that cannot become an event; ``column`` names the field."""

    def __init__(self, reason: str, column: str | None = None) -> None:
        super().__init__(reason)
        self.column = column


class Defer(Exception):
    """A history that must wait (the engine does not know one of its products yet)."""


class Hold(Exception):
    """A valid history nebridge must not apply by itself; ``reason`` gives the facts and
    ``fix`` what a person can do."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


@dataclass
class Position:
    """Where the reading of one kind stands (stored as JSON in the kind's cursor)."""

    floor: str
    start: str
    page: int
    ids: list[int]
    swept: float
    warehouses: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, value: str | None) -> Position | None:
        """The stored position; None for none or an older format (read everything)."""
        try:
            data = json.loads(value) if value else None
            return (
                None
                if not isinstance(data, dict)
                else cls(
                    str(data["floor"]),
                    str(data["start"]),
                    int(data["page"]),
                    [int(i) for i in data["ids"]],
                    float(data["swept"]),
                    [int(w) for w in data.get("warehouses", [])],
                )
            )
        except (KeyError, TypeError, ValueError):
            return None

    def dump(self) -> str:
        """The cursor value."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))


class HistoryBatch:
    """One history (or the position alone), accepted or rejected as a whole."""

    def __init__(
        self,
        source: str,
        kind: EventKind,
        events: list[WmsEvent],
        cursor: tuple[str, str] | None,
        on_commit: Callable[[], None],
        on_reject: Callable[[BatchRejected], None],
        error: BatchRejected | None = None,
    ) -> None:
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


def _digest(value: Any) -> str:
    data = json.dumps(
        value,
        sort_keys=True,
        ensure_ascii=False,
        default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
    )
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _event_digest(event: WmsEvent) -> str:
    return _digest(dataclasses.asdict(event))


def _day(value: Any, column: str) -> date:
    if not isinstance(value, str):
        raise Invalid(f"{column} {value!r} is not a date", column)
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise Invalid(f"{column} {value!r} is not a date", column) from None


def _whole(value: Any, column: str) -> int:
    """A whole number (an int, or a string of digits); anything else is invalid."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Invalid(f"{column} {value!r} is not a whole number", column)
    try:
        return int(value)
    except ValueError:
        raise Invalid(f"{column} {value!r} is not a whole number", column) from None


def _quantity(value: Any, column: str) -> int | None:
    if value is None:
        return None
    number = _whole(value, column)
    if number < 0:
        raise Invalid(f"{column} {number} is negative", column)
    return number


def _check(spec: HistoryKind, record: Json) -> None:
    """The shape every history must have, field by field (finding: one malformed record must
    not stop the others, and a record that is not a completed history must not ship)."""
    state = record.get("progress_state")
    if state is not None and state != "completed":
        raise Invalid(
            f"progress_state is {state!r}, not 'completed': it is not a history yet",
            "progress_state",
        )
    if record.get("warehouse_id") is not None:
        _whole(record["warehouse_id"], "warehouse_id")
    sales_order = record.get("sales_order")
    if sales_order is not None and not isinstance(sales_order, dict):
        raise Invalid(f"sales_order {sales_order!r} is not an object", "sales_order")
    if spec.kind is EventKind.SHIPMENT and record.get("shipping_composite_items"):
        raise Invalid(
            "set products (shipping_composite_items) are not supported; record "
            "their components instead",
            "shipping_composite_items",
        )
    items = record.get(spec.items_field)
    if not isinstance(items, list) or not items:
        raise Invalid(f"the history has no {spec.items_field} list", spec.items_field)
    quantities = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise Invalid(f"{spec.items_field} item {n} is {item!r}, not an item", spec.items_field)
        _whole(item.get("product_variant_id"), "product_variant_id")
        quantities.append(_quantity(item.get(spec.quantity_field), spec.quantity_field))
    if all(q is None for q in quantities):
        raise Invalid(
            f"every {spec.quantity_field} is null: Logikura does not say what was "
            f"{'shipped' if spec.kind is EventKind.SHIPMENT else 'received'}",
            spec.quantity_field,
        )
    if not any(quantities):
        raise Invalid(
            f"every {spec.quantity_field} is 0: the history moves nothing", spec.quantity_field
        )
    _day(record.get(spec.date_field), spec.date_field)


@dataclass
class _Poll:
    """What one reading of a kind needs along the way."""

    spec: HistoryKind
    ctx: ConnectorContext
    catalog: Catalog
    ours: WarehouseMap
    schedules: dict[int, str]
    marks: dict[str, tuple[str, str]]
    delivered: dict[str, tuple[str, str | None, str | None, Any]]
    refreshed: bool = False
    unlisted: dict[int, int] = field(default_factory=dict)
    page_ids: dict[int, list[int]] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)


class HistoryReader:
    """Turns Logikura histories into inbound batches (see the module docstring)."""

    def __init__(
        self,
        config: LogikuraConfig,
        client: LogikuraClient,
        store: LocalStore,
        catalog: Callable[[bool], Catalog],
        clock: Callable[[], float],
        log: _Log,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.log = log
        self.pages_read = 0
        self._stock_inventory: dict[int, int] = {}
        self._inventory_warehouse: dict[int, int] = {}

    # ---------------------------------------------------------------- reading
    def batches(self, kind: EventKind, ctx: ConnectorContext) -> Iterator[InboundBatch]:
        """The new or changed histories of ``kind``, one batch each, then the position."""
        spec = KINDS[kind]
        today = ctx.clock().astimezone(JST).date()
        stored = ctx.cursors.get(spec.cursor)
        catalog = self.catalog(False)
        poll = _Poll(
            spec,
            ctx,
            catalog,
            WarehouseMap.build(self.config, catalog, ctx, self.store),
            {},
            self.store.marks(spec.source + ":"),
            {},
        )
        now = self.clock()
        warehouses = sorted(poll.ours.by_id)
        position = Position.load(stored)
        floor = (
            self.config.start_date.isoformat()
            if self.config.start_date is not None
            else position.floor
            if position is not None
            else today.isoformat()
        )
        if position is not None and (position.warehouses != warehouses or position.floor != floor):
            position = None
        due = position is None or now - position.swept >= self.config.sweep_hours * 3600
        self._close_acknowledged(poll, again=due)
        by_id = True
        if position is not None:  # what changed first, so new histories never wait
            found = self._incremental(spec, position, poll)
            if found is None:
                due = True
            else:
                records, position = found
                self._by_id(spec, records, poll)
                by_id = False
                yield from self._process(poll, records)
        if due or position is None:  # the whole window (its pages are numbered anew)
            poll.page_ids.clear()
            poll.deferred.clear()
            poll.unlisted.clear()
            start = max(
                date.fromisoformat(floor), today - timedelta(days=self.config.lookback_days)
            )
            records, last = self._collect(spec, [], self._pages(spec, start.isoformat(), 1), poll)
            page, ids = last if last is not None else (1, [])
            position = Position(floor, start.isoformat(), page, ids, now, warehouses)
            if by_id:
                self._by_id(spec, records, poll)
            yield from self._process(poll, records)
            self._gone(poll, records, start)
            for wid in poll.ours.by_id:
                ctx.resolve_problem(f"{UNLISTED_KEY}{wid}:{spec.key}")
        position = self._hold_back(poll, position)
        self._report_unlisted(poll)
        if position.dump() != stored:
            yield HistoryBatch(
                f"{spec.source} position {position.start} page {position.page}",
                kind,
                [],
                (spec.cursor, position.dump()),
                lambda: None,
                lambda error: None,
            )
        if poll.ours.missing:
            raise LogikuraConfigError("; ".join(poll.ours.missing))

    def _close_acknowledged(self, poll: _Poll, again: bool) -> None:
        """Close the items the admin acknowledged with ``nebridge inbox retry`` (done here:
        the retry command holds the engine's database) — and, at a whole read (``again``),
        those acknowledged before, in case a dry run's rollback undid the closing."""
        for source, (state, digest) in list(poll.marks.items()):
            if state == CLOSING or (again and state == ACKED):
                poll.ctx.resolve_problem(source)
                poll.ctx.resolve_problem(f"{source}:changed")
                poll.ctx.resolve_problem(f"{source}:deleted")
            if state == CLOSING:
                self.store.mark(source, ACKED, digest)
                poll.marks[source] = (ACKED, digest)

    @staticmethod
    def _hold_back(poll: _Poll, position: Position) -> Position:
        """The position stays at the first page with a history that waits for a product, so
        the next poll reads it again (it is not lost past the resume point)."""
        pages = [
            page for page, ids in poll.page_ids.items() if any(hid in poll.deferred for hid in ids)
        ]
        if not pages:
            return position
        first = min(pages)
        return dataclasses.replace(position, page=first, ids=poll.page_ids[first])

    def _incremental(
        self, spec: HistoryKind, position: Position, poll: _Poll
    ) -> tuple[dict[int, Json], Position] | None:
        """The histories from the last page reached on; None if that page no longer starts
        with the histories it held (the whole window must be read)."""
        pages = self._pages(spec, position.start, position.page)
        first = next(pages, None)
        if (
            first is None
            or [
                int(r["id"])
                for r in first[1][: len(position.ids)]
                if isinstance(r, dict) and _is_id(r.get("id"))
            ]
            != position.ids
        ):
            self.log.info(
                "Logikura %s changed before page %d; reading the whole window",
                spec.key,
                position.page,
            )
            return None
        records, last = self._collect(spec, [first], pages, poll)
        page, ids = last if last is not None else (position.page, position.ids)
        return records, dataclasses.replace(position, page=page, ids=ids)

    def _process(self, poll: _Poll, records: dict[int, Json]) -> Iterator[InboundBatch]:
        """One batch per history that is new (or rejected), in id order."""
        spec = poll.spec
        poll.delivered = self.store.delivered(f"{spec.source}:{hid}" for hid in records)
        if spec.kind is EventKind.SHIPMENT:
            poll.schedules = self.store.orders_of_schedules(records)
        for hid in sorted(records):
            yield from self._one(poll, hid, records[hid])

    def _pages(self, spec: HistoryKind, start: str, page: int) -> Iterator[tuple[int, list[Json]]]:
        """Pages ``page``, ``page + 1``, … of the window from ``start`` (no end date, so the
        query stays the same from day to day), until Logikura offers no next page."""
        previous: list[Any] | None = None
        for number in range(page, page + MAX_PAGES):
            answer = self.client.request(
                "GET", spec.path, params={f"{spec.date_field}_from": start, "page": str(number)}
            )
            self.pages_read += 1
            records = _listed(answer, spec)
            if not isinstance(records, list):
                raise LogikuraError(
                    f"Logikura answered {spec.path} without a {spec.key!r} "
                    "list; is wms.logikura.api_base right?"
                )
            ids = [r.get("id") if isinstance(r, dict) else r for r in records]
            if records and ids == previous:
                raise LogikuraError(
                    f"Logikura answered page {number} of {spec.path} with the "
                    "same histories as the page before; reading stopped"
                )
            previous = ids
            yield number, records
            if not records or not answer.links.get("next", {}).get("url"):
                return
        raise LogikuraError(f"Logikura offered more than {MAX_PAGES} pages of {spec.path}")

    def _collect(
        self,
        spec: HistoryKind,
        read: list[tuple[int, list[Json]]],
        pages: Iterator[tuple[int, list[Json]]],
        poll: _Poll,
    ) -> tuple[dict[int, Json], tuple[int, list[int]] | None]:
        """Histories by id from the pages (each page's ids kept in ``poll``), and the last
        non-empty page with its ids."""
        records: dict[int, Json] = {}
        last: tuple[int, list[int]] | None = None
        for number, page in [*read, *pages]:
            ids = []
            for record in page:
                if not isinstance(record, dict) or not _is_id(record.get("id")):
                    poll.ctx.report_problem(
                        Problem(
                            key=f"logikura:{spec.key}:no_id",
                            kind=WMS_MISMATCH,
                            reason=(
                                f"Logikura listed a {spec.noun} without an integer id on page "
                                f"{number} ({str(record)[:200]}); nebridge cannot name it, so "
                                "it was left out"
                            ),
                            fix=(
                                "find the record in Logikura's screens and book it again (or "
                                "ask Logikura's support: its API answered a malformed record)"
                            ),
                        )
                    )
                    continue
                records[int(record["id"])] = record
                ids.append(int(record["id"]))
            if page:
                last = (number, ids)
                poll.page_ids[number] = ids
        return records, last

    def _by_id(self, spec: HistoryKind, records: dict[int, Json], poll: _Poll) -> None:
        """Read by id the histories the admin re-queued (they may be before the page the
        poll started from, or older than the window)."""
        for source, (state, _digest) in poll.marks.items():
            if state != REQUEUED:
                continue
            hid = int(source.rsplit(":", 1)[1])
            if hid in records:
                continue
            try:
                records[hid] = self.client.get(f"{spec.path}/{hid}")[spec.one_key]
            except LogikuraRefused as exc:
                if exc.status != 404:
                    raise
                self.log.warning("%s was to be read again but Logikura no longer has it", source)
                self.store.settle(source)

    # ---------------------------------------------------------------- one history
    def _one(self, poll: _Poll, hid: int, record: Json) -> Iterator[InboundBatch]:
        spec, ctx = poll.spec, poll.ctx
        source = f"{spec.source}:{hid}"
        state, marked = poll.marks.get(source, ("", ""))
        raw = _digest(record)
        if state in (REJECTED, CLOSING, ACKED) and marked == raw:
            return  # already refused or acknowledged, unchanged
        confirmed = state == REQUEUED
        try:
            try:
                _check(spec, record)
                event = self._event(poll, hid, record, confirmed, poll.delivered.get(source))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise Invalid(
                    f"Logikura answered it in an unexpected shape ({type(exc).__name__}: {exc})"
                ) from None
        except Invalid as exc:
            if state != REJECTED or marked != raw:
                yield self._rejected(
                    source,
                    spec.kind,
                    BatchRejected(source, [RecordError(source, str(exc), column=exc.column)]),
                    raw,
                )
            return
        except Defer as exc:
            self.log.info("%s waits: %s", source, exc)
            poll.deferred.append(hid)
            return
        except Hold as exc:  # reported at every sighting: idempotent, never lost
            if (state, marked) != (HELD, raw):
                self.store.mark(source, HELD, raw)
            ctx.report_problem(
                Problem(
                    key=source,
                    kind=WMS_MISMATCH,
                    reason=exc.reason,
                    fix=exc.fix,
                    warehouse=self._safe_code(poll, record),
                    subject=f"{spec.noun} {hid}",
                )
            )
            return
        if event is None:
            return
        digest = _event_digest(event)
        if state == REJECTED and marked == digest:
            return  # the engine refused this very event already
        before = poll.delivered.get(source)
        if before is not None:
            if before[0] != digest:
                self._changed(poll, source, hid, event, before, raw)
            return
        yield self._accepted(poll, source, event, digest, bool(state))

    def _event(
        self,
        poll: _Poll,
        hid: int,
        record: Json,
        confirmed: bool,
        delivered: tuple[str, str | None, str | None, Any] | None = None,
    ) -> WmsEvent | None:
        """The event of a history; for one ``delivered`` before, the order it shipped then
        is kept (only what Logikura says can differ, not nebridge's reading of it)."""
        spec = poll.spec
        when = datetime.combine(
            _day(record.get(spec.date_field), spec.date_field), datetime.min.time(), JST
        )
        if spec.kind is EventKind.RECEIPT:
            code = self._code_of(poll, record)
            if code is None:
                self._unlisted(poll, record)
                return None
            lines = self._lines(poll, record)
            return WmsReceipt(
                f"{spec.event_prefix}{hid}", code, when, tuple(ReceiptLine(c, q) for c, q in lines)
            )
        order = self._order(poll, hid, record, confirmed) if delivered is None else delivered[1]
        code = self._code_of(poll, record)
        if code is None:
            if order is None or delivered is not None:
                self._unlisted(poll, record)
                return None
            wid = self._warehouse_id(poll, record)
            raise Hold(
                f"Logikura shipped Next Engine order {order} from 拠点 "
                f"{poll.ours.describe(wid)}, which daemon.yaml does not list; "
                "Next Engine was not changed",
                "add the warehouse to daemon.yaml (warehouses[].code, or map it in "
                "wms.logikura.warehouse_codes), then `nebridge inbox retry "
                f"{spec.source}:{hid}`",
            )
        if order is not None and not confirmed and delivered is None:
            self._whole_order(poll, hid, record, order)
        lines = self._lines(poll, record)
        tracking = str(record.get("tracking_number") or "").strip() or None
        if tracking is not None and len(tracking) > TRACKING_MAX:
            raise Invalid(
                f"tracking number longer than {TRACKING_MAX} characters (Next Engine's limit)",
                "tracking_number",
            )
        return WmsShipment(
            f"{spec.event_prefix}{hid}",
            code,
            order,
            tracking,
            when,
            tuple(ShipmentLine(c, q) for c, q in lines),
        )

    def _order(self, poll: _Poll, hid: int, record: Json, confirmed: bool) -> str | None:
        """The Next Engine order this shipment ships (None: not an order of nebridge's)."""
        source = f"{poll.spec.source}:{hid}"
        number = str((record.get("sales_order") or {}).get("order_number") or "").strip()
        ours = poll.schedules.get(hid)
        if ours is not None:
            if number != ours and not confirmed:
                said = f"order number {number!r}" if number else "no order number"
                raise Hold(
                    f"nebridge created Logikura schedule {hid} for Next Engine order "
                    f"{ours}, but the shipped history now has {said}; nothing was "
                    "changed in Next Engine",
                    f"if the parcel was order {ours}'s, `nebridge inbox retry {source}` "
                    f"ships order {ours}; otherwise ship the right order in Next "
                    f"Engine by hand, then `nebridge inbox retry {source}{LEAVE}`",
                )
            number = ours
        elif not number or not poll.ctx.is_imported_order(number):
            return None
        schedule = self.store.schedules([number]).get(number)
        shipped = self.store.shipped_by(number)
        if (
            ours is None
            and schedule is not None
            and schedule.state == CREATED
            and schedule.schedule_id != hid
        ) or (shipped is not None and shipped != source):
            if confirmed:
                return None
            by = (
                f"history {shipped.rsplit(':', 1)[1]}"
                if shipped
                else f"its own schedule {schedule.schedule_id if schedule else '?'}"
            )
            tracking = str(record.get("tracking_number") or "").strip() or "none"
            raise Hold(
                f"a second shipment for Next Engine order {number} (tracking number "
                f"{tracking}, 拠点 {poll.ours.describe(self._warehouse_id(poll, record))}"
                f"); the order is shipped by {by}; nothing was changed in Next Engine",
                "if these are more parcels of the same order, add the tracking number "
                f"to order {number}'s note (備考) in Next Engine — it has one 発送伝票番号 "
                f"field — then `nebridge inbox retry {source}{LEAVE}`; if it is a "
                f"separate sale, `nebridge inbox retry {source}` takes it as a stock "
                "movement of the warehouse",
            )
        return number

    def _whole_order(self, poll: _Poll, hid: int, record: Json, order: str) -> None:
        """Next Engine has no partial 出荷確定: an order ships only when every item shipped
        exactly as ordered."""
        spec = poll.spec
        short = []
        for item in record.get(spec.items_field) or []:
            ordered = item.get("sales_order_quantity")
            shipped = _quantity(item.get(spec.quantity_field), spec.quantity_field) or 0
            if ordered is not None and _whole(ordered, "sales_order_quantity") != shipped:
                variant = poll.catalog.by_id.get(int(item["product_variant_id"]))
                name = variant.product_code if variant else f"variant {item['product_variant_id']}"
                short.append(f"{name}: shipped {shipped} of {ordered}")
        if short:
            source = f"{spec.source}:{hid}"
            raise Hold(
                f"partial shipment of Next Engine order {order} ({'; '.join(short)}); "
                "Next Engine has no partial 出荷確定, so the order was not shipped and "
                "its stock not moved",
                f"split order {order} in Next Engine (受注分割) so it holds exactly what "
                f"was shipped, then `nebridge inbox retry {source}` ships it; or ship "
                f"the rest in Logikura, then `nebridge inbox retry {source}` ships order "
                f"{order} as a whole (the rest's history is reported as a second "
                "shipment: leave it with `:leave`)",
            )

    def _lines(self, poll: _Poll, record: Json) -> list[tuple[str, int]]:
        spec = poll.spec
        totals: dict[str, int] = {}
        for item in record[spec.items_field]:
            quantity = _quantity(item.get(spec.quantity_field), spec.quantity_field)
            if not quantity:
                continue
            vid = int(item["product_variant_id"])
            variant = poll.catalog.by_id.get(vid)
            if variant is None and not poll.refreshed:
                poll.catalog, poll.refreshed = self.catalog(True), True
                variant = poll.catalog.by_id.get(vid)
            if variant is None:
                raise Invalid(
                    f"product variant {vid} is not in Logikura's product master",
                    "product_variant_id",
                )
            if not poll.ctx.is_known_product(variant.product_code):
                raise Defer(
                    f"product {variant.product_code} is new; it is taken with the "
                    "next product master"
                )
            totals[variant.product_code] = totals.get(variant.product_code, 0) + quantity
        return sorted(totals.items())

    # ---------------------------------------------------------------- warehouses
    def _code_of(self, poll: _Poll, record: Json) -> str | None:
        """The nebridge code of the history's warehouse; None if not configured here."""
        return poll.ours.by_id.get(self._warehouse_id(poll, record))

    def _safe_code(self, poll: _Poll, record: Json) -> str:
        """The nebridge warehouse code for a message ("" if it cannot be told)."""
        try:
            return self._code_of(poll, record) or ""
        except (Invalid, LogikuraError, KeyError, TypeError, ValueError):
            return ""

    def _warehouse_id(self, poll: _Poll, record: Json) -> int:
        if record.get("warehouse_id") is not None:
            return _whole(record["warehouse_id"], "warehouse_id")
        stocks = {
            _whole(p.get("stock_id"), "stock_id")
            for item in record.get("shipping_items") or []
            for p in item.get("packing_items") or []
            if isinstance(p, dict) and p.get("stock_id") is not None
        }
        if not stocks:
            raise Invalid(
                "the history says neither its warehouse_id nor the stock it was packed from",
                "warehouse_id",
            )
        found = {self._warehouse_of_stock(stock, poll.ours.by_id) for stock in sorted(stocks)}
        if len(found) > 1:
            raise Invalid(
                "the history was packed from stock at several warehouses", "packing_items"
            )
        return found.pop()

    def _warehouse_of_stock(self, stock_id: int, ours: Mapping[int, str]) -> int:
        """stock (lot) → inventory (``/stocks/{id}``) → warehouse (the inventory lists of the
        configured warehouses); both cached, the lists read again when an inventory is new.
        A stock at no configured warehouse gives -1 (unlisted)."""
        inventory = self._stock_inventory.get(stock_id)
        if inventory is None:
            answer = self.client.get(f"/api/v1/stocks/{stock_id}")
            inventory = self._stock_inventory[stock_id] = int(answer["stock"]["inventory_id"])
        if inventory not in self._inventory_warehouse:
            for warehouse_id in ours:
                for record in self.client.get_all(
                    "/api/v1/inventories", "inventories", {"warehouse_id": str(warehouse_id)}
                ):
                    self._inventory_warehouse[int(record["id"])] = warehouse_id
        return self._inventory_warehouse.get(inventory, -1)

    def _unlisted(self, poll: _Poll, record: Json) -> None:
        wid = self._warehouse_id(poll, record)
        if poll.ours.describe_code(wid) not in self.config.ignore_warehouses:
            poll.unlisted[wid] = poll.unlisted.get(wid, 0) + 1

    def _report_unlisted(self, poll: _Poll) -> None:
        for wid, count in sorted(poll.unlisted.items()):
            poll.ctx.report_problem(
                Problem(
                    key=f"{UNLISTED_KEY}{wid}:{poll.spec.key}",
                    kind=WMS_MISMATCH,
                    severity="warning",
                    reason=(
                        f"{count} {poll.spec.noun}(s) at Logikura 拠点 "
                        f"{poll.ours.describe(wid)} were not taken: daemon.yaml does not list "
                        "that warehouse, so Next Engine stock does not see them"
                    ),
                    fix=(
                        "add the warehouse to daemon.yaml (warehouses[].code, or map it in "
                        "wms.logikura.warehouse_codes) — its histories are then read at the next "
                        "poll — or list its Logikura code in wms.logikura.ignore_warehouses"
                    ),
                    subject=f"拠点 {poll.ours.describe(wid)}",
                )
            )

    # ---------------------------------------------------------------- after delivery
    def _changed(
        self,
        poll: _Poll,
        source: str,
        hid: int,
        event: WmsEvent,
        before: tuple[str, str | None, str | None, Any],
        raw: str,
    ) -> None:
        """A delivered history now reads differently: Next Engine is not changed twice;
        a person is told what changed and what to do."""
        spec = poll.spec
        if poll.marks.get(source) != (CHANGED, raw):
            self.store.mark(source, CHANGED, raw)
        order, old_tracking = before[1], before[2]
        new_tracking = event.tracking_number if isinstance(event, WmsShipment) else None
        if (
            isinstance(event, WmsShipment)
            and old_tracking != new_tracking
            and _facts(event) == before[3]
        ):
            reason = (
                f"the tracking number of {spec.noun} {hid} changed in Logikura from "
                f"{old_tracking or 'none'} to {new_tracking or 'none'} after nebridge "
                + (f"shipped Next Engine order {order} with it" if order else "had taken it")
                + "; nebridge did not change Next Engine"
            )
            fix = (
                f"set 発送伝票番号 of order {order} to {new_tracking or '(empty)'} in Next "
                "Engine by hand, then "
                if order
                else ""
            ) + f"`nebridge inbox retry {source}` closes this item"
        else:
            reason = (
                f"{spec.noun} {hid} changed in Logikura after nebridge took it "
                f"(was {before[3]}, now {_facts(event)}); nebridge applied the first "
                "version only"
            )
            fix = (
                "correct Next Engine by hand (stock or the order) to match what the "
                f"warehouse did, then `nebridge inbox retry {source}` closes this item"
            )
        poll.ctx.report_problem(
            Problem(
                key=f"{source}:changed",
                kind=WMS_MISMATCH,
                reason=reason,
                fix=fix,
                warehouse=event.warehouse,
                subject=f"{spec.noun} {hid}",
            )
        )

    def _gone(self, poll: _Poll, records: dict[int, Json], start: date) -> None:
        """After a whole-window read: delivered receipts and nebridge's open schedules that
        Logikura no longer has (deleted by staff) are reported — again at every whole read
        until the admin acknowledges them, so no report is lost (e.g. to a dry run)."""
        spec = poll.spec
        if spec.kind is EventKind.RECEIPT:
            for source, facts in self.store.delivered_since(
                spec.source + ":", start.isoformat()
            ).items():
                hid = int(source.rsplit(":", 1)[1])
                state = poll.marks.get(source, ("", ""))[0]
                if state in (CLOSING, ACKED) or hid in records:
                    continue
                if state != GONE:
                    if self._exists(f"{spec.path}/{hid}"):
                        continue
                    self.store.mark(source, GONE, "")
                self._deleted_receipt(poll, source, hid, facts)
            return
        for sid, order in self.store.deleted_schedules().items():
            if poll.marks.get(f"{spec.source}:{sid}", ("", ""))[0] == GONE:
                self._deleted_schedule(poll, sid, order)
        seen = set(records) | {int(s.rsplit(":", 1)[1]) for s in poll.marks}
        waiting = {
            sid: order
            for sid, order in self.store.unshipped_schedules(spec.source + ":").items()
            if sid not in seen
        }
        if not waiting:
            return
        open_ids = {
            int(r["id"])
            for r in self.client.get_all("/api/v1/shipping_schedules", "shipping_schedules")
            if isinstance(r, dict) and _is_id(r.get("id"))
        }
        for sid, order in sorted(waiting.items()):
            if (
                sid in open_ids
                or self._exists(f"/api/v1/shipping_schedules/{sid}")
                or self._exists(f"{spec.path}/{sid}")
            ):
                continue
            self.store.mark_schedule_deleted(order, self.clock())
            self.store.mark(f"{spec.source}:{sid}", GONE, "")
            self._deleted_schedule(poll, sid, order)

    def _deleted_receipt(self, poll: _Poll, source: str, hid: int, facts: Any) -> None:
        poll.ctx.report_problem(
            Problem(
                key=f"{source}:deleted",
                kind=WMS_MISMATCH,
                warehouse=facts["warehouse"],
                subject=f"receipt {hid}",
                reason=(
                    f"receipt {hid} ({facts['warehouse']}, {_lines_text(facts)}) was deleted "
                    "in Logikura after nebridge added it to Next Engine stock; nebridge did "
                    "not take it back"
                ),
                fix=(
                    "if the goods did not arrive, lower the Next Engine stock of those products "
                    f"by hand (在庫調整); then `nebridge inbox retry {source}` closes this item"
                ),
            )
        )

    def _deleted_schedule(self, poll: _Poll, sid: int, order: str) -> None:
        source = f"{poll.spec.source}:{sid}"
        poll.ctx.report_problem(
            Problem(
                key=f"{source}:deleted",
                kind=WMS_MISMATCH,
                subject=order,
                reason=(
                    f"Logikura schedule {sid} for Next Engine order {order} was deleted by "
                    "staff; the order will not ship from Logikura and nebridge does not create "
                    "it again by itself"
                ),
                fix=(
                    f"if order {order} should still ship, create its shipment in Logikura with "
                    f"order number {order} (its history then ships the order); if it was "
                    f"cancelled, cancel it in Next Engine; then `nebridge inbox retry {source}` "
                    "closes this item"
                ),
            )
        )

    def _exists(self, path: str) -> bool:
        try:
            self.client.get(path)
        except LogikuraRefused as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # ---------------------------------------------------------------- batches
    def _accepted(
        self, poll: _Poll, source: str, event: WmsEvent, digest: str, marked: bool
    ) -> HistoryBatch:
        ctx = poll.ctx

        def commit() -> None:
            order = event.ne_order_id if isinstance(event, WmsShipment) else None
            tracking = event.tracking_number if isinstance(event, WmsShipment) else None
            self.store.mark_delivered(source, digest, order, tracking, _facts(event))
            if marked:
                ctx.resolve_problem(source)

        def reject(error: BatchRejected) -> None:
            self.store.mark(source, REJECTED, digest)
            self.log.warning("Logikura history %s", error)

        return HistoryBatch(source, event_kind(event), [event], None, commit, reject)

    def _rejected(
        self, source: str, kind: EventKind, error: BatchRejected, digest: str
    ) -> HistoryBatch:
        def reject(rejection: BatchRejected) -> None:
            self.store.mark(source, REJECTED, digest)
            self.log.warning("Logikura history %s", rejection)

        return HistoryBatch(source, kind, [], None, lambda: None, reject, error)


def event_kind(event: WmsEvent) -> EventKind:
    """The kind of an event of this module."""
    return EventKind.SHIPMENT if isinstance(event, WmsShipment) else EventKind.RECEIPT


def _listed(answer: requests.Response, spec: HistoryKind) -> list[Any]:
    """The history list of one page."""
    try:
        data = answer.json() if answer.content else {}
    except ValueError:
        data = None
    records = data.get(spec.key) if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise LogikuraError(
            f"Logikura answered {spec.path} without a {spec.key!r} list; is "
            "wms.logikura.api_base right?"
        )
    return records


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _facts(event: WmsEvent) -> dict[str, Any]:
    """What a delivered event said, apart from its tracking number."""
    lines = [[line.product_code, line.quantity] for line in event.lines]
    return {
        "warehouse": event.warehouse,
        "date": event.confirmed_at.date().isoformat(),
        "order": event.ne_order_id if isinstance(event, WmsShipment) else None,
        "lines": lines,
    }


def _lines_text(facts: Mapping[str, Any]) -> str:
    return ", ".join(f"{code} +{qty}" for code, qty in facts.get("lines", []))
