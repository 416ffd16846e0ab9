"""Executing outbox actions against Next Engine, exactly once in effect.

Two executors, one per action kind:

* :class:`ShipExecutor` — tracking numbers for a batch in one ``bulkupdate``, one search to
  refresh ``last_modified``, then one ``shipped`` per order. Every order's state is read
  first: an order cancelled or already shipped in Next Engine is never shipped (again) and
  the item says why. Items are marked in flight before ``shipped`` is sent; an item found in
  flight later (crash, lost answer) is settled by reading the order, never by resending
  blindly — and Next Engine itself refuses to ship a shipped order twice.
* :class:`StockExecutor` — the stock deltas due in one dispatch, aggregated per Next Engine
  goods code into one ``syohin_code,zaiko_su`` upload, the queue polled to completion and the
  result recorded on every contributing item. The upload is recorded (with its items) before
  it is sent; if its answer is lost, the upload queue is searched for it before anything is
  sent again (and no other upload goes out meanwhile, so the lost one is found by
  elimination); it counts as absent only ``upload_settle_seconds`` after it was sent, and if
  the queue cannot tell, the items are held in doubt for the admin. One bad goods code never
  fails the others: an upload Next Engine refuses as a whole (queue status -1, or a
  validation error) is sent again in halves, until each refused goods code is alone and only
  its items fail; items of such an upload wait as ``pending`` with ``dispatch_ref`` =
  :data:`ISOLATE` and are never mixed with other goods again (a crash mid-way resumes there).
  A failed upload applied nothing (as the queue reports it), so sending its rows again is safe.

Executors never leave due items untouched: while Next Engine work is blocked they are put off
by ``retry_seconds``, so a dispatcher pass can never spin on them.

:data:`EXECUTORS` maps each action kind of :data:`hooks.actions.ACTION_KINDS` to its executor.
:class:`~daemon.negate.NeGate` stops all Next Engine work while the link needs re-connection or
Next Engine is in maintenance; WMS events keep being accepted meanwhile.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from daemon.config import DispatchConfig
from daemon.negate import NeGate
from daemon.nextengine.client import NextEngineClient, QueueResult
from daemon.nextengine.errors import (
    NeLockConflict,
    NeMaintenance,
    NeOutcomeUnknown,
    NeReauthRequired,
    NeSystemError,
    NeValidationError,
    NextEngineError,
)
from daemon.nextengine.search import Where
from daemon.nextengine.xmlbuild import OrderUpdate
from daemon.orderwatch import report_shipped_cancelled
from daemon.outbox import transition
from daemon.serialize import dumps
from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import (
    OutboxItem,
    OutboxState,
    StockUpload,
    UploadState,
    WmsProduct,
    utcnow,
)
from hooks.actions import ADJUST_STOCK, SHIP_ORDER

log = logging.getLogger(__name__)

ORDER_FIELDS = (
    "receive_order_id",
    "receive_order_order_status_id",
    "receive_order_cancel_type_id",
    "receive_order_deleted_flag",
    "receive_order_last_modified_date",
    "receive_order_delivery_cut_form_id",
)
SHIPPABLE = (20, 40)
SHIPPED = 50
TRACKING_FIELD = "receive_order_delivery_cut_form_id"
LOCK_RETRIES = 3
API_UPLOAD_NAME = "NE_API"  # que_upload_name of uploads made through the API (gaps §5.4)
#: ``dispatch_ref`` of pending stock items whose last upload Next Engine refused as a whole.
ISOLATE = "isolate"
#: What became of one stock upload: applied, refused by NE, or not settled in this call.
DONE, REFUSED, OPEN = "done", "refused", "open"


def _payload(item: OutboxItem) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(item.payload)
    return data


def _ids(items: Iterable[OutboxItem]) -> list[int]:
    return [i.id for i in items if i.id is not None]


def _global(exc: BaseException) -> bool:
    """Errors after which no further call should be made in this dispatch."""
    return isinstance(exc, NeReauthRequired | NeMaintenance) or (
        isinstance(exc, NextEngineError)
        and not isinstance(
            exc, NeLockConflict | NeValidationError | NeOutcomeUnknown | NeSystemError
        )
    )


class _NeExecutor:
    """What both executors share: the store, the client, the gate, settings and clock."""

    def __init__(
        self,
        engine: Bind,
        client: NextEngineClient,
        gate: NeGate,
        settings: DispatchConfig = DispatchConfig(),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.client = client
        self.gate = gate
        self.settings = settings
        self.clock = clock

    def _move(self, items: Sequence[OutboxItem], state: OutboxState, **kw: Any) -> None:
        transition(self.engine, _ids(items), state, clock=self.clock, **kw)


class ShipExecutor(_NeExecutor):
    """Writes tracking numbers and the shipped status back to Next Engine."""

    kind = SHIP_ORDER.name

    def _numbered(self, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """The items whose order id is a Next Engine order number; the others fail, so one bad
        id never stops the batch."""
        good: list[OutboxItem] = []
        bad: list[OutboxItem] = []
        for item in items:
            (good if item.subject.isascii() and item.subject.isdigit() else bad).append(item)
        self._move(
            bad,
            OutboxState.FAILED,
            error="not a Next Engine order number (digits only); fix the shipment in "
            "the WMS and send it under a new id",
        )
        return good

    def _read(self, order_ids: Iterable[str]) -> dict[str, Mapping[str, str | None]]:
        ids = sorted(set(order_ids), key=int)
        if not ids:
            return {}
        rows = self.client.search_orders(ORDER_FIELDS, where=Where().in_("receive_order_id", ids))
        return {str(r["receive_order_id"]): r for r in rows}

    # -- reconcile --------------------------------------------------------------------------

    def reconcile(self, items: Sequence[OutboxItem]) -> None:
        """Settle items left in flight by reading each order's state in Next Engine."""
        if self.gate.blocked():
            return
        items = self._numbered(items)
        try:
            orders = self._read(_payload(i)["ne_order_id"] for i in items)
        except NextEngineError as exc:
            self.gate.observe(exc)
            log.warning("cannot reconcile %d ship action(s) now: %s", len(items), exc)
            return
        done, retry, skipped = [], [], []
        for item in items:
            row = orders.get(_payload(item)["ne_order_id"])
            if row is not None and int(row["receive_order_order_status_id"] or 0) == SHIPPED:
                done.append(item)
            elif row is None or _cancelled(row):
                skipped.append(item)
            else:
                retry.append(item)
        self._move(done, OutboxState.DONE, result="shipped (confirmed by reading the order)")
        self._move(
            skipped,
            OutboxState.SKIPPED,
            error="order cancelled or gone in Next Engine; not shipped",
        )
        self._move(
            retry,
            OutboxState.PENDING,
            error="not shipped in Next Engine (read back after an unknown outcome); "
            "will be sent again",
        )

    # -- execute ----------------------------------------------------------------------------

    def execute(self, items: Sequence[OutboxItem]) -> None:
        """Ship a batch of orders: check, write tracking numbers, refresh, ship each."""
        if self.gate.blocked():
            self._move(items, OutboxState.PENDING, retry_in=self.settings.retry)
            return
        items = self._numbered(items)
        try:
            orders = self._read(_payload(i)["ne_order_id"] for i in items)
        except NextEngineError as exc:
            self.gate.observe(exc)
            log.warning("cannot read %d order(s) to ship now: %s", len(items), exc)
            self._move(items, OutboxState.PENDING, error=str(exc), retry_in=self.settings.retry)
            return
        ready = self._triage(items, orders)
        if not ready:
            return
        ready = self._write_tracking(ready, orders)
        if not ready:
            return
        self._move(ready, OutboxState.IN_FLIGHT, count_attempt=True)
        try:
            orders = self._read(_payload(i)["ne_order_id"] for i in ready)
        except NextEngineError as exc:
            self.gate.observe(exc)
            self._move(ready, OutboxState.PENDING, error=str(exc), retry_in=self.settings.retry)
            return
        self._ship_each(ready, orders)

    def _triage(
        self, items: Sequence[OutboxItem], orders: Mapping[str, Mapping[str, str | None]]
    ) -> list[OutboxItem]:
        ready, missing, cancelled, shipped, waiting, given_up = [], [], [], [], [], []
        for item in items:
            row = orders.get(_payload(item)["ne_order_id"])
            if row is None:
                missing.append(item)
            elif _cancelled(row):
                cancelled.append(item)
            elif int(row["receive_order_order_status_id"] or 0) == SHIPPED:
                shipped.append(item)
            elif int(row["receive_order_order_status_id"] or 0) in SHIPPABLE:
                ready.append(item)
            elif item.attempts + 1 >= self.settings.not_ready_attempts:
                given_up.append(item)
            else:
                waiting.append(item)
        self._move(missing, OutboxState.FAILED, error="order not found in Next Engine")
        self._move(
            cancelled,
            OutboxState.SKIPPED,
            error="order was cancelled in Next Engine after import; not shipped",
        )
        self._move(
            shipped,
            OutboxState.SKIPPED,
            error="order was already shipped in Next Engine; not shipped again",
        )
        self._move(
            waiting,
            OutboxState.PENDING,
            count_attempt=True,
            retry_in=self.settings.not_ready_retry,
            error="order is not ready to ship in Next Engine (status not 20/40); will check again",
        )
        self._move(
            given_up,
            OutboxState.FAILED,
            count_attempt=True,
            error="order stayed in a status that cannot be shipped; check it in "
            "Next Engine, then `nebridge outbox retry ID`",
        )
        report_shipped_cancelled(self.engine, cancelled)
        for item in (*cancelled, *shipped):
            log.warning(
                "ship action %s for order %s skipped: %s",
                item.id,
                item.subject,
                "cancelled" if item in cancelled else "already shipped",
            )
        return ready

    def _write_tracking(
        self, ready: list[OutboxItem], orders: Mapping[str, Mapping[str, str | None]]
    ) -> list[OutboxItem]:
        updates = []
        for item in ready:
            number = _payload(item).get("tracking_number")
            row = orders[item.subject]
            if number and (row.get(TRACKING_FIELD) or "") != number:
                updates.append(
                    OrderUpdate(
                        item.subject,
                        str(row["receive_order_last_modified_date"]),
                        {TRACKING_FIELD: number},
                    )
                )
        if not updates:
            return ready
        try:
            result = self.client.bulk_update(updates)
        except NextEngineError as exc:
            self.gate.observe(exc)
            log.warning("tracking numbers of %d order(s) not written: %s", len(updates), exc)
            self._move(
                ready,
                OutboxState.PENDING,
                error=f"tracking numbers not written: {exc}",
                retry_in=self.settings.retry,
            )
            return []
        failed: list[OutboxItem] = []
        conflicts: list[OutboxItem] = []
        for item in ready:
            if item.subject in result.failed:
                error = result.error(item.subject)
                (conflicts if isinstance(error, NeLockConflict) else failed).append(item)
                if not isinstance(error, NeLockConflict):
                    self._move(
                        [item],
                        OutboxState.FAILED,
                        error=f"tracking number not accepted by Next Engine: {error}",
                    )
        for item in conflicts:
            if not self._retry_tracking(item):
                failed.append(item)
        return [i for i in ready if i not in failed]

    def _retry_tracking(self, item: OutboxItem) -> bool:
        number = _payload(item)["tracking_number"]
        for _ in range(LOCK_RETRIES):
            try:
                row = self._read([item.subject]).get(item.subject)
                if row is None or _cancelled(row):
                    self._move(
                        [item],
                        OutboxState.SKIPPED,
                        error="order cancelled in Next Engine while writing tracking",
                    )
                    return False
                if (row.get(TRACKING_FIELD) or "") == number:
                    return True
                self.client.update_order(
                    item.subject,
                    str(row["receive_order_last_modified_date"]),
                    {TRACKING_FIELD: number},
                )
                return True
            except NeLockConflict:
                continue
            except NeValidationError as exc:  # refused for good, this order only: held alone
                self._move(
                    [item],
                    OutboxState.FAILED,
                    error=f"tracking number not accepted by Next Engine: {exc}; fix it, "
                    f"then `nebridge outbox retry {item.id}`",
                )
                return False
            except NextEngineError as exc:
                self.gate.observe(exc)
                self._move(
                    [item], OutboxState.PENDING, error=str(exc), retry_in=self.settings.retry
                )
                return False
        self._move(
            [item],
            OutboxState.PENDING,
            retry_in=self.settings.retry,
            error="order kept changing in Next Engine while writing tracking",
        )
        return False

    def _ship_each(
        self, ready: list[OutboxItem], orders: Mapping[str, Mapping[str, str | None]]
    ) -> None:
        done: list[OutboxItem] = []
        for index, item in enumerate(ready):
            row = orders.get(item.subject)
            try:
                outcome = self._ship_one(item, row)
            except _StillUnknown as unknown:  # stays in flight; the next pass reads the order
                if _global(unknown.cause):
                    self._move(
                        ready[index + 1 :],
                        OutboxState.PENDING,
                        retry_in=self.settings.retry,
                        error=f"not sent: {unknown.cause}",
                    )
                    break
                continue
            except NeValidationError as exc:  # refused for good, this order only: held alone
                self._move(
                    [item],
                    OutboxState.FAILED,
                    error=f"Next Engine refused to ship the order: {exc}; fix the order "
                    f"in Next Engine, then `nebridge outbox retry {item.id}`",
                )
                continue
            except NextEngineError as exc:
                self.gate.observe(exc)
                self._move(
                    [item], OutboxState.PENDING, error=str(exc), retry_in=self.settings.retry
                )
                if _global(exc):
                    self._move(
                        ready[index + 1 :],
                        OutboxState.PENDING,
                        retry_in=self.settings.retry,
                        error=f"not sent: {exc}",
                    )
                    break
                continue
            if outcome is None:
                done.append(item)
            if len(done) >= 50:
                self._move(done, OutboxState.DONE, result="shipped")
                done = []
        self._move(done, OutboxState.DONE, result="shipped")

    def _ship_one(self, item: OutboxItem, row: Mapping[str, str | None] | None) -> str | None:
        """Ship one order; None when shipped, else the reason it was settled otherwise."""
        receipted = False
        for _ in range(LOCK_RETRIES):
            if row is None or _cancelled(row):
                self._move(
                    [item],
                    OutboxState.SKIPPED,
                    error="order cancelled in Next Engine before shipping; not shipped",
                )
                return "cancelled"
            status = int(row["receive_order_order_status_id"] or 0)
            if status == SHIPPED:
                self._move(
                    [item],
                    OutboxState.SKIPPED,
                    error="order was shipped in Next Engine by someone else meanwhile",
                )
                return "shipped elsewhere"
            last_modified = str(row["receive_order_last_modified_date"])
            try:
                self.client.shipped(item.subject, last_modified)
                return None
            except NeLockConflict:
                row = self._read([item.subject]).get(item.subject)
            except NeValidationError as exc:
                if status != 20 or receipted:
                    self._move(
                        [item],
                        OutboxState.FAILED,
                        error=f"Next Engine refused to ship the order: {exc}",
                    )
                    return "refused"
                # Next Engine may only ship printed (40) orders: hand it over, then ship.
                self.client.receipted(item.subject, last_modified)
                receipted = True
                row = self._read([item.subject]).get(item.subject)
            except (NeOutcomeUnknown, NeSystemError) as exc:
                log.warning("ship order %s: %s; reading the order back", item.subject, exc)
                row = self._read_back(item, exc)
                if row is not None and int(row["receive_order_order_status_id"] or 0) == SHIPPED:
                    return None
                self._move(
                    [item],
                    OutboxState.PENDING,
                    retry_in=self.settings.retry,
                    error=f"outcome unknown, read back: not shipped; will resend ({exc})",
                )
                return "retry"
        self._move(
            [item],
            OutboxState.PENDING,
            retry_in=self.settings.retry,
            error="order kept changing in Next Engine; will try again",
        )
        return "retry"

    def _read_back(
        self, item: OutboxItem, sent: NextEngineError
    ) -> Mapping[str, str | None] | None:
        """Read an order whose ``shipped`` outcome is unknown; if that fails too, the item stays
        in flight (its outcome is still unknown) and :class:`_StillUnknown` is raised."""
        try:
            return self._read([item.subject]).get(item.subject)
        except NextEngineError as exc:
            self.gate.observe(exc)
            self._move(
                [item],
                OutboxState.IN_FLIGHT,
                error=f"outcome unknown ({sent}); the order could not be read back "
                f"({exc}); it is read again before anything is sent",
            )
            raise _StillUnknown(exc) from exc


