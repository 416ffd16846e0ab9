"""Stock drift: warehouse stock snapshots, their comparison with Next Engine, corrections.

Delta-only sync drifts (a manual edit in Next Engine, a count in the warehouse, a shipment of
a cancelled order, a delta lost before nebridge). This module:

* stores the snapshots a :class:`~hooks.connectors.StockReadingConnector` delivers
  (:func:`take_snapshots`), whole or not at all, like inbox batches;
* compares, per Next Engine goods code, ``stock_quantity`` with the sum of the on-hand
  quantities of the linked warehouses' newest snapshots (:func:`compare`), corrected for what
  is in flight: a change that is in the warehouse count but not yet in Next Engine (stock
  actions pending or in flight, events accepted but undecided, Next Engine orders shipped in
  the WMS but not yet in Next Engine) or already in Next Engine but not yet in the count (an
  event confirmed after the count whose action is done). ``drift = warehouse − (Next Engine +
  in flight)``; each drift gets the explanation nebridge can give;
* turns drifts into outbox stock actions on request (:func:`reconcile`), keyed
  ``reconcile:<snapshot id>:<goods>`` so a correction is decided and sent once.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import delete, or_
from sqlmodel import col, select

from daemon import attention
from daemon.attention import AttentionKind
from daemon.nextengine.dates import parse_ne_datetime
from daemon.nextengine.search import Resource
from daemon.outbox import insert_ignoring_duplicates, outbox_row
from daemon.serialize import dumps
from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import (
    EventState,
    InboxBatch,
    InboxEvent,
    OutboxItem,
    OutboxState,
    StockSnapshotRecord,
    WmsProduct,
    utcnow,
)
from hooks.actions import ADJUST_STOCK, SHIP_ORDER, PlannedItem
from hooks.connectors import ConnectorContext, StockBatch, StockReadingConnector
from hooks.errors import BatchRejected, RecordError
from hooks.records import Problem, WarehouseInfo

if TYPE_CHECKING:
    from daemon.runtime import Runtime

log = logging.getLogger(__name__)

#: The largest page Next Engine's search returns (10,000 rows): 100,000 goods in 11 calls.
NE_PAGE_SIZE = 10_000
#: The plugin name recorded on correction actions (``outbox`` and ``history`` show it).
RECONCILE_PLUGIN = "stock_reconcile"
#: Events received this long before a count may still have been confirmed after it (clock
#: skew between the WMS and nebridge); their confirmation time decides.
_SKEW = timedelta(days=1)
_OPEN_STATES = (OutboxState.PENDING.value, OutboxState.IN_FLIGHT.value)
#: Snapshots kept per warehouse (the newest); older ones are deleted when a new one is stored,
#: so daily counts of 100,000 products do not grow the database without bound.
KEEP_SNAPSHOTS = 10


class StockError(Exception):
    """The comparison cannot be made now; the message says why and what to do."""


class StockSource(Protocol):
    """What the comparison needs of Next Engine: a paged search (the NE client)."""

    def search(
        self,
        resource: str,
        fields: str | Iterable[str],
        *,
        where: Any = None,
        sort: str | None = None,
        page_size: int | None = None,
        wait_flag: bool = True,
    ) -> Iterator[Mapping[str, str | None]]: ...


# -- taking snapshots -------------------------------------------------------------------------


@dataclass
class SnapshotReport:
    """What one pass over the connector's stock batches did."""

    stored: list[int] = field(default_factory=list)  # snapshot ids
    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def take_snapshots(
    db: Bind,
    connector: object,
    ctx: ConnectorContext,
    take: bool,
    guard: Callable[[str], None] | None = None,
) -> SnapshotReport:
    """Store every ready stock batch of ``connector`` (none if it cannot tell stock).

    A batch is stored in one transaction with its ``inbox_batch`` record and only then
    committed; an invalid one is recorded and rejected whole with every reason. ``take``
    asks an API-based WMS to read its stock now. ``guard(what)`` raises once this process
    may no longer write into the company's WMS (called before each file is moved).
    """
    report = SnapshotReport()
    if not isinstance(connector, StockReadingConnector):
        return report
    for batch in connector.stock_batches(ctx, take):
        _take_one(db, batch, report, guard or _unguarded)
    return report


