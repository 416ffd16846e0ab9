"""Order instructions → Logikura shipping schedules (出荷予定), each exactly once.

Every Next Engine order becomes one ``POST /api/v1/shipping_schedules`` with its consignee
(found or created by a code derived from name, postal code, address and phone), its items
(product variants by 商品コード), the delivery method mapped by
``wms.logikura.delivery_methods`` and ``sales_order.order_number`` = the Next Engine order
id, so the shipment can be traced back.

Exactly once: a ``sending`` record is synced to the local store before the ``POST``, a
``created`` record with the schedule id after it. An order found ``sending`` (a crash, a lost
answer) is looked up in Logikura — open schedules, then shipping histories since the attempt —
before it is ever sent again. Logikura may accept the same order number twice, so this
check, not Logikura, keeps orders from being created twice. Logikura may also apply a request
well after the client gave up on it, so an order not found is sent again only once
``schedule_settle_seconds`` have passed since its last request; until then it waits (the
batch is delivered again at the next run, and looked up again).

An import is bulk work: its requests yield to history reads (:mod:`.ratelimit`) and it ends
at the next order when the engine stops; the orders not sent yet follow at the next run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from hooks.connectors import InstructionBatch
from hooks.errors import OrdersRefused
from hooks.records import OrderInstruction
from plugins.wms_logikura.catalog import Catalog
from plugins.wms_logikura.client import Json, LogikuraClient
from plugins.wms_logikura.config import JST, LogikuraConfig
from plugins.wms_logikura.errors import LogikuraRefused, LogikuraUnavailable
from plugins.wms_logikura.ratelimit import TurnOver
from plugins.wms_logikura.store import CREATED, SENDING, LocalStore, ScheduleRecord

_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


_RETRY_HINT = "; once that is fixed, `nebridge orders retry {}` sends the order again"


class OrderProblem(Exception):
    """One order cannot be turned into a schedule as it is; the message says why."""


def consignee_code(config: LogikuraConfig, order: OrderInstruction) -> str:
    """The consignee code of an order's ship-to: the same person and address, the same code."""
    key = "\x1f".join(
        (order.consignee_name, order.consignee_zip, order.consignee_address, order.consignee_tel)
    )
    return config.consignee_code_prefix + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class SchedulePusher:
    """Creates the schedules of one instruction batch (see the module docstring)."""

    def __init__(
        self,
        config: LogikuraConfig,
        client: LogikuraClient,
        store: LocalStore,
        catalog: Callable[[bool], Catalog],
        clock: Callable[[], float],
        log: _Log,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.log = log
        self.should_stop = should_stop

    def push(self, batch: InstructionBatch) -> None:
        """Create every schedule of ``batch`` not created yet; raise OrdersRefused naming the
        orders that cannot be created as they are (every other one is created), or
        LogikuraUnavailable while an order's earlier request may still be applied."""
        with self.client.bulk(self.should_stop):
            self._push(batch)

    def _push(self, batch: InstructionBatch) -> None:
        records = self.store.schedules(o.ne_order_id for o in batch.orders)
        todo = [
            o
            for o in batch.orders
            if records.get(o.ne_order_id) is None or records[o.ne_order_id].state != CREATED
        ]
        if not todo:
            return
        unsure = [
            records[o.ne_order_id]
            for o in todo
            if o.ne_order_id in records and records[o.ne_order_id].state == SENDING
        ]
        waiting: list[str] = []
        if unsure:
            settled = self._reconcile(unsure)
            now = self.clock()
            waiting = sorted(
                r.ne_order_id
                for r in unsure
                if r.ne_order_id not in settled
                and now - r.updated < self.config.schedule_settle_seconds
            )
            todo = [
                o for o in todo if o.ne_order_id not in settled and o.ne_order_id not in waiting
            ]
        catalog = self.catalog(False)
        problems: dict[str, str] = {}
        created = 0
        for order in todo:
            if self.should_stop():
                self.log.info(
                    "nebridge is stopping: %d schedule(s) of batch %s created, the "
                    "rest follow at the next run",
                    created,
                    batch.key,
                )
                raise TurnOver(
                    f"nebridge stopped while sending batch {batch.key}; the "
                    "schedules not created yet follow at the next run"
                )
            try:
                payload = self._payload(order, catalog)
            except OrderProblem:
                catalog = self.catalog(True)
                try:
                    payload = self._payload(order, catalog)
                except OrderProblem as exc:
                    problems[order.ne_order_id] = f"{exc}{_RETRY_HINT.format(order.ne_order_id)}"
                    continue
            try:
                payload["shipping_schedule"]["consignee_id"] = self._consignee(order)
                self._create(order, batch.key, payload)
            except LogikuraRefused as exc:
                problems[order.ne_order_id] = (
                    f"Logikura refused it: {exc}{_RETRY_HINT.format(order.ne_order_id)}"
                )
                continue
            created += 1
        if created:
            self.log.info(
                "created %d Logikura shipping schedule(s) for batch %s", created, batch.key
            )
        if waiting:
            raise LogikuraUnavailable(
                f"order(s) {', '.join(waiting)} of batch {batch.key}: the request creating "
                "the shipping schedule got no answer and Logikura shows no schedule yet; it "
                "may still be applying it, so nebridge looks again at the next run and sends "
                f"it again only {self.config.schedule_settle_seconds:.0f} s after the request "
                "(wms.logikura.schedule_settle_seconds)"
                + (
                    f"; {len(problems)} other order(s) were refused and are reported then"
                    if problems
                    else ""
                )
            )
        if problems:
            raise OrdersRefused(problems)

    # ---------------------------------------------------------------- one order
    def _create(self, order: OrderInstruction, batch_key: str, payload: Json) -> None:
        self.store.mark_sending(order.ne_order_id, batch_key, self.clock())
        try:
            answer = self.client.post("/api/v1/shipping_schedules", payload)
        except LogikuraRefused:
            self.store.forget_sending(order.ne_order_id)
            raise
        schedule = answer.get("shipping_schedule") or {}
        self.store.mark_created(order.ne_order_id, batch_key, int(schedule["id"]), self.clock())

    def _payload(self, order: OrderInstruction, catalog: Catalog) -> Json:
        items = []
        for line in order.lines:
            variant = catalog.by_code.get(line.product_code)
            if variant is None:
                raise OrderProblem(
                    f"product {line.product_code} is not in Logikura's product master"
                )
            items.append(
                {
                    "product_variant_id": variant.id,
                    "sales_order_quantity": line.quantity,
                    "price": 0,
                }
            )
        schedule: Json = {
            "shipping_items": items,
            "shipping_composite_items": [],
            "delivery_method_code": self._delivery_method(order),
            "description": (
                f"ネクストエンジン受注 {order.ne_order_id}"
                + (f" / {order.shop_order_id}" if order.shop_order_id else "")
                + f" / nebridge {order.warehouse}"
            ),
        }
        return {
            "sales_order": {
                "order_number": order.ne_order_id,
                "order_date": order.order_date[:10] or None,
            },
            "shipping_schedule": schedule,
        }

    def _delivery_method(self, order: OrderInstruction) -> str | None:
        method = order.delivery_method.strip()
        mapped = self.config.delivery_methods.get(method)
        if mapped is not None:
            return mapped
        if self.config.unmapped_delivery_method == "fail":
            raise OrderProblem(
                f"Next Engine delivery method {method or '(none)'!r} has no "
                "Logikura code; add it to wms.logikura.delivery_methods"
            )
        return self.config.default_delivery_method

    def _consignee(self, order: OrderInstruction) -> int:
        """The consignee of the order's ship-to, found by code or created once."""
        code = consignee_code(self.config, order)
        known = self.store.consignee(code)
        if known is not None and known[0] is not None:
            return known[0]
        if known is not None:  # a create whose outcome is unknown: look first
            found = self._scan_consignees(code)
            if found is not None:
                return found
        self.store.mark_consignee_creating(code)
        name = order.consignee_name or f"ネクストエンジン受注 {order.ne_order_id}"
        body = {
            "consignee": {
                "code": code,
                "name": name,
                "postal_code": order.consignee_zip or None,
                "address1": order.consignee_address or None,
                "phone_number": order.consignee_tel or None,
                "consignee_type": "customer",
            }
        }
        try:
            answer = self.client.post("/api/v1/consignees", body)
        except LogikuraRefused as exc:
            if exc.status != 422:
                raise
            found = self._scan_consignees(code)  # e.g. "code already exists"
            if found is None:
                raise
            return found
        consignee_id = int((answer.get("consignee") or {})["id"])
        self.store.save_consignees({code: consignee_id})
        return consignee_id

    def _scan_consignees(self, code: str) -> int | None:
        """Read every consignee; remember those with nebridge's prefix; return ``code``'s id."""
        prefix = self.config.consignee_code_prefix
        found = {
            str(c["code"]): int(c["id"])
            for c in self.client.get_all("/api/v1/consignees", "consignees")
            if str(c.get("code") or "").startswith(prefix)
        }
        if found:
            self.store.save_consignees(found)
        return found.get(code)

    # ---------------------------------------------------------------- reconciling
    def _reconcile(self, unsure: Iterable[ScheduleRecord]) -> set[str]:
        """Look up orders whose schedule request had no known outcome; record those found."""
        records = {r.ne_order_id: r for r in unsure}
        found = self._find(set(records), min(r.since for r in records.values()))
        for order_id, schedule_id in found.items():
            self.store.mark_created(
                order_id, records[order_id].batch_key, schedule_id, self.clock()
            )
            self.log.warning(
                "order %s already had Logikura shipping schedule %d (the answer "
                "to its creation was lost); not created again",
                order_id,
                schedule_id,
            )
        return set(found)

    def _find(self, order_ids: set[str], since: float) -> dict[str, int]:
        found: dict[str, int] = {}

        def take(records: Iterable[Json]) -> None:
            for record in records:
                number = str((record.get("sales_order") or {}).get("order_number") or "")
                if number in order_ids:
                    found[number] = min(found.get(number, int(record["id"])), int(record["id"]))

        take(self.client.get_all("/api/v1/shipping_schedules", "shipping_schedules"))
        if order_ids - set(found):
            first = datetime.fromtimestamp(since, UTC).astimezone(JST).date() - timedelta(days=1)
            take(
                self.client.get_all(
                    "/api/v1/shipping_histories",
                    "shipping_histories",
                    {"shipped_date_from": first.isoformat()},
                )
            )
        return found
