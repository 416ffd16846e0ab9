"""Order import (受注取り込み): Next Engine orders ready to ship become WMS instructions, once.

Candidates are orders at status 20 (納品書印刷待ち), not cancelled, not deleted, whose
print-instruct date has been reached, read with one row search (rows joined with their order)
per page. Each passes the filter plugins and the goods-code matching; an order whose goods
cannot all be matched to exactly one WMS product is held as a whole with the reason, and
re-evaluated when the product master changes — never imported in part.

Exactly once: the instruction batch and the imported-order rows are committed *before* the
connector is asked to deliver the batch; a batch left undelivered by a crash is delivered
again under the same key (connectors make that idempotent). Orders already imported are
never instructed again, whatever Next Engine says later.

One bad order never blocks its batch: a connector refuses the orders it cannot instruct as
they are (:class:`~hooks.errors.OrdersRefused`, e.g. a character the WMS file's encoding
cannot hold) and delivers the others; the batch is then recorded as delivered without the
refused orders and each of those is held alone with the reason, in one transaction. A held
order is rendered again from Next Engine when it changes there, or at once after
``nebridge orders retry ID`` (state ``retry``: read by id at the next import); ``nebridge
orders drop ID`` gives it up for good (state ``dropped``: never imported by nebridge).

Paged: the rows are read sorted by order and taken :data:`PAGE_ORDERS` orders at a time;
each page is decided, recorded and delivered (one instruction batch) before the next is read,
so memory does not grow with the number of orders (issue #18). The claim and the cursor come
once, after the last page (a claim may take orders out of the searches still being paged): a
run cut short reads the rest again, and the orders of the pages already recorded are settled,
never instructed twice.

Routing: a warehouse with ``import_orders: true`` takes the orders of its ``shop_ids``; at most
one importing warehouse without ``shop_ids`` takes every other shop's orders.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, update
from sqlmodel import col, select

from daemon import attention
from daemon.attention import AttentionKind
from daemon.config import DaemonConfig
from daemon.inbox import PRODUCTS_CURSOR
from daemon.negate import NeGate
from daemon.nextengine.client import NextEngineClient
from daemon.nextengine.dates import format_ne_datetime, parse_ne_datetime
from daemon.nextengine.errors import NextEngineError
from daemon.nextengine.search import Where
from daemon.nextengine.xmlbuild import OrderRef, OrderUpdate
from daemon.orderwatch import CANCELLED, REINSTRUCT, Change, OrderWatch, compare
from daemon.orderwatch import PLUGIN as WATCH_PLUGIN
from daemon.pipeline import Stage, StageResult
from daemon.pluginmanager import PluginHost
from daemon.serialize import dumps
from daemon.store.engine import Bind, insert_many, read_session, write_session
from daemon.store.models import (
    Cursor,
    ImportedOrder,
    ImportState,
    InstructionBatchRecord,
    InstructionState,
    WmsProduct,
    utcnow,
)
from hooks.connectors import ConnectorContext, InstructionBatch, WmsConnector
from hooks.errors import OrdersRefused
from hooks.records import (
    FilterVerdict,
    NeOrder,
    NeOrderRow,
    OrderInstruction,
    OrderInstructionLine,
    Problem,
    WarehouseInfo,
)

log = logging.getLogger(__name__)

READY_STATUS = "20"
ROW_FIELDS = (
    "receive_order_row_receive_order_id",
    "receive_order_row_no",
    "receive_order_row_goods_id",
    "receive_order_row_quantity",
    "receive_order_row_cancel_flag",
)
BASE_FIELDS = (
    "receive_order_id",
    "receive_order_shop_id",
    "receive_order_shop_cut_form_id",
    "receive_order_date",
    "receive_order_order_status_id",
    "receive_order_gruoping_tag",
    "receive_order_last_modified_date",
    "receive_order_delivery_id",
    "receive_order_delivery_name",
    "receive_order_consignee_name",
    "receive_order_consignee_zip_code",
    "receive_order_consignee_address1",
    "receive_order_consignee_address2",
    "receive_order_consignee_tel",
    "receive_order_statement_delivery_instruct_printing_date",
    "receive_order_cancel_type_id",
    "receive_order_deleted_flag",
)
INSTRUCTED, HELD, RETRY, DROPPED = (
    ImportState.INSTRUCTED,
    ImportState.HELD,
    ImportState.RETRY,
    ImportState.DROPPED,
)
#: States of an order that is never imported again by itself (a cancelled one that becomes
#: valid again in Next Engine too: the WMS may still hold it; ``orders retry`` sends it again).
SETTLED = (INSTRUCTED, DROPPED, CANCELLED)
#: How many order ids one ``receive_order_id-in`` search names at most.
IDS_PER_SEARCH = 500
#: Orders per page of an import (one instruction batch each): bounds the import's memory.
PAGE_ORDERS = 10_000
#: Row searches are sorted by order, so that an order's rows come together (pages are cut
#: between orders only).
ROW_SORT = "receive_order_row_receive_order_id-asc"
PRINTING = "receive_order_statement_delivery_instruct_printing_date"
#: In an import cursor: its ``next_print`` is the earliest print-instruct date ahead among
#: every order read (runs of older nebridge versions noted it only with ``order_watch``).
PRINT_DATES_NOTED = "print_dates_noted"
#: An import run that changes nothing but the time it ran writes its cursor only when the
#: time noted there is older than this (idle runs commit nothing in between).
RAN_REFRESH = timedelta(minutes=15)


def cursor_name(warehouse: str) -> str:
    """The incremental-import cursor of a warehouse (an ``ne.`` cursor: unlink removes it)."""
    return f"ne.import.{warehouse}"


@dataclass
class Candidate:
    """A Next Engine order read for import, with its non-cancelled rows."""

    order: NeOrder

    @property
    def order_id(self) -> str:
        """Next Engine's order id."""
        return self.order.order_id