def _unguarded(what: str) -> None:
    """No lease or instance lock to lose: every write is allowed."""


def _take_one(
    db: Bind, batch: StockBatch, report: SnapshotReport, guard: Callable[[str], None]
) -> None:
    try:
        snapshots = batch.snapshots()
    except BatchRejected as error:
        _record_rejected(db, batch.source, error.errors)
        guard(f"rejecting {batch.source}")
        batch.reject(error)
        report.rejected.append(batch.source)
        return
    now = utcnow()
    with write_session(db) as session:
        rows = [
            StockSnapshotRecord(
                warehouse=s.warehouse,
                source=batch.source[:512],
                counted_at=s.counted_at,
                products=len(s.quantities),
                quantities=dumps(dict(s.quantities)),
                taken_at=now,
            )
            for s in snapshots
        ]
        session.add_all(rows)
        session.add(
            InboxBatch(
                source=batch.source[:512],
                kind="stock",
                state="accepted",
                events=sum(r.products for r in rows),
                received_at=now,
            )
        )
        session.flush()
        ids = [int(r.id) for r in rows if r.id is not None]
        for warehouse in {r.warehouse for r in rows}:
            keep = (
                select(col(StockSnapshotRecord.id))
                .where(col(StockSnapshotRecord.warehouse) == warehouse)
                .order_by(
                    col(StockSnapshotRecord.counted_at).desc(), col(StockSnapshotRecord.id).desc()
                )
                .limit(KEEP_SNAPSHOTS)
            )
            session.execute(
                delete(StockSnapshotRecord).where(
                    col(StockSnapshotRecord.warehouse) == warehouse,
                    col(StockSnapshotRecord.id).not_in(list(session.scalars(keep))),
                )
            )
    guard(f"filing {batch.source} away")
    batch.commit()
    report.stored.extend(ids)
    report.accepted.append(batch.source)
    log.info("stock snapshot(s) %s from %s stored", ids, batch.source)


def _record_rejected(db: Bind, source: str, errors: Sequence[RecordError]) -> None:
    """The rejected batch with every error, as ``nebridge inbox list`` shows batches."""
    text = "\n".join(str(e) for e in errors)
    with write_session(db) as session:
        session.add(
            InboxBatch(source=source[:512], kind="stock", state="rejected", errors=text or None)
        )


# -- comparing --------------------------------------------------------------------------------


@dataclass
class GoodsDrift:
    """One Next Engine goods code compared with the linked warehouses."""

    goods: str
    ne: int
    warehouses: dict[str, int]
    in_flight: int
    explained: int = 0  # the part of the drift nebridge can name the cause of
    explanations: list[str] = field(default_factory=list)
    waits: bool = False  # undecided events or open actions: no correction now
    product: str = ""  # a WMS product linked to it (corrections go through it)
    ne_changed_after_count: datetime | None = None  # NE's stock record changed after a count

    @property
    def wms(self) -> int:
        """On hand over all linked warehouses."""
        return sum(self.warehouses.values())

    @property
    def drift(self) -> int:
        """Warehouse stock minus what Next Engine will show once in-flight work lands."""
        return self.wms - (self.ne + self.in_flight)

    @property
    def unexplained(self) -> bool:
        """A drift no known cause accounts for."""
        return self.drift != 0 and self.drift != self.explained

    def as_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "goods": self.goods,
            "ne": self.ne,
            "warehouses": self.warehouses,
            "wms": self.wms,
            "in_flight": self.in_flight,
            "drift": self.drift,
            "unexplained": self.unexplained,
            "explanation": self.explanation(),
        }

    def explanation(self) -> str:
        """Every cause nebridge knows of, or why none is known."""
        parts = list(self.explanations)
        if self.drift and self.drift != self.explained:
            rest = self.drift - self.explained
            seen = self.ne_changed_after_count
            parts.append(
                f"{rest:+d} unknown: no action or event of nebridge explains it "
                + (
                    f"(Next Engine's stock record changed at {seen.isoformat()}, after the "
                    "count: a manual edit in Next Engine?)"
                    if seen is not None
                    else "(a manual edit in Next Engine, a count or loss in the warehouse, a "
                    "change "
                    "before nebridge)"
                )
            )
        return "; ".join(parts)