class _StillUnknown(Exception):
    """A ``shipped`` call whose outcome could not be read back; ``cause`` is the read error."""

    def __init__(self, cause: NextEngineError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _cancelled(row: Mapping[str, str | None]) -> bool:
    return (row.get("receive_order_cancel_type_id") or "0") != "0" or (
        row.get("receive_order_deleted_flag") or "0"
    ) != "0"


class StockExecutor(_NeExecutor):
    """Sends the stock deltas of a dispatch as one upload per Next Engine company."""

    kind = ADJUST_STOCK.name
    #: The stock deltas due in one dispatch become one upload: up to this many items per call
    #: (keeps one call's statements well inside PostgreSQL's 65,535 bind parameters).
    max_batch = 20_000

    # -- execute ----------------------------------------------------------------------------

    def execute(self, items: Sequence[OutboxItem]) -> None:
        """Aggregate, check, record, upload, poll, and record the result on every item.

        Nothing is uploaded while an earlier upload's outcome is unknown: a lost upload is
        found in NE's queue by elimination, which only works with one of them at a time.
        """
        if self.gate.blocked() or self._unsettled_upload():
            self._move(items, OutboxState.PENDING, retry_in=self.settings.retry)
            return
        linked = self._link_codes(items)
        unlinked = [i for i in items if i.subject not in linked]
        self._move(
            unlinked,
            OutboxState.FAILED,
            error="the WMS product has no link code (紐付けコード) to a Next Engine "
            "goods code; link it in the WMS, then `nebridge outbox retry ID`",
        )
        by_goods: dict[str, list[OutboxItem]] = defaultdict(list)
        for item in items:
            if item.subject in linked:
                by_goods[linked[item.subject].casefold()].append(item)
        if not by_goods:
            return
        try:
            goods = self._goods({linked[i[0].subject] for i in by_goods.values()})
        except NextEngineError as exc:
            self.gate.observe(exc)
            log.warning("cannot read the goods of %d stock change(s) now: %s", len(items), exc)
            self._move(
                [i for g in by_goods.values() for i in g],
                OutboxState.PENDING,
                error=str(exc),
                retry_in=self.settings.retry,
            )
            return
        groups: dict[str, list[OutboxItem]] = {}
        for key, group in by_goods.items():
            net = sum(int(_payload(i)["delta"]) for i in group)
            found = goods.get(key)
            if found is None:
                self._move(
                    group,
                    OutboxState.FAILED,
                    error=f"no Next Engine goods with code {linked[group[0].subject]}; "
                    "fix the link code in the WMS, then `nebridge outbox retry ID`",
                )
            elif net == 0:
                self._move(
                    group,
                    OutboxState.DONE,
                    result="net change 0 in this dispatch; nothing to upload",
                )
            elif net < 0 and int(found.get("stock_free_quantity") or 0) + net < 0:
                self._move(
                    group,
                    OutboxState.FAILED,
                    error=f"Next Engine free stock of {found['goods_id']} is "
                    f"{found.get('stock_free_quantity')}, a change of {net} would "
                    "go below it (Next Engine refuses); check the stock, then "
                    "`nebridge outbox retry ID`",
                )
            else:
                groups[str(found["goods_id"])] = group
        suspect = {
            g: group for g, group in groups.items() if any(i.dispatch_ref == ISOLATE for i in group)
        }
        plain = {g: group for g, group in groups.items() if g not in suspect}
        self._send([part for part in (plain, suspect) if part])

    def _send(self, parts: list[dict[str, list[OutboxItem]]]) -> None:
        """Upload each part (goods id → its items); a part of several goods codes that Next
        Engine refuses as a whole is sent again in halves, so only a refused code's items
        fail. Stops at an upload whose outcome is not settled yet (the rest waits)."""
        while parts:
            part = parts.pop(0)
            outcome = self._upload(
                {
                    goods: sum(int(_payload(i)["delta"]) for i in group)
                    for goods, group in part.items()
                },
                [i for group in part.values() for i in group],
            )
            if outcome == REFUSED and len(part) > 1:
                codes = sorted(part)
                half = len(codes) // 2
                parts[:0] = [{g: part[g] for g in codes[:half]}, {g: part[g] for g in codes[half:]}]
            elif outcome == OPEN:
                self._move(
                    [i for rest in parts for group in rest.values() for i in group],
                    OutboxState.PENDING,
                    retry_in=self.settings.retry,
                )
                return

    def _link_codes(self, items: Sequence[OutboxItem]) -> dict[str, str]:
        codes = sorted({i.subject for i in items})
        with read_session(self.engine) as session:
            rows = session.execute(
                select(col(WmsProduct.product_code), col(WmsProduct.link_code)).where(
                    col(WmsProduct.product_code).in_(codes)
                )
            ).all()
        return {str(p): str(link) for p, link in rows if link}

    def _goods(self, codes: set[str]) -> dict[str, Mapping[str, str | None]]:
        rows = self.client.search_goods(
            ("goods_id", "stock_quantity", "stock_free_quantity"),
            where=Where().in_("goods_id", sorted(codes)),
        )
        return {str(r["goods_id"]).casefold(): r for r in rows}

    def _upload(self, deltas: dict[str, int], items: list[OutboxItem]) -> str:
        """Record, send and poll one upload; return :data:`DONE`, :data:`REFUSED` or
        :data:`OPEN`."""
        ref = uuid.uuid4().hex
        now = self.clock()
        with write_session(self.engine) as session:
            session.add(
                StockUpload(
                    ref=ref, state=UploadState.PREPARED, deltas=dumps(deltas), prepared_at=now
                )
            )
            session.execute(
                update(OutboxItem)
                .where(col(OutboxItem.id).in_(_ids(items)))
                .values(
                    state=OutboxState.IN_FLIGHT.value,
                    dispatch_ref=ref,
                    updated_at=now,
                    attempts=OutboxItem.attempts + 1,
                )
            )
        try:
            que_id = self.client.upload_stock_deltas(deltas)
        except (NeOutcomeUnknown, NeSystemError) as exc:
            log.warning("stock upload %s: outcome unknown (%s); reconciling", ref, exc)
            self._move(
                items,
                OutboxState.IN_FLIGHT,
                error=f"stock upload {ref}: outcome unknown ({exc}); looking for it in "
                "Next Engine's upload queue before anything is sent again",
            )
            self.reconcile(self._reload(items))
            return OPEN
        except NextEngineError as exc:  # Next Engine said it did not apply it
            self.gate.observe(exc)
            return self._abandon(ref, items, exc)
        self._set_upload(ref, state=UploadState.QUEUED, que_id=que_id)
        return self._poll(ref, que_id, items)

    def _abandon(self, ref: str, items: Sequence[OutboxItem], exc: NextEngineError) -> str:
        self._set_upload(ref, state=UploadState.FAILED, message=str(exc))
        if isinstance(exc, NeValidationError):
            return self._refused(ref, items, f"stock upload not applied: {exc}")
        self._move(
            items,
            OutboxState.PENDING,
            error=f"stock upload not applied: {exc}",
            retry_in=self.settings.retry,
        )
        return OPEN

    def _refused(self, ref: str, items: Sequence[OutboxItem], why: str) -> str:
        """Next Engine refused upload ``ref`` as a whole: one goods code → its items fail;
        several → the items wait to be sent again in smaller uploads (:data:`ISOLATE`)."""
        with read_session(self.engine) as session:
            upload = session.get(StockUpload, ref)
            codes = sorted(json.loads(upload.deltas)) if upload is not None else []
        if len(codes) == 1:
            self._move(
                items,
                OutboxState.FAILED,
                error=f"{why} (goods code {codes[0]}); fix the cause, then `nebridge "
                "outbox retry ID`",
            )
        else:
            self._move(
                items,
                OutboxState.PENDING,
                dispatch_ref=ISOLATE,
                retry_in=timedelta(0),
                error=f"{why}; its {len(codes)} goods codes are sent again in smaller "
                "uploads to find the one Next Engine refuses",
            )
        return REFUSED

    def _poll(self, ref: str, que_id: str, items: Sequence[OutboxItem]) -> str:
        try:
            result = self.client.wait_for_queue(
                que_id,
                poll_interval=self.settings.queue_poll_seconds,
                timeout=self.settings.queue_timeout_seconds,
            )
        except NextEngineError as exc:  # includes the queue timeout: poll again next time
            self.gate.observe(exc)
            log.warning("stock upload %s (que %s) still open: %s", ref, que_id, exc)
            return OPEN
        return self._finish(ref, result, items)

    def _finish(self, ref: str, result: QueueResult, items: Sequence[OutboxItem]) -> str:
        if result.ok:
            self._set_upload(ref, state=UploadState.DONE, message=result.message)
            self._move(items, OutboxState.DONE, result=f"uploaded in que {result.que_id}")
            return DONE
        self._set_upload(ref, state=UploadState.FAILED, message=result.message)
        return self._refused(
            ref, items, f"Next Engine rejected stock upload que {result.que_id}: {result.message}"
        )

    def _set_upload(self, ref: str, **values: Any) -> None:
        with write_session(self.engine) as session:
            upload = session.get(StockUpload, ref)
            assert upload is not None
            for key, value in values.items():
                setattr(upload, key, value)
            if values.get("state") in (UploadState.DONE, UploadState.FAILED, UploadState.IN_DOUBT):
                upload.finished_at = self.clock()
            session.add(upload)

    # -- reconcile --------------------------------------------------------------------------

    def reconcile(self, items: Sequence[OutboxItem]) -> None:
        """Settle uploads whose outcome is unknown: poll their queue, or look for it."""
        if self.gate.blocked():
            return
        by_ref: dict[str | None, list[OutboxItem]] = defaultdict(list)
        for item in items:
            by_ref[item.dispatch_ref].append(item)
        for ref, group in by_ref.items():
            with read_session(self.engine) as session:
                upload = session.get(StockUpload, ref) if ref else None
            try:
                if upload is None:  # in flight without an upload record: never sent
                    self._move(group, OutboxState.PENDING, error="not sent; will be sent")
                elif upload.que_id:
                    self._poll(upload.ref, upload.que_id, group)
                else:
                    self._find_lost_upload(upload, group)
            except NextEngineError as exc:
                self.gate.observe(exc)
                log.warning("cannot reconcile stock upload %s now: %s", ref, exc)

    def _unsettled_upload(self) -> bool:
        """True while an upload may have been sent but is not found in NE's queue yet."""
        with read_session(self.engine) as session:
            ref = session.scalars(
                select(col(StockUpload.ref))
                .join(OutboxItem, col(OutboxItem.dispatch_ref) == col(StockUpload.ref))
                .where(col(StockUpload.state) == UploadState.PREPARED)
                .where(col(StockUpload.que_id).is_(None))
                .where(col(OutboxItem.state) == OutboxState.IN_FLIGHT.value)
                .limit(1)
            ).first()
        return ref is not None

    def _settled(self, items: Sequence[OutboxItem]) -> bool:
        """Whether the last send (or lost answer) of ``items`` is ``upload_settle_seconds`` old,
        so an upload NE was still working on would be in its queue by now."""
        last = max((i.updated_at for i in items), default=None)
        settle = timedelta(seconds=self.settings.upload_settle_seconds)
        return last is None or self.clock() - last >= settle

    def _reload(self, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """The items as stored now."""
        with read_session(self.engine) as session:
            return list(
                session.scalars(select(OutboxItem).where(col(OutboxItem.id).in_(_ids(items))))
            )

    def _find_lost_upload(self, upload: StockUpload, items: Sequence[OutboxItem]) -> None:
        with read_session(self.engine) as session:
            known = {q for q in session.scalars(select(col(StockUpload.que_id))) if q}
        window_start = upload.prepared_at - timedelta(minutes=10)
        candidates = [
            q
            for q in self.client.find_queue_rows(window_start, self.clock() + timedelta(days=1))
            if q.que_id not in known and q.row.get("que_upload_name") in (None, "", API_UPLOAD_NAME)
        ]
        if len(candidates) == 1:
            log.info(
                "stock upload %s found in Next Engine as que %s", upload.ref, candidates[0].que_id
            )
            self._set_upload(upload.ref, state=UploadState.QUEUED, que_id=candidates[0].que_id)
            self._poll(upload.ref, candidates[0].que_id, items)
        elif not candidates and not self._settled(items):
            log.info(
                "stock upload %s not in Next Engine's queue yet; looking again later", upload.ref
            )
        elif not candidates:
            self._set_upload(
                upload.ref,
                state=UploadState.FAILED,
                message="no upload reached Next Engine; items sent again",
            )
            self._move(
                items,
                OutboxState.PENDING,
                dispatch_ref="",
                error="stock upload did not reach Next Engine; will be sent again",
            )
        else:
            ids = ", ".join(q.que_id for q in candidates)
            self._set_upload(
                upload.ref,
                state=UploadState.IN_DOUBT,
                message=f"several unknown uploads at that time: {ids}",
            )
            self._move(
                items,
                OutboxState.IN_DOUBT,
                error=f"cannot tell whether stock upload {upload.ref} was applied "
                f"(Next Engine queue rows {ids} could be it); check Next Engine's "
                "stock, then `nebridge outbox resolve ID --applied` or "
                "`--not-applied`",
            )


#: The executor of each Next Engine action kind (``hooks.actions.ACTION_KINDS``), built by
#: ``Runtime.executors()``.
EXECUTORS: dict[str, type[ShipExecutor] | type[StockExecutor]] = {
    SHIP_ORDER.name: ShipExecutor,
    ADJUST_STOCK.name: StockExecutor,
}