@dataclass
class Scan:
    """The searches of one import run, decided before any is read."""

    wheres: list[Where]
    full: bool
    state: dict[str, Any]
    now: str
    #: The product master version the run matches against (recorded in the cursor).
    products: str | None = None
    #: The orders the admin asked to render again (``retry``) that this run searches.
    retries: list[str] = field(default_factory=list)


@dataclass
class Known:
    """What an import run reads from the database before it asks Next Engine, in one read
    transaction: the batches a crash left undelivered, the warehouse's cursor, the product
    master version and the orders to read again (``retry``)."""

    pending: list[InstructionBatchRecord]
    state: dict[str, Any]
    products: str | None
    retries: list[str]


@dataclass
class Page:
    """Up to :data:`PAGE_ORDERS` orders read: the candidates, and every row by order (the
    watch's input)."""

    candidates: list[Candidate]
    groups: dict[str, list[Mapping[str, str | None]]]


@dataclass(frozen=True)
class Claimed:
    """What claiming an instructed order in Next Engine needs (kept small: one per order of
    the run, claimed after the last page)."""

    order_id: str
    last_modified: str
    grouping_tag: str


class RowsOutOfOrder(Exception):
    """Next Engine returned an order's rows apart although the search was sorted by order."""


@dataclass
class ImportPlan:
    """What one import run decided."""

    instruct: list[tuple[Candidate, OrderInstruction]] = field(default_factory=list)
    hold: list[tuple[Candidate, str]] = field(default_factory=list)
    skip: list[tuple[Candidate, str]] = field(default_factory=list)
    matched_ignoring_case: int = 0


class ProductIndex:
    """WMS products by the matching key of their link code (紐付けコード).

    ``version`` is the product master version recorded in the cursor by the import run that
    matches against it: read *before* the products (so the products are never older than
    it), a master taken while the run was deciding triggers a full scan next time instead of
    leaving orders held against the older master.
    """

    def __init__(
        self,
        products: Iterable[tuple[str, str]],
        key: Callable[[str], str],
        version: str | None = None,
    ) -> None:
        self.key = key
        self.version = version
        self.by_key: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.links: dict[str, str] = {}
        for product_code, link_code in products:
            self.by_key[key(link_code)].append((product_code, link_code))
            self.links[product_code] = link_code

    @classmethod
    def later(cls, read: Callable[[str | None], ProductIndex], version: str | None) -> LazyIndex:
        """The index of master ``version``, read (by ``read(version)``) at its first use: a
        run with no order to match reads no product."""
        return LazyIndex(read, version)

    def link_of(self, product_code: str) -> str:
        """The link code of a matched product."""
        return self.links[product_code]

    def match(self, goods_code: str) -> tuple[str | None, str]:
        """``(product_code, "")`` for one match, else ``(None, reason)``."""
        found = self.by_key.get(self.key(goods_code), [])
        if len(found) == 1:
            return found[0][0], ""
        if not found:
            return None, f"goods code {goods_code} matches no WMS product link code"
        names = " and ".join(f"{p} (link code {link})" for p, link in found)
        return None, (
            f"goods code {goods_code} matches several WMS products: {names}; "
            "make their link codes unique"
        )


class LazyIndex:
    """A :class:`ProductIndex` read at its first use (see :meth:`ProductIndex.later`)."""

    def __init__(self, read: Callable[[str | None], ProductIndex], version: str | None) -> None:
        self.version = version
        self._read = read
        self._index: ProductIndex | None = None

    def get(self) -> ProductIndex:
        """The index, read now if it was not yet."""
        if self._index is None:
            self._index = self._read(self.version)
        return self._index