@dataclass
class StockDiff:
    """The outcome of one comparison."""

    snapshots: dict[str, tuple[int, datetime]]  # warehouse → (snapshot id, counted_at)
    rows: list[GoodsDrift]  # the goods that drift or have something in flight
    not_in_wms: list[dict[str, Any]]  # NE goods no WMS product links to (with stock)
    not_linked: list[dict[str, Any]]  # WMS products with stock and no (matching) link code
    compared: int = 0
    ne_calls: int = 0
    ne_seconds: float = 0.0

    @property
    def snapshot_id(self) -> int:
        """The newest snapshot compared (names the corrections it leads to)."""
        return max(i for i, _ in self.snapshots.values())

    @property
    def drifts(self) -> list[GoodsDrift]:
        """The goods whose stock differs."""
        return [r for r in self.rows if r.drift]

    @property
    def unexplained(self) -> list[GoodsDrift]:
        """The goods with a drift nebridge cannot explain."""
        return [r for r in self.rows if r.unexplained]

    def as_dict(self) -> dict[str, Any]:
        """JSON view (drifting goods only; ``compared`` counts all)."""
        return {
            "snapshots": {
                w: {"id": i, "counted_at": t.isoformat()} for w, (i, t) in self.snapshots.items()
            },
            "compared": self.compared,
            "ne_calls": self.ne_calls,
            "ne_seconds": round(self.ne_seconds, 3),
            "drifts": [r.as_dict() for r in self.drifts],
            "unexplained": len(self.unexplained),
            "not_in_wms": self.not_in_wms,
            "not_linked": self.not_linked,
        }


def latest_snapshots(db: Bind, warehouses: Iterable[str]) -> dict[str, StockSnapshotRecord]:
    """The newest snapshot of each of ``warehouses`` that has one."""
    found: dict[str, StockSnapshotRecord] = {}
    with read_session(db) as session:
        for code in warehouses:
            row = session.scalars(
                select(StockSnapshotRecord)
                .where(col(StockSnapshotRecord.warehouse) == code)
                .order_by(
                    col(StockSnapshotRecord.counted_at).desc(), col(StockSnapshotRecord.id).desc()
                )
                .limit(1)
            ).first()
            if row is not None:
                found[code] = row
    return found


def compare(
    db: Bind,
    client: StockSource,
    warehouses: Mapping[str, WarehouseInfo],
    link_key: Callable[[str], str] = str,
    enabled: Iterable[str] = ("stock_plus", "stock_minus", "status_update"),
) -> StockDiff:
    """Compare Next Engine stock with the newest snapshots of the linked warehouses.

    ``link_key`` is how codes match (``str.casefold`` with ``case_insensitive_match``);
    ``enabled`` names the loaded plugins, which decide what an undecided event will do.
    Raises :class:`StockError` when a linked warehouse has no snapshot yet.
    """
    linked = [code for code, info in warehouses.items() if info.ne_linked]
    if not linked:
        raise StockError(
            "no warehouse is linked to Next Engine (warehouses[].ne_linked); "
            "there is nothing to compare"
        )
    records = latest_snapshots(db, linked)
    missing = [code for code in linked if code not in records]
    if missing:
        raise StockError(
            f"no stock snapshot yet of linked warehouse(s) {', '.join(missing)}: drop a "
            "stock-*.csv (warehouse,product_code,quantity,counted_at) into the inbox or run "
            "`nebridge stock take`, then `nebridge stock diff` again"
        )
    with read_session(db) as session:
        links = {
            str(p): str(k)
            for p, k in session.execute(
                select(col(WmsProduct.product_code), col(WmsProduct.link_code)).where(
                    col(WmsProduct.link_code).is_not(None)
                )
            ).all()
        }
    goods_of = {product: link_key(code) for product, code in links.items()}
    counts: dict[str, dict[str, int]] = defaultdict(dict)  # goods key → warehouse → on hand
    product_of: dict[str, str] = {}
    unlinked: dict[str, dict[str, int]] = defaultdict(dict)
    for code, record in records.items():
        for product, quantity in json.loads(record.quantities).items():
            key = goods_of.get(product)
            if key is None:
                if quantity:
                    unlinked[product][code] = quantity
                continue
            counts[key][code] = counts[key].get(code, 0) + int(quantity)
            product_of.setdefault(key, product)
    for product in links:  # linked products no snapshot lists still count (0 on hand)
        product_of.setdefault(goods_of[product], product)
    moments = {code: r.counted_at for code, r in records.items()}
    flight = _in_flight(db, moments, goods_of, set(enabled))
    rows: list[GoodsDrift] = []
    not_in_wms: list[dict[str, Any]] = []
    calls = _Counter(client)
    seen: set[str] = set()
    compared = 0
    newest_count = max(moments.values())
    for ne_row in calls.search_stock(
        ("stock_goods_id", "stock_quantity", "stock_last_modified_date"), sort="stock_goods_id-asc"
    ):
        goods = str(ne_row.get("stock_goods_id") or "")
        key = link_key(goods)
        ne = int(ne_row.get("stock_quantity") or 0)
        if key not in product_of:
            if ne:
                not_in_wms.append({"goods": goods, "ne": ne})
            continue
        seen.add(key)
        per_warehouse = {code: counts.get(key, {}).get(code, 0) for code in linked}
        found = flight.get(key)
        changed = _ne_time(ne_row.get("stock_last_modified_date"))
        row = GoodsDrift(
            goods,
            ne,
            per_warehouse,
            found.amount if found else 0,
            product=product_of[key],
            ne_changed_after_count=changed
            if changed is not None and changed > newest_count
            else None,
        )
        if found:
            row.explained = found.explained
            row.explanations = found.notes
            row.waits = found.waits
        compared += 1
        if row.drift or found:  # the goods in step with nothing in flight are only counted
            rows.append(row)
    absent = set(product_of) - seen  # link codes no Next Engine goods has
    if absent:
        for code, record in records.items():
            for product, quantity in json.loads(record.quantities).items():
                if quantity and goods_of.get(product) in absent:
                    unlinked[product][code] = int(quantity)
    not_linked = [
        {
            "product": p,
            "warehouses": w,
            "wms": sum(w.values()),
            "link_code": links.get(p),
            "reason": (
                "no Next Engine goods has this link code (紐付けコード)"
                if links.get(p)
                else "no link code (紐付けコード) in the WMS"
            ),
        }
        for p, w in sorted(unlinked.items())
    ]
    return StockDiff(
        {c: (int(r.id or 0), r.counted_at) for c, r in records.items()},
        rows,
        not_in_wms,
        not_linked,
        compared=compared,
        ne_calls=calls.calls,
        ne_seconds=calls.seconds,
    )


def _ne_time(value: str | None) -> datetime | None:
    """A Next Engine date-time, or None when it is empty or unreadable (only a hint)."""
    try:
        return parse_ne_datetime(value)
    except ValueError:
        return None


class _Counter:
    """Counts the Next Engine search calls (pages) of one comparison and the time spent
    waiting for them (shown, so a slow comparison can be told from a slow Next Engine)."""

    def __init__(self, client: StockSource) -> None:
        self.client = client
        self.calls = 0
        self.seconds = 0.0

    def search_stock(self, fields: Iterable[str], sort: str) -> Iterator[Mapping[str, Any]]:
        """Every row of ``master_stock`` at the largest page size; pages end at a short one."""
        rows = 0
        pages = iter(
            self.client.search(Resource.MASTER_STOCK, fields, sort=sort, page_size=NE_PAGE_SIZE)
        )
        while True:
            started = time.perf_counter()
            row = next(pages, None)
            self.seconds += time.perf_counter() - started
            if row is None:
                break
            rows += 1
            yield row
        self.calls = rows // NE_PAGE_SIZE + 1