class OrderImporter:
    """Imports orders for one warehouse at a time (called by the warehouse pipeline)."""

    def __init__(
        self,
        engine: Bind,
        client: NextEngineClient,
        host: PluginHost,
        connector: WmsConnector,
        connector_context: Callable[[], ConnectorContext],
        config: DaemonConfig,
        gate: NeGate,
        clock: Callable[[], datetime] = utcnow,
        guard: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        #: Raises (a LeaseLost) once this process may no longer write into the company's
        #: WMS: checked right before each order file or cancellation is sent.
        self.guard = guard
        self.client = client
        self.host = host
        self.connector = connector
        self.connector_context = connector_context
        self.config = config
        self.gate = gate
        self.clock = clock
        self.watch = (
            OrderWatch(engine, connector, connector_context, clock, guard)
            if WATCH_PLUGIN in host.loaded_names()
            else None
        )
        #: The earliest print-instruct date still ahead among the orders
        #: seen (kept in the cursor; the print-date search runs only once it passed).
        self._next_print: str | None = None

    # -- the stage --------------------------------------------------------------------------

    def run(self, warehouse: WarehouseInfo, dry_run: bool) -> StageResult:
        """Deliver leftovers, read candidates, decide, record, deliver, claim."""
        result = StageResult(Stage.IMPORT_ORDERS, warehouse.code)
        with read_session(self.engine) as session:  # the gate's link and all the run reads
            blocked = self.gate.blocked(session)
            if blocked:
                result.skipped_reason = blocked
                return result
            known = self._known(session, warehouse.code, dry_run)
        may_deliver = True
        if not dry_run:
            if self.watch is not None:  # cancellations always reach the WMS before orders
                may_deliver = self.watch.deliver(warehouse.code, result.notices, result.failures)
            if may_deliver:
                self._deliver_pending(known.pending, result)
        started = self.clock()
        scan = self._scan(warehouse.code, known)
        index = ProductIndex.later(self._products, scan.products)
        decided: set[str] = set()
        claimed: list[Claimed] = []
        newest = ""  # the latest last-modified date among the orders read (for the cursor)
        try:
            for page in self._pages(scan):
                may_deliver, seen = self._page(
                    warehouse,
                    page,
                    scan.full,
                    index,
                    dry_run,
                    may_deliver,
                    decided,
                    claimed,
                    result,
                )
                newest = max([newest, *(c.order.last_modified for c in seen)])
        except (NextEngineError, RowsOutOfOrder) as exc:
            if isinstance(exc, NextEngineError):
                self.gate.observe(exc)
            result.failures.append(f"cannot read orders from Next Engine: {exc}")
            if not self.gate.blocked():  # what was delivered is claimed all the same
                self._claim(claimed, result)
            return result
        # Claimed only after the last page: a claim changes the orders (``receipted`` takes
        # them out of status 20), which would shift the pages of the searches still read.
        self._claim(claimed, result)
        if not dry_run:
            self._close(warehouse.code, decided, newest, started, scan, result)
        return result

    def _page(
        self,
        warehouse: WarehouseInfo,
        page: Page,
        full_scan: bool,
        index: LazyIndex,
        dry_run: bool,
        may_deliver: bool,
        decided: set[str],
        claimed: list[Claimed],
        result: StageResult,
    ) -> tuple[bool, list[Candidate]]:
        """Decide, record and deliver one page; add its figures to ``result``, its delivered
        orders to ``claimed``. Returns whether orders may still be delivered and the orders
        read (for the cursor)."""
        candidates, groups = page.candidates, page.groups
        seen = list(candidates)
        forced: list[Candidate] = []
        if self.watch is not None:
            watched = self._watch(warehouse.code, groups, dry_run, result, index)
            may_deliver = may_deliver and (
                dry_run or self.watch.deliver(warehouse.code, result.notices, result.failures)
            )
            if not dry_run:
                again = set(self.watch.reinstruct_ids(warehouse.code))
                forced = [
                    self._live_candidate(groups[oid]) for oid in sorted(again & groups.keys())
                ]
            seen += watched
            ids = {c.order_id for c in forced}
            candidates = [c for c in candidates if c.order_id not in ids] + forced
        plan = self._decide(candidates, warehouse, full_scan, {c.order_id for c in forced}, index)
        result.items_in += len(candidates)
        for name, number in (
            ("imported", len(plan.instruct)),
            ("held", len(plan.hold)),
            ("skipped", len(plan.skip)),
            ("matched_ignoring_case", plan.matched_ignoring_case),
        ):
            result.counts[name] = result.counts.get(name, 0) + number
        result.subjects.setdefault("skipped", []).extend(c.order_id for c, _ in plan.skip)
        result.subjects.setdefault("held", []).extend(c.order_id for c, _ in plan.hold)
        result.held += len(plan.hold)
        for cand, reason in plan.skip:
            result.notices.append(f"order {cand.order_id} skipped: {reason}")
        for cand, reason in plan.hold:
            result.notices.append(f"order {cand.order_id} held: {reason}")
        if dry_run:
            result.planned.extend(
                f"import order {cand.order_id} into {warehouse.code} ({len(instr.lines)} line(s))"
                for cand, instr in plan.instruct
            )
            result.items_out += len(plan.instruct)
            return may_deliver, seen
        batch = self._record(warehouse.code, plan) if plan.instruct or plan.hold else None
        decided.update(cand.order_id for cand, _ in (*plan.instruct, *plan.hold))
        refused: set[str] = set()
        if batch is not None and not may_deliver:
            result.notices.append(
                f"instructions {batch.key} wait until the WMS took the pending cancellations"
            )
        elif batch is not None:
            refused = self._deliver(batch, result)
            if self.config.order_import.claim != "none":
                claimed.extend(
                    Claimed(c.order_id, c.order.last_modified, c.order.grouping_tag)
                    for c, _ in plan.instruct
                    if c.order_id not in refused
                )
        result.counts["imported"] -= len(refused)
        result.items_out += len(plan.instruct) - len(refused)
        return may_deliver, seen

    # -- reading ----------------------------------------------------------------------------

    def _routing(self, code: str, due: bool = True) -> Where:
        """The warehouse's orders ready to import; ``due=False`` also those whose
        print-instruct date is still ahead (the watch notes when the next one falls due)."""
        where = (
            self._shops(code)
            .eq("receive_order_order_status_id", READY_STATUS)
            .eq("receive_order_cancel_type_id", 0)
            .eq("receive_order_deleted_flag", 0)
            .eq("receive_order_row_cancel_flag", 0)
        )
        return (
            where.lte(
                "receive_order_statement_delivery_instruct_printing_date",
                format_ne_datetime(self.clock()),
            )
            if due
            else where
        )

    def _shops(self, code: str) -> Where:
        """The warehouse's shops (every order of them, whatever its status)."""
        mine = self.config.warehouse(code)
        if mine is not None and mine.shop_ids:
            return Where().in_("receive_order_shop_id", mine.shop_ids)
        others = [
            s
            for w in self.config.warehouses
            if w.import_orders and w.code != code
            for s in w.shop_ids
        ]
        return Where().nin("receive_order_shop_id", others) if others else Where()

    def _importable(self, row: Mapping[str, str | None], now: str) -> bool:
        """The import conditions of :meth:`_routing`, checked on a row of the wider watch
        search (rows of the narrow searches pass by construction)."""
        printing = row.get("receive_order_statement_delivery_instruct_printing_date")
        return (
            str(row.get("receive_order_order_status_id")) == READY_STATUS
            and OrderWatch.status_change(row) == ""
            and _row_live(row)
            and bool(printing)
            and str(printing) <= now
        )

    def _known(self, session: Any, code: str, dry_run: bool) -> Known:
        """Read, in ``session``, what the run needs from the database before it asks Next
        Engine: the batches left undelivered (not on a dry run: nothing is delivered then),
        the warehouse's cursor with the product master version (one statement), and the
        orders the admin asked to read again."""
        pending = (
            []
            if dry_run
            else list(
                session.scalars(
                    select(InstructionBatchRecord)
                    .where(col(InstructionBatchRecord.warehouse) == code)
                    .where(col(InstructionBatchRecord.state) == InstructionState.PENDING)
                )
            )
        )
        names = (cursor_name(code), PRODUCTS_CURSOR)
        values = {
            row.name: row.value
            for row in session.scalars(select(Cursor).where(col(Cursor.name).in_(names)))
        }
        retries = sorted(
            session.scalars(
                select(col(ImportedOrder.ne_order_id))
                .where(col(ImportedOrder.warehouse) == code)
                .where(col(ImportedOrder.state) == RETRY)
            )
        )
        state = values.get(names[0])
        return Known(pending, json.loads(state) if state else {}, values.get(names[1]), retries)

    def _scan(self, code: str, known: Known | None = None) -> Scan:
        """The searches for the orders to consider: everything on a full scan, else what
        changed since last time.

        A full scan runs first, and whenever the product master changed (held orders are
        re-evaluated then); otherwise the orders modified since the cursor are read. Orders
        are read with those whose print-instruct date is still ahead, so that date is known:
        the search for the orders whose date passed since the last run runs only once one of
        them falls due (one Next Engine call an interval while nothing changes). With
        ``order_watch`` the modified-since search covers every order of the warehouse's shops
        (cancelled, edited or claimed ones too), so one search serves import and watch.
        """
        if known is None:
            with read_session(self.engine) as session:
                known = self._known(session, code, dry_run=True)
        state = known.state
        since = parse_ne_datetime(state.get("modified"))
        ran = parse_ne_datetime(state.get("ran"))
        base = self._routing(code)
        ready = self._routing(code, due=False)  # full scans also read orders not due yet
        wheres = [ready]
        full = since is None or ran is None or state.get("products") != known.products
        shops = self._shops(code)
        now = format_ne_datetime(self.clock())
        if since is not None and ran is not None:
            overlap = timedelta(minutes=self.config.order_import.overlap_minutes)
            modified = (shops if self.watch is not None else ready).gte(
                "receive_order_last_modified_date", format_ne_datetime(since - overlap)
            )
            if not full:
                wheres = [modified]
                due = state.get("next_print")
                # A cursor of a run that did not note the dates ahead (an older nebridge):
                # the print-date search reads them all (every date ahead is after ``ran``).
                if not state.get(PRINT_DATES_NOTED) or (due is not None and due <= now):
                    wheres.append(ready.gt(PRINTING, format_ne_datetime(ran - overlap)))
            elif self.watch is not None:  # a full scan sees no cancelled order
                wheres.append(modified)
        wheres += [
            base.in_("receive_order_id", known.retries[i : i + IDS_PER_SEARCH])
            for i in range(0, len(known.retries), IDS_PER_SEARCH)
        ]
        if self.watch is not None:
            ids = self.watch.reinstruct_ids(code)
            wheres += [
                shops.in_("receive_order_id", ids[i : i + IDS_PER_SEARCH])
                for i in range(0, len(ids), IDS_PER_SEARCH)
            ]
        return Scan(wheres, full, state, now, known.products, known.retries)

    def _pages(self, scan: Scan) -> Iterator[Page]:
        """Read ``scan``'s searches and yield their orders :data:`PAGE_ORDERS` at a time (at
        least one page, maybe empty). An order met in an earlier search is not taken again.
        Notes the earliest print-instruct date still ahead."""
        ahead = scan.state.get("next_print")
        ahead = ahead if ahead and ahead > scan.now else None
        earlier: set[str] = set()  # orders of the searches already read
        groups: dict[str, list[Mapping[str, str | None]]] = {}
        paged = 0
        for where in scan.wheres:
            mine: set[str] = set()  # orders first met in this search
            for row in self.client.search_order_rows(
                (*ROW_FIELDS, *BASE_FIELDS), where=where, sort=ROW_SORT
            ):
                oid = str(row["receive_order_id"])
                if oid in earlier:
                    continue
                group = groups.get(oid)
                if group is None:
                    if oid in mine:  # its first rows went out with an earlier page
                        raise RowsOutOfOrder(
                            f"the rows of order {oid} came apart in a search sorted by order; "
                            "the next run reads the orders again"
                        )
                    if len(groups) >= PAGE_ORDERS:
                        ahead = self._ahead(groups, scan.now, ahead)
                        yield self._make_page(groups, scan.now)
                        paged, groups = paged + 1, {}
                    mine.add(oid)
                    group = groups[oid] = []
                if all(
                    str(r["receive_order_row_no"]) != str(row["receive_order_row_no"])
                    for r in group
                ):  # a row repeated by the paging is taken once
                    group.append(row)
            earlier |= mine
        self._next_print = self._ahead(groups, scan.now, ahead)
        if groups or not paged:
            yield self._make_page(groups, scan.now)

    def _ahead(
        self, groups: Mapping[str, list[Mapping[str, str | None]]], now: str, ahead: str | None
    ) -> str | None:
        """The earliest print-instruct date after ``now`` among ``ahead`` and the orders of
        ``groups`` ready to import once it is reached."""
        dates = [
            str(g[0].get(PRINTING))
            for g in groups.values()
            if g[0].get(PRINTING)
            and str(g[0].get(PRINTING)) > now
            and str(g[0].get("receive_order_order_status_id")) == READY_STATUS
            and OrderWatch.status_change(g[0]) == ""
        ]
        return min([*dates, *([ahead] if ahead else [])], default=None)

    def _make_page(self, groups: dict[str, list[Mapping[str, str | None]]], now: str) -> Page:
        """The page of ``groups``: the importable orders with their rows not cancelled."""
        return Page(
            [
                self._candidate(live)
                for group in groups.values()
                if self._importable(group[0], now) and (live := [r for r in group if _row_live(r)])
            ],
            groups,
        )

    def _watch(
        self,
        code: str,
        groups: Mapping[str, list[Mapping[str, str | None]]],
        dry_run: bool,
        result: StageResult,
        index: LazyIndex | None = None,
    ) -> list[Candidate]:
        """Find the changes of the warehouse's watched orders among ``groups`` and record
        them (a dry run only lists them); return every watched order read (for the cursor).
        An edited order is re-instructed only once the WMS accepted its cancellation."""
        assert self.watch is not None
        watched = self.watch.watched(code, sorted(groups))
        sent = self.watch.sent_instructions([r for r in watched.values() if r.state == INSTRUCTED])
        products = index or self._product_index()
        changes: list[Change] = []
        read: list[Candidate] = []
        for oid, known in watched.items():
            group = groups[oid]
            cand = self._live_candidate(group)
            read.append(cand)
            modified = cand.order.last_modified
            kind = OrderWatch.status_change(group[0])
            if kind:
                changes.append(Change(oid, kind, _cancel_words(group[0]), modified))
                continue
            if (
                known.state != INSTRUCTED
                or cand.order.status_id >= 50
                or known.ne_last_modified == modified
                or oid not in sent
            ):
                continue
            lines, problems, _case = self._lines(cand, products.get())
            live = [r for r in group if _row_live(r)]
            if not live:
                problems = ["every row of the order was cancelled"]
            if problems:
                changes.append(Change(oid, "edited", "; ".join(problems), modified))
                continue
            diff = compare(sent[oid], self._instruction(cand, code, lines))
            if diff:
                changes.append(Change(oid, "edited", diff, modified))
        for change in changes:
            result.counts[f"watch_{change.kind}"] = result.counts.get(f"watch_{change.kind}", 0) + 1
            result.subjects.setdefault(f"watch_{change.kind}", []).append(change.ne_order_id)
        if dry_run:
            result.planned.extend(
                f"tell the WMS to drop order {c.ne_order_id} ({c.kind} in Next Engine: {c.detail})"
                for c in changes
            )
        else:
            self.watch.record(code, changes)
        return read

    @classmethod
    def _live_candidate(cls, rows: Sequence[Mapping[str, str | None]]) -> Candidate:
        """The order of ``rows`` with only its rows not cancelled (maybe none)."""
        live = [r for r in rows if _row_live(r)]
        if live:
            return cls._candidate(live)
        cand = cls._candidate(rows[:1])
        return Candidate(order=replace(cand.order, rows=()))

    @staticmethod
    def _candidate(rows: Sequence[Mapping[str, str | None]]) -> Candidate:
        base = {name: rows[0].get(name) for name in BASE_FIELDS}
        order = NeOrder(
            order_id=str(base["receive_order_id"]),
            shop_id=str(base["receive_order_shop_id"] or ""),
            shop_order_id=str(base["receive_order_shop_cut_form_id"] or ""),
            status_id=int(base["receive_order_order_status_id"] or 0),
            grouping_tag=str(base["receive_order_gruoping_tag"] or ""),
            last_modified=str(base["receive_order_last_modified_date"] or ""),
            rows=tuple(
                sorted(
                    (
                        NeOrderRow(
                            int(r["receive_order_row_no"] or 0),
                            str(r["receive_order_row_goods_id"] or ""),
                            int(r["receive_order_row_quantity"] or 0),
                        )
                        for r in rows
                    ),
                    key=lambda r: r.row_no,
                )
            ),
            fields=base,
        )
        return Candidate(order=order)

    # -- deciding ---------------------------------------------------------------------------

    def _decide(
        self,
        candidates: Sequence[Candidate],
        warehouse: WarehouseInfo,
        full_scan: bool,
        forced: set[str] | frozenset[str] = frozenset(),
        index: LazyIndex | None = None,
    ) -> ImportPlan:
        """Instruct, hold or skip each candidate. Settled orders are left alone, and so is an
        order held as it still is in Next Engine, except on a full scan (the product master
        changed) or after ``nebridge orders retry``. ``forced`` orders (edited after import,
        their cancellation accepted) are rendered anew without the filters that once let
        them in. ``index``: the products by link code (read once per run)."""
        plan = ImportPlan()
        if not candidates:
            return plan
        with read_session(self.engine) as session:
            known = session.execute(
                select(
                    col(ImportedOrder.ne_order_id),
                    col(ImportedOrder.state),
                    col(ImportedOrder.ne_last_modified),
                ).where(col(ImportedOrder.ne_order_id).in_([c.order_id for c in candidates]))
            ).all()
        modified = {c.order_id: c.order.last_modified for c in candidates}
        done = {
            oid
            for oid, state, seen in known
            if state in SETTLED or (state == HELD and not full_scan and seen == modified[oid])
        } - forced
        products = index or self._product_index()
        for cand in candidates:
            if cand.order_id in done:
                continue
            verdict = (
                FilterVerdict(accept=True)
                if cand.order_id in forced
                else self._filter(cand, warehouse)
            )
            if isinstance(verdict, str):
                plan.hold.append((cand, verdict))
                continue
            if not verdict.accept:
                plan.skip.append((cand, verdict.reason))
                continue
            lines, problems, case_matches = self._lines(cand, products.get())
            if problems or not lines:
                plan.hold.append((cand, "; ".join(problems) or "order has no rows to ship"))
                continue
            plan.matched_ignoring_case += case_matches
            plan.instruct.append((cand, self._instruction(cand, warehouse.code, lines)))
        return plan

    def _product_index(self) -> LazyIndex:
        """The WMS products by link code, under the link-code plugin's matching key, at the
        master version read now (the products are read at the index's first use)."""
        with read_session(self.engine) as session:
            version = session.get(Cursor, PRODUCTS_CURSOR)
        return ProductIndex.later(self._products, version.value if version else None)

    def _products(self, version: str | None) -> ProductIndex:
        """The WMS products by link code now, as the index of master ``version`` (read
        before: the products are at least as new as it)."""
        with read_session(self.engine) as session:
            products = [
                (p, link)
                for p, link in session.execute(
                    select(col(WmsProduct.product_code), col(WmsProduct.link_code)).where(
                        col(WmsProduct.link_code).is_not(None)
                    )
                ).all()
            ]
        key = self.host.link_code_key() or (lambda code: code)
        return ProductIndex(products, key, version)

    @staticmethod
    def _lines(
        cand: Candidate, index: ProductIndex
    ) -> tuple[list[OrderInstructionLine], list[str], int]:
        """The instruction lines of an order, the rows that match no single product, and how
        many matched only ignoring letter case."""
        lines: list[OrderInstructionLine] = []
        problems: list[str] = []
        case_matches = 0
        for row in cand.order.rows:
            if row.quantity <= 0:
                continue
            product, reason = index.match(row.goods_code)
            if product is None:
                problems.append(f"row {row.row_no}: {reason}")
                continue
            case_matches += index.link_of(product) != row.goods_code
            lines.append(OrderInstructionLine(row.row_no, product, row.goods_code, row.quantity))
        return lines, problems, case_matches

    def _filter(self, cand: Candidate, warehouse: WarehouseInfo) -> FilterVerdict | str:
        """The combined verdict of every filter plugin, or the error of one that failed."""
        for outcome in self.host.filter_order(cand.order, warehouse):
            if outcome.error is not None:
                return (
                    f"filter plugin {outcome.plugin} failed: "
                    f"{type(outcome.error).__name__}: {outcome.error}"
                )
            if outcome.result is not None and not outcome.result.accept:
                return outcome.result
        return FilterVerdict(accept=True)

    @staticmethod
    def _instruction(
        cand: Candidate, warehouse: str, lines: list[OrderInstructionLine]
    ) -> OrderInstruction:
        b = cand.order.fields
        address = " ".join(
            p
            for p in (b["receive_order_consignee_address1"], b["receive_order_consignee_address2"])
            if p
        )
        return OrderInstruction(
            ne_order_id=cand.order_id,
            shop_order_id=str(b["receive_order_shop_cut_form_id"] or ""),
            warehouse=warehouse,
            order_date=str(b["receive_order_date"] or ""),
            delivery_method=str(
                b["receive_order_delivery_name"] or b["receive_order_delivery_id"] or ""
            ),
            consignee_name=str(b["receive_order_consignee_name"] or ""),
            consignee_zip=str(b["receive_order_consignee_zip_code"] or ""),
            consignee_address=address,
            consignee_tel=str(b["receive_order_consignee_tel"] or ""),
            lines=tuple(lines),
        )

    # -- recording and delivering -----------------------------------------------------------

    def _record(self, code: str, plan: ImportPlan) -> InstructionBatch | None:
        """Record one page's decisions: its instruction batch (pending) with its orders
        instructed, and its held orders; the batch is returned for delivery."""
        now = self.clock()
        batch = None
        with write_session(self.engine) as session:
            if plan.instruct:
                key = f"{code}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
                orders = [instr for _cand, instr in plan.instruct]
                session.add(
                    InstructionBatchRecord(
                        key=key,
                        warehouse=code,
                        state=InstructionState.PENDING,
                        created_at=now,
                        orders=dumps([_instruction_dict(o) for o in orders]),
                    )
                )
                ids = [cand.order_id for cand, _ in plan.instruct]
                if self.watch is not None:
                    self.watch.link_reinstruction(session, ids, key)
                session.execute(
                    delete(ImportedOrder).where(col(ImportedOrder.ne_order_id).in_(ids))
                )
                insert_many(
                    session,
                    ImportedOrder.__table__,  # type: ignore[attr-defined]
                    (
                        "ne_order_id",
                        "warehouse",
                        "state",
                        "instruction_batch",
                        "ne_last_modified",
                        "imported_at",
                        "updated_at",
                    ),
                    [
                        (cand.order_id, code, INSTRUCTED, key, cand.order.last_modified, now, now)
                        for cand, _instr in plan.instruct
                    ],
                )
                batch = InstructionBatch(key=key, created_at=now, orders=orders)
            for cand, reason in plan.hold:
                row = session.get(ImportedOrder, cand.order_id) or ImportedOrder(
                    ne_order_id=cand.order_id, warehouse=code, state=HELD, imported_at=now
                )
                row.state, row.hold_reason, row.updated_at = HELD, reason, now
                row.ne_last_modified = cand.order.last_modified
                session.add(row)
        return batch

    def _close(
        self,
        code: str,
        decided: set[str],
        newest: str,
        started: datetime,
        scan: Scan,
        result: StageResult,
    ) -> None:
        """After the last page: forget the retries this run searched that Next Engine no
        longer offers (``decided``: the orders instructed or held in this run) and advance
        the cursor — unless nothing changed but the time it ran, noted again only every
        :data:`RAN_REFRESH` (an idle run commits nothing)."""
        unoffered = [oid for oid in scan.retries if oid not in decided]
        cursor = self._cursor_value(newest, started, scan)
        if scan.full:
            log.info("warehouse=%s full order scan: %d candidate(s)", code, result.items_in)
        if not unoffered and _only_ran_changed(scan.state, cursor, started):
            return
        with write_session(self.engine) as session:
            gone = (
                list(
                    session.scalars(
                        select(ImportedOrder)
                        .where(col(ImportedOrder.ne_order_id).in_(unoffered))
                        .where(col(ImportedOrder.state) == RETRY)
                    )
                )
                if unoffered
                else []
            )
            for row in gone:
                session.delete(row)
                result.notices.append(
                    f"order {row.ne_order_id} is not held any more: Next Engine no longer "
                    f"offers it for import into {code} (status, cancellation, shop or "
                    "print-instruct date), or a filter plugin skipped it"
                )
            name, value = cursor_name(code), json.dumps(cursor)
            updated = cast(  # the cursor as the run read it (one import at a time)
                CursorResult[Any],
                session.execute(
                    update(Cursor)
                    .where(col(Cursor.name) == name)
                    .values(value=value, updated_at=self.clock())
                ),
            )
            if not updated.rowcount:
                session.add(Cursor(name=name, value=value))

    def _cursor_value(self, newest: str, started: datetime, scan: Scan) -> dict[str, Any]:
        """What this run read, for the cursor: the latest order change, when it ran, the
        product master it matched against (read with the cursor at its start), and the next
        print date due."""
        old = scan.state
        modified = newest or old.get("modified") or format_ne_datetime(started)
        return {
            "modified": max(modified, old.get("modified", modified)),
            "ran": format_ne_datetime(started),
            "products": scan.products,
            "next_print": self._next_print,
            PRINT_DATES_NOTED: True,
        }

    def _deliver_pending(
        self, records: Sequence[InstructionBatchRecord], result: StageResult
    ) -> None:
        """Deliver batches a crash left recorded but undelivered (same key: idempotent)."""
        for record in records:
            orders = [instruction_from(d) for d in json.loads(record.orders)]
            self._deliver(InstructionBatch(record.key, record.created_at, orders), result)

    def _deliver(self, batch: InstructionBatch, result: StageResult) -> set[str]:
        """Push ``batch``; record it delivered, without the orders the connector refused,
        which are held alone. Returns the ids of the refused orders."""
        refused: dict[str, str] = {}
        ctx = self.connector_context()
        if self.guard is not None:  # a worker that lost the company must not instruct twice
            self.guard(f"instruction batch {batch.key}")
        try:
            self.connector.push_orders(batch, ctx)
        except OrdersRefused as exc:
            refused = exc.refused
        except Exception as exc:  # delivered again next run, under the same key
            if ctx.should_stop():  # the connector ended its work for the engine's stop
                log.info("instruction batch %s: %s", batch.key, exc)
                result.notices.append(f"instructions {batch.key} not all delivered: {exc}")
                return set()
            log.error("delivering instruction batch %s failed: %s", batch.key, exc)
            result.failures.append(f"instructions {batch.key} not delivered yet: {exc}")
            attention.report(
                self.engine,
                Problem(
                    key=f"held_instruction:{batch.key}",
                    kind=AttentionKind.HELD_INSTRUCTION,
                    reason=(
                        f"instruction batch {batch.key} ({len(batch.orders)} order(s)) is not "
                        f"delivered to the WMS yet: {type(exc).__name__}: {exc}"
                    ),
                    fix=(
                        "fix the cause named here (WMS connection, outbox folder, connector "
                        "settings); every run delivers the batch again by itself, `nebridge run "
                        "--once` tries at once"
                    ),
                    warehouse=result.warehouse,
                    subject=batch.key,
                ),
                source="import_orders",
            )
            return set()
        mine = {o.ne_order_id for o in batch.orders}
        strangers = sorted(set(refused) - mine)
        if strangers:
            log.warning(
                "batch %s: the connector refused orders not in it: %s",
                batch.key,
                ", ".join(strangers),
            )
        refused = {oid: why for oid, why in refused.items() if oid in mine}
        now = self.clock()
        with write_session(self.engine) as session:
            record = session.get(InstructionBatchRecord, batch.key)
            if record is not None:
                if refused:
                    record.orders = dumps(
                        [_instruction_dict(o) for o in batch.orders if o.ne_order_id not in refused]
                    )
                record.state, record.pushed_at = InstructionState.PUSHED, now
                session.add(record)
            attention.resolve_in(session, [f"held_instruction:{batch.key}"], now)
            for order_id, why in refused.items():
                row = session.get(ImportedOrder, order_id)
                if row is None or row.instruction_batch != batch.key:
                    continue
                row.state, row.instruction_batch, row.updated_at = HELD, None, now
                row.hold_reason = f"the WMS connector refused the order: {why}"
                session.add(row)
        for order_id, why in refused.items():
            log.warning("order %s held: the WMS connector refused it: %s", order_id, why)
            result.notices.append(f"order {order_id} held: the WMS connector refused it: {why}")
            result.subjects.setdefault("held", []).append(order_id)
        result.held += len(refused)
        result.counts["held"] = result.counts.get("held", 0) + len(refused)
        return set(refused)

    def _claim(self, claimed: Sequence[Claimed], result: StageResult) -> None:
        """Mark imported orders in Next Engine (``order_import.claim``); best effort."""
        mode = self.config.order_import.claim
        if mode == "none" or not claimed:
            return
        try:
            if mode == "receipted":
                outcome = self.client.bulk_receipted(
                    [OrderRef(c.order_id, c.last_modified) for c in claimed]
                )
            else:
                token = f"[{self.config.order_import.claim_tag}]"
                outcome = self.client.bulk_update(
                    [
                        OrderUpdate(
                            c.order_id,
                            c.last_modified,
                            {"receive_order_gruoping_tag": c.grouping_tag + token},
                        )
                        for c in claimed
                        if token not in c.grouping_tag
                    ]
                )
        except NextEngineError as exc:
            self.gate.observe(exc)
            result.notices.append(f"claim ({mode}) not written: {exc}")
            return
        for order_id, (code, message) in outcome.failed.items():
            result.notices.append(f"order {order_id}: claim ({mode}) refused [{code}] {message}")


def _only_ran_changed(old: Mapping[str, Any], new: Mapping[str, Any], started: datetime) -> bool:
    """Whether cursor ``new`` differs from ``old`` only in when the import ran, which ``old``
    notes as at most :data:`RAN_REFRESH` before ``started``. (``ran`` only bounds the
    print-date search from below: one noted a little earlier makes it read a little more.)"""
    ran = parse_ne_datetime(old.get("ran"))
    return (
        ran is not None
        and started - ran <= RAN_REFRESH
        and {k: v for k, v in old.items() if k != "ran"}
        == {k: v for k, v in new.items() if k != "ran"}
    )


def _row_live(row: Mapping[str, str | None]) -> bool:
    """A row that is not cancelled (a cancelled row is no goods to ship)."""
    return str(row.get("receive_order_row_cancel_flag") or "0") in ("", "0")


def _cancel_words(base: Mapping[str, str | None]) -> str:
    """What Next Engine says about a cancelled or deleted order."""
    return (
        f"cancel type {base.get('receive_order_cancel_type_id') or 0}, deleted flag "
        f"{base.get('receive_order_deleted_flag') or 0}"
    )


def _instruction_dict(order: OrderInstruction) -> dict[str, Any]:
    """``asdict(order)`` without its deep copies (100,000 orders: seconds saved)."""
    data = {name: getattr(order, name) for name in _INSTRUCTION_FIELDS}
    data["lines"] = [
        {
            "line_no": x.line_no,
            "product_code": x.product_code,
            "ne_goods_code": x.ne_goods_code,
            "quantity": x.quantity,
        }
        for x in order.lines
    ]
    return data


_INSTRUCTION_FIELDS = tuple(f.name for f in fields(OrderInstruction) if f.name != "lines")


def instruction_from(data: Mapping[str, Any]) -> OrderInstruction:
    lines = tuple(OrderInstructionLine(**line) for line in data["lines"])
    return OrderInstruction(**{**data, "lines": lines})


# -- admin (``nebridge orders``) -------------------------------------------------------------


class OrderAdminError(Exception):
    """An admin request on an order that cannot be done; the message says why and what to do."""


def list_orders(
    engine: Bind, states: Sequence[str], limit: int, warehouse: str | None = None
) -> list[dict[str, Any]]:
    """Orders nebridge knows of (instructed, held, retry, dropped; with ``order_watch`` also
    cancelled and reinstruct), newest change first."""
    stmt = (
        select(ImportedOrder)
        .order_by(col(ImportedOrder.updated_at).desc(), col(ImportedOrder.ne_order_id))
        .limit(limit)
    )
    if states:
        stmt = stmt.where(col(ImportedOrder.state).in_(list(states)))
    if warehouse:
        stmt = stmt.where(col(ImportedOrder.warehouse) == warehouse)
    with read_session(engine) as session:
        rows = list(session.scalars(stmt))
    return [
        {
            "ne_order_id": o.ne_order_id,
            "warehouse": o.warehouse,
            "state": o.state,
            "reason": o.hold_reason,
            "instruction_batch": o.instruction_batch,
            "ne_last_modified": o.ne_last_modified,
            "imported_at": o.imported_at.isoformat(),
            "updated_at": o.updated_at.isoformat(),
        }
        for o in rows
    ]


def _order(session: Any, ne_order_id: str) -> ImportedOrder:
    row: ImportedOrder | None = session.get(ImportedOrder, ne_order_id)
    if row is None:
        raise OrderAdminError(
            f"nebridge has no record of order {ne_order_id}: it was never held or imported. "
            "`nebridge orders list` shows the orders nebridge knows of"
        )
    if row.state in (INSTRUCTED, REINSTRUCT):
        raise OrderAdminError(
            f"order {ne_order_id} was instructed to the WMS ({row.warehouse}, batch "
            f"{row.instruction_batch}); nebridge never instructs an order twice. Look for it "
            "in the WMS"
        )
    return row


#: How an order import runs now, said after ``orders retry`` (a single-company installation).
RUN_ONE_NOW = "`nebridge run --once` runs one now"


def retry_order(
    engine: Bind,
    ne_order_id: str,
    clock: Callable[[], datetime] = utcnow,
    run_now: str = RUN_ONE_NOW,
) -> str:
    """Have the next import of the order's warehouse read it again from Next Engine and render
    it anew (a held or dropped order). Nothing is sent to Next Engine or the WMS now;
    ``run_now`` says how the import comes sooner (in fleet mode: the serving worker's)."""
    with write_session(engine) as session:
        row = _order(session, ne_order_id)
        if row.state != RETRY:
            row.hold_reason = f"retry asked by the admin; was {row.state}: {row.hold_reason}"
            row.state, row.updated_at = RETRY, clock()
            session.add(row)
        warehouse = row.warehouse
    return (
        f"order {ne_order_id} will be read again from Next Engine and rendered anew at the "
        f"next order import of {warehouse} ({run_now})"
    )


def drop_order(engine: Bind, ne_order_id: str, clock: Callable[[], datetime] = utcnow) -> str:
    """Give a held order up for good: nebridge never imports it (nothing changes in Next
    Engine; ship or cancel it there by hand). ``retry_order`` undoes it."""
    with write_session(engine) as session:
        row = _order(session, ne_order_id)
        if row.state == DROPPED:
            return f"order {ne_order_id} was already dropped"
        row.hold_reason = f"dropped by the admin; was {row.state}: {row.hold_reason}"
        row.state, row.updated_at = DROPPED, clock()
        session.add(row)
    return (
        f"order {ne_order_id} dropped: nebridge will never import it; handle it in Next "
        f"Engine by hand (`nebridge orders retry {ne_order_id}` undoes this)"
    )