@dataclass
class _Flight:
    """What is in flight for one goods key, and the causes found for a drift."""

    amount: int = 0
    explained: int = 0
    notes: list[str] = field(default_factory=list)
    waits: bool = False


def _in_flight(
    db: Bind, moments: Mapping[str, datetime], goods_of: Mapping[str, str], enabled: set[str]
) -> dict[str, _Flight]:
    """Per goods key: the in-flight correction and the named causes of drift."""
    out: dict[str, _Flight] = defaultdict(_Flight)
    oldest = min(moments.values()) - _SKEW
    with read_session(db) as session:
        items = list(
            session.scalars(
                select(OutboxItem)
                .where(col(OutboxItem.kind).in_((ADJUST_STOCK.name, SHIP_ORDER.name)))
                .where(
                    or_(
                        col(OutboxItem.state) != OutboxState.DONE.value,
                        col(OutboxItem.updated_at) >= oldest,
                        col(OutboxItem.plugin) == RECONCILE_PLUGIN,
                    )
                )
            )
        )
        event_ids = {i.event_id for i in items if i.event_id is not None}
        undecided = list(
            session.scalars(
                select(InboxEvent).where(
                    col(InboxEvent.state).in_((EventState.PENDING.value, EventState.HELD.value))
                )
            )
        )
        events = {e.id: e for e in undecided}
        wanted = sorted(event_ids - set(events))
        for start in range(0, len(wanted), 500):
            for event in session.scalars(
                select(InboxEvent).where(col(InboxEvent.id).in_(wanted[start : start + 500]))
            ):
                events[event.id] = event
    parsed = {i: json.loads(e.payload) for i, e in events.items() if i is not None}

    def counted(event_id: int | None) -> bool | None:
        """True: the event is in its warehouse's count; False: after it; None: unlinked."""
        if event_id is None or event_id not in events:
            return True  # a correction: the count it corrects to includes it
        event = events[event_id]
        moment = moments.get(event.warehouse)
        if moment is None:
            return None
        return datetime.fromisoformat(parsed[event_id]["confirmed_at"]) <= moment

    corrected: dict[str, datetime] = {}  # goods key → when a correction last reached NE
    for item in items:
        if item.plugin == RECONCILE_PLUGIN and item.state == OutboxState.DONE.value:
            for key, _effect in _effects(item, None, goods_of):
                corrected[key] = max(item.updated_at, corrected.get(key, item.updated_at))
    for item in items:
        inside = counted(item.event_id)
        if inside is None:
            continue
        for key, effect in _effects(item, parsed.get(item.event_id or -1), goods_of):
            if (
                item.state == OutboxState.SKIPPED.value
                and key in corrected
                and item.updated_at <= corrected[key]
            ):
                continue  # a correction since took it into account
            flight = out[key]
            applied = item.state == OutboxState.DONE.value
            if item.state in _OPEN_STATES:
                flight.waits = True
                if inside:
                    flight.amount += effect
            elif applied and not inside:
                flight.amount -= effect
            elif inside and not applied:  # failed, skipped, in doubt: never reached NE
                flight.explained += effect
                flight.waits = flight.waits or item.state != OutboxState.SKIPPED.value
                flight.notes.append(_why(item, effect))
    for event in undecided:
        if event.id is None or moments.get(event.warehouse) is None:
            continue
        data = parsed[event.id]
        inside = datetime.fromisoformat(data["confirmed_at"]) <= moments[event.warehouse]
        for key, effect in _predicted(event.kind, data, goods_of, enabled):
            flight = out[key]
            flight.waits = True
            if inside:
                flight.amount += effect
    return out


def _effects(
    item: OutboxItem, event: Mapping[str, Any] | None, goods_of: Mapping[str, str]
) -> list[tuple[str, int]]:
    """(goods key, change of Next Engine stock) of one action once applied."""
    if item.kind == ADJUST_STOCK.name:
        key = goods_of.get(item.subject)
        return [(key, int(json.loads(item.payload)["delta"]))] if key else []
    if event is None:
        return []
    return [
        (goods_of[line["product_code"]], -int(line["quantity"]))
        for line in event["lines"]
        if line["product_code"] in goods_of
    ]


def _predicted(
    kind: str, event: Mapping[str, Any], goods_of: Mapping[str, str], enabled: set[str]
) -> list[tuple[str, int]]:
    """What an undecided event will do to Next Engine stock once the plugins decide it."""
    if kind == "receipt":
        sign = 1 if "stock_plus" in enabled else 0
    elif event.get("ne_order_id"):
        sign = -1 if "status_update" in enabled else 0
    else:
        sign = -1 if "stock_minus" in enabled else 0
    return [
        (goods_of[line["product_code"]], sign * int(line["quantity"]))
        for line in event["lines"]
        if sign and line["product_code"] in goods_of
    ]


def _why(item: OutboxItem, effect: int) -> str:
    what = (
        "shipment of Next Engine order " + item.subject
        if item.kind == SHIP_ORDER.name
        else f"stock change of {item.subject}"
    )
    if item.state == OutboxState.SKIPPED.value:
        return (
            f"{effect:+d}: {what} skipped (action #{item.id}: "
            f"{item.result or item.last_error or 'not needed'}) — e.g. an order cancelled "
            "in Next Engine after the WMS shipped it"
        )
    if item.state == OutboxState.IN_DOUBT.value:
        return (
            f"{effect:+d}: {what} in doubt (action #{item.id}); settle it with "
            f"`nebridge outbox list --state in_doubt` first"
        )
    return (
        f"{effect:+d}: {what} failed (action #{item.id}: {item.last_error or ''}); "
        f"`nebridge outbox retry {item.id}` sends it"
    )


# -- correcting -------------------------------------------------------------------------------


@dataclass
class Correction:
    """One decided correction (or why a drift is not corrected now)."""

    goods: str
    delta: int
    key: str
    state: str  # queued | exists | waits | skipped
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "goods": self.goods,
            "delta": self.delta,
            "key": self.key,
            "state": self.state,
            "detail": self.detail,
        }


def reconcile(
    db: Bind,
    diff: StockDiff,
    goods: Iterable[str] = (),
    max_delta: int | None = None,
    warehouse: str = "",
    link_key: Callable[[str], str] = str,
) -> list[Correction]:
    """Queue one stock action per drift (of ``goods`` only, if given), keyed
    ``reconcile:<snapshot id>:<goods>`` so it is decided and sent once.

    A goods with undecided events, open actions or a failed action is left (it ``waits``);
    a drift larger than ``max_delta`` units is left to a person (``skipped``).
    """
    wanted = {link_key(g) for g in goods}
    out: list[Correction] = []
    rows = [r for r in diff.drifts if not wanted or link_key(r.goods) in wanted]
    now = utcnow()
    to_insert: list[dict[str, Any]] = []
    for row in rows:
        key = ADJUST_STOCK.reconcile_key(diff.snapshot_id, row.goods)
        if row.waits:
            out.append(
                Correction(
                    row.goods,
                    row.drift,
                    key,
                    "waits",
                    "stock events or actions of this goods are not settled "
                    "yet; run `nebridge stock reconcile` again once they are",
                )
            )
            continue
        if max_delta is not None and abs(row.drift) > max_delta:
            out.append(
                Correction(
                    row.goods,
                    row.drift,
                    key,
                    "skipped",
                    f"|{row.drift}| is more than max_auto_correct {max_delta}; "
                    f"a person decides: `nebridge stock reconcile --apply "
                    f"--goods {row.goods}`",
                )
            )
            continue
        to_insert.append(
            outbox_row(
                PlannedItem(
                    kind=ADJUST_STOCK.name,
                    key=key,
                    subject=row.product,
                    plugin=RECONCILE_PLUGIN,
                    payload={
                        "delta": row.drift,
                        "goods": row.goods,
                        "snapshot": diff.snapshot_id,
                        "ne": row.ne,
                        "wms": row.wms,
                        "in_flight": row.in_flight,
                    },
                ),
                warehouse or next(iter(row.warehouses), ""),
                None,
                now,
            )
        )
        out.append(
            Correction(
                row.goods,
                row.drift,
                key,
                "queued",
                f"Next Engine {row.ne} → {row.ne + row.drift} "
                f"(warehouses {row.wms}, in flight {row.in_flight:+d})",
            )
        )
    if to_insert:
        with write_session(db) as session:
            existing = set(
                session.scalars(
                    select(col(OutboxItem.idempotency_key)).where(
                        col(OutboxItem.idempotency_key).in_(
                            [r["idempotency_key"] for r in to_insert]
                        )
                    )
                )
            )
            insert_ignoring_duplicates(session, to_insert)
        for correction in out:
            if correction.key in existing and correction.state == "queued":
                correction.state = "exists"
                correction.detail = "decided before (same snapshot); sent once"
    return out


# -- with a runtime (CLI, plugin) -------------------------------------------------------------


def link_key_of(runtime: Runtime) -> Callable[[str], str]:
    """How link codes match goods codes: ``case_insensitive_match`` makes it casefold."""
    key = runtime.host.link_code_key()
    return key if callable(key) else str


def diff_now(runtime: Runtime, take: bool = False) -> StockDiff:
    """Take the stock batches ready now (reading an API WMS's stock when ``take``), then
    compare with Next Engine."""
    if runtime.connector is not None:
        take_snapshots(runtime.db, runtime.connector, runtime.connector_context(), take)
    return compare(
        runtime.db,
        runtime.ne_client(),
        runtime.warehouses(),
        link_key_of(runtime),
        runtime.host.loaded_names(),
    )


DRIFT_KEY = "stock:drift:"


def plugin_options(runtime: Runtime) -> Any | None:
    """The validated options of the ``stock_reconcile`` plugin, or None when it is off."""
    if RECONCILE_PLUGIN not in runtime.host.loaded_names():
        return None
    record = runtime.host.records.get(RECONCILE_PLUGIN)
    return record.options if record is not None else None


def check(runtime: Runtime, take: bool) -> StockDiff | None:
    """The ``stock_reconcile`` pass: compare; with ``auto_correct`` queue the corrections of
    at most ``max_auto_correct`` units; put every other unexplained drift in attention (and
    so in the notifications) and close the ones that are gone. None when the plugin is off or
    a linked warehouse has no snapshot yet (logged; nothing to compare)."""
    options = plugin_options(runtime)
    if options is None:
        return None
    try:
        diff = diff_now(runtime, take=take)
    except StockError as exc:
        log.info("stock not compared: %s", exc)
        return None
    queued: set[str] = set()
    if options.auto_correct:
        done = reconcile(
            runtime.db, diff, max_delta=options.max_auto_correct, link_key=link_key_of(runtime)
        )
        queued = {c.goods for c in done if c.state in ("queued", "exists")}
    open_keys: set[str] = set()
    for row in diff.unexplained:
        if row.goods in queued:
            continue
        key = f"{DRIFT_KEY}{row.goods}"[:200]
        open_keys.add(key)
        attention.report(
            runtime.db,
            Problem(
                key=key,
                kind=AttentionKind.STOCK_DRIFT,
                severity="warning",
                subject=row.goods,
                reason=(
                    f"Next Engine stock of {row.goods} is {row.ne}, the linked warehouses "
                    f"counted {row.wms} (in flight {row.in_flight:+d}): {row.drift:+d} that "
                    "nebridge cannot explain"
                ),
                fix=(
                    f"check it (`nebridge stock diff`), then `nebridge stock reconcile --apply "
                    f"--goods {row.goods}` sets Next Engine to the count, or correct the count "
                    "in the WMS"
                ),
            ),
            source=RECONCILE_PLUGIN,
        )
    attention.resolve(runtime.db, attention.open_problem_keys(runtime.db, DRIFT_KEY) - open_keys)
    log.info(
        "stock compared: %d goods, %d drift(s), %d unexplained, %d corrected",
        diff.compared,
        len(diff.drifts),
        len(diff.unexplained),
        len(queued),
    )
    return diff
