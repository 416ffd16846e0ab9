"""The sandbox world: company, tokens, orders, goods, upload queue, and NE's rules on them.

All state lives in memory behind one re-entrant lock (:attr:`SandboxState.lock`); the HTTP
layer takes it around each API call, Python helpers take it themselves. Orders are indexed by
id and by status so searches over a 100,000-order world stay fast.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from daemon.sandbox.clock import ZERO_DATE, Clock, format_ne, normalize_ne, parse_ne
from daemon.sandbox.config import SandboxConfig
from daemon.sandbox.errors import ErrorCodes, NEError
from daemon.sandbox.faults import Faults
from daemon.sandbox.fields import (
    BASE_SCHEMA,
    BASE_WRITABLE,
    CANCEL_TYPES,
    GOODS_SCHEMA,
    OPTION_FIELDS,
    QUE_SCHEMA,
    ROW_SCHEMA,
    ROW_WRITABLE,
    Kind,
)
from daemon.sandbox.ledger import Ledger
from daemon.sandbox.model import Goods, Order, Que, Row
from daemon.sandbox.payloads import OrderChanges, UploadCsv
from daemon.sandbox.search import Query, SearchOptions
from daemon.sandbox.seed import build_world
from daemon.sandbox.tokens import TokenRules
from daemon.sandbox.traffic import Traffic
from hooks.sandbox.world import SandboxWorld

Value = str | None

#: Longest accepted values (Hamee's bulk-update app limits, reference §4.2).
MAX_LENGTHS: dict[str, int] = {
    "receive_order_delivery_cut_form_id": 50,
    "receive_order_delivery_cut_form_note": 16,
    "receive_order_shop_cut_form_id": 50,
    "receive_order_note": 1000,
    "receive_order_worker_text": 1000,
    "receive_order_picking_instruct": 1000,
    "receive_order_statement_delivery_text": 1000,
    "receive_order_gruoping_tag": 65535,
    "receive_order_purchaser_name": 100,
    "receive_order_consignee_name": 100,
    "receive_order_purchaser_address1": 255,
    "receive_order_consignee_address1": 255,
    "receive_order_purchaser_mail_address": 100,
}
#: Columns a goods upload row needs to create a goods code that does not exist (§5.1).
CREATE_COLUMNS: tuple[str, ...] = ("sire_code", "syohin_name", "genka_tnk", "baika_tnk")
#: Upload CSV column -> goods field it overwrites.
UPLOAD_COLUMNS: dict[str, str] = {
    "syohin_name": "goods_name",
    "sire_code": "goods_supplier_id",
    "jan_code": "goods_jan_code",
    "genka_tnk": "goods_cost_price",
    "baika_tnk": "goods_selling_price",
    "hyoji_tnk": "goods_display_price",
    "daihyo_syohin_code": "goods_representation_id",
    "location": "goods_location",
}
_TAG_TOKEN = re.compile(r"\[([^\[\]]*)\]")
HUMAN_NAME = "画面操作(人間)"


@dataclass(frozen=True)
class RowSpec:
    """A row for :meth:`SandboxState.create_order`."""

    goods_id: str
    quantity: int
    unit_price: int = 1000
    cancel_flag: int = 0
    goods_name: str | None = None


def _check_value(name: str, kind: Kind, value: Value, allow_slash: bool) -> Value:
    """Validate one written value by kind and length; return it normalised (020015 if bad)."""
    if value is None:
        return None
    if kind == "int":
        try:
            return str(int(value.strip()))
        except ValueError:
            raise NEError("validation", f"[{name}]が半角数字ではありません") from None
    if kind == "num":
        try:
            Decimal(value.strip())
        except InvalidOperation:
            raise NEError("validation", f"[{name}]が数値ではありません") from None
        return value.strip()
    if kind == "date":
        normalized = normalize_ne(value, allow_slash=allow_slash)
        if normalized is None:
            raise NEError("validation", f"[{name}]が日付ではありません")
        return normalized
    limit = MAX_LENGTHS.get(name)
    if limit is not None and len(value) > limit:
        raise NEError("validation", f"[{name}]は{limit}文字以内で入力してください")
    return value


class SandboxState(SandboxWorld[SandboxConfig, Clock, Ledger, Faults], TokenRules):
    """The in-memory NE world of one company, with NE's business rules as methods (sign-in
    and tokens: :class:`~daemon.sandbox.tokens.TokenRules`)."""

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config, Clock, Ledger(), Faults(config.faults))
        self.traffic = Traffic()
        self.codes = ErrorCodes(config.error_codes)
        self.search_options = SearchOptions(
            limit_max=config.limit_max,
            clamp_limit=config.limit_over_max == "clamp",
            in_max=config.in_max,
            ci_codes=config.case_insensitive_goods_codes,
            allow_slash_dates=config.accept_slash_dates,
            reject_unknown_params=config.reject_unknown_params,
        )
        self.shuffle_rng = random.Random(config.seed) if config.shuffle_unsorted_results else None
        self.company: dict[str, str] = {}
        self.user: dict[str, str] = {}
        self.shops: dict[int, str] = {}
        self.tags: list[dict[str, Value]] = []
        self.orders: dict[int, Order] = {}
        self.goods: dict[str, Goods] = {}
        self.ques: dict[int, Que] = {}
        self._by_status: dict[int, dict[int, Order]] = {}
        self._pending_ques: list[int] = []
        self._next_order_id = 1
        self._next_que_id = 1
        self._start_tokens()
        build_world(self)
        self.clock.on_change(self.process_ques)

    # ================================================================ helpers
    @property
    def company_id(self) -> str:
        """The sandbox company's ``company_id``."""
        return self.company["company_id"]

    def now(self) -> str:
        """Current sandbox time as an NE string."""
        return self.clock.now_ne()

    def _log(self, kind: str, source: str, call_no: int | None, **data: Any) -> None:
        self.ledger.append(kind, self.now(), source, call_no=call_no, **data)

    def goods_key(self, code: str) -> str:
        """Index key of a goods code (case-folded when codes match case-insensitively)."""
        return code.casefold() if self.config.case_insensitive_goods_codes else code

    def find_goods(self, code: str) -> Goods | None:
        """The goods record ``code`` refers to, if any."""
        return self.goods.get(self.goods_key(code))

    def next_order_id(self) -> int:
        """Reserve the next order id."""
        order_id = self._next_order_id
        self._next_order_id += 1
        return order_id

    def index_order(self, order: Order) -> None:
        """Add ``order`` to the id and status indexes."""
        self.orders[order.id] = order
        self._by_status.setdefault(order.status_id, {})[order.id] = order

    def _set_status(self, order: Order, status_id: int) -> None:
        if status_id == order.status_id:
            return
        self._by_status.get(order.status_id, {}).pop(order.id, None)
        order.status_id = status_id
        self._by_status.setdefault(status_id, {})[order.id] = order

    def _touch(self, order: Order, source: str) -> str:
        """Bump ``receive_order_last_modified_date`` (strictly increasing if configured)."""
        stamp = self.now()
        if self.config.strictly_increasing_last_modified and stamp <= order.last_modified:
            previous = parse_ne(order.last_modified)
            if previous is not None:
                stamp = format_ne(previous + timedelta(seconds=1))
        order.last_modified = stamp
        if source == "human":
            order.extra["receive_order_last_modified_by_id"] = "0"
            order.extra["receive_order_last_modified_by_name"] = HUMAN_NAME
        else:
            order.extra["receive_order_last_modified_by_id"] = self.user["pic_id"]
            order.extra["receive_order_last_modified_by_name"] = self.user["pic_name"]
        return stamp

    def _order(self, order_id: int | str) -> Order:
        try:
            key = int(str(order_id).strip())
        except ValueError:
            raise NEError("param_invalid", f"receive_order_id={order_id!r}") from None
        order = self.orders.get(key)
        if order is None:
            raise NEError("order_not_found", f"receive_order_id={key}")
        return order

    def _check_lock(self, order: Order, last_modified: str | None) -> None:
        if last_modified is None or last_modified.strip() == "":
            raise NEError("param_missing", "receive_order_last_modified_date")
        given = normalize_ne(last_modified, allow_slash=self.config.accept_slash_dates)
        if given != order.last_modified:
            raise NEError("lock_mismatch")

    # ================================================================ allocation
    def _allocate(self, row: Row, source: str, call_no: int | None) -> None:
        """Allocate free stock to an active row, up to its quantity."""
        goods = self.find_goods(row.goods_id)
        if goods is None or row.cancel_flag or row.order.cancel_type_id != 0:
            return
        take = min(row.quantity - row.allocation, max(goods.free, 0))
        if take <= 0:
            return
        before = goods.allocation
        goods.allocation += take
        row.allocation += take
        row.extra["receive_order_row_stock_allocation_date"] = self.now()
        self._log(
            "stock.allocate",
            source,
            call_no,
            order_id=row.order.id,
            goods_code=goods.code,
            delta=0,
            before={"stock_allocation_quantity": before, "row_no": row.row_no},
            after={"stock_allocation_quantity": goods.allocation, "row_no": row.row_no},
        )

    def _release(
        self, row: Row, source: str, call_no: int | None, amount: int | None = None
    ) -> None:
        """Give (part of) a row's allocation back to free stock (never after shipping)."""
        if row.allocation <= 0 or row.order.stock_consumed:
            return
        goods = self.find_goods(row.goods_id)
        amount = row.allocation if amount is None else min(amount, row.allocation)
        row.allocation -= amount
        if goods is None:
            return
        before = goods.allocation
        goods.allocation -= amount
        self._log(
            "stock.release",
            source,
            call_no,
            order_id=row.order.id,
            goods_code=goods.code,
            delta=0,
            before={"stock_allocation_quantity": before, "row_no": row.row_no},
            after={"stock_allocation_quantity": goods.allocation, "row_no": row.row_no},
        )

    # ================================================================ creating things
    def create_goods(
        self,
        code: str,
        quantity: int = 0,
        *,
        name: str | None = None,
        fields: Mapping[str, Value] | None = None,
        source: str = "python",
        call_no: int | None = None,
    ) -> dict[str, Any]:
        """Add a goods record with ``quantity`` in stock; returns its snapshot."""
        with self.lock:
            if not code or self.find_goods(code) is not None:
                raise ValueError(f"goods code {code!r} is empty or exists")
            extra: dict[str, Value] = {
                "goods_name": name or f"商品 {code}",
                "goods_type_id": "0",
                "goods_merchandise_id": "0",
                "goods_selling_price": "1000",
                "goods_cost_price": "500",
                "goods_tax_rate": "10",
                "goods_visible_flag": "1",
                "goods_stock_management_flag": "1",
                "goods_deleted_flag": "0",
                "goods_representation_id": code,
            }
            extra.update(fields or {})
            goods = Goods(code, quantity, self.now(), extra)
            self.goods[self.goods_key(code)] = goods
            self._log(
                "goods.create", source, call_no, goods_code=code, after={"stock_quantity": quantity}
            )
            return {name: fd.get(goods) for name, fd in GOODS_SCHEMA.items()}

    def human_stock_edit(
        self, code: str, quantity: int, *, call_no: int | None = None
    ) -> dict[str, Any]:
        """A person overwrites the stock of ``code`` in NE's screen (クイック棚卸, 在庫数 =
        ``quantity``); ledger kind ``goods.stock_edit`` (not a ``stock.*`` movement of nebridge).
        Raises ValueError for unknown goods or a quantity below the allocated stock."""
        with self.lock:
            goods = self.find_goods(code)
            if goods is None:
                raise ValueError(f"no goods {code!r}")
            if quantity < goods.allocation:
                raise ValueError(f"{quantity} is below the allocated {goods.allocation}")
            previous, goods.quantity = goods.quantity, quantity
            goods.last_modified = self.now()
            self._log(
                "goods.stock_edit",
                "human",
                call_no,
                goods_code=goods.code,
                delta=quantity - previous,
                before={"stock_quantity": previous},
                after={"stock_quantity": quantity},
            )
            return {name: fd.get(goods) for name, fd in GOODS_SCHEMA.items()}

    def create_order(
        self,
        rows: Sequence[RowSpec | tuple[str, int]],
        *,
        shop_id: int = 1,
        status_id: int = 20,
        cancel_type_id: int = 0,
        tag: str | None = None,
        instruct_date: str | None = None,
        fields: Mapping[str, Value] | None = None,
        option: Mapping[str, Value] | None = None,
        source: str = "python",
        call_no: int | None = None,
    ) -> int:
        """Add an order as if NE imported it now: allocates stock; status 50 = already shipped.

        Returns the new ``receive_order_id``.
        """
        with self.lock:
            if status_id not in (0, 1, 2, 20, 30, 40, 50):
                raise ValueError(f"unknown status {status_id}")
            if cancel_type_id not in CANCEL_TYPES:
                raise ValueError(f"unknown cancel type {cancel_type_id}")
            now = self.now()
            order_id = self.next_order_id()
            extra: dict[str, Value] = {
                "receive_order_shop_cut_form_id": f"SB-{shop_id}-{order_id:08d}",
                "receive_order_date": now,
                "receive_order_import_date": now,
                "receive_order_import_type_id": "2",
                "receive_order_confirm_check_id": "2",
                "receive_order_important_check_id": "1",
                "receive_order_delivery_id": "1",
                "receive_order_payment_method_id": "2",
                "receive_order_deposit_type_id": "2",
                "receive_order_customer_type_id": "0",
                "receive_order_purchaser_name": "テスト 太郎",
                "receive_order_consignee_name": "テスト 太郎",
                "receive_order_consignee_address1": "東京都千代田区千代田1-1",
                "receive_order_gruoping_tag": tag,
                "receive_order_statement_delivery_instruct_printing_date": (
                    ZERO_DATE if instruct_date is None else normalize_ne(instruct_date)
                ),
                "receive_order_deleted_flag": "0",
                "receive_order_creator_id": self.user["pic_id"],
                "receive_order_creator_name": self.user["pic_name"],
            }
            extra.update(fields or {})
            order = Order(order_id, shop_id, status_id, cancel_type_id, now, now, extra)
            if cancel_type_id:
                extra["receive_order_cancel_date"] = now
            if status_id >= 40:
                extra["receive_order_statement_delivery_printing_date"] = now
            if status_id == 50:
                extra["receive_order_send_date"] = now
                order.stock_consumed = True
            total = 0
            for row_no, spec in enumerate(rows, start=1):
                spec = spec if isinstance(spec, RowSpec) else RowSpec(spec[0], spec[1])
                goods = self.find_goods(spec.goods_id)
                name = spec.goods_name or (
                    goods.extra.get("goods_name") if goods else f"商品 {spec.goods_id}"
                )
                row = Row(
                    order,
                    row_no,
                    spec.goods_id,
                    spec.quantity,
                    spec.cancel_flag,
                    {
                        "receive_order_row_goods_name": name,
                        "receive_order_row_unit_price": str(spec.unit_price),
                        "receive_order_row_tax_rate": "10",
                        "receive_order_row_creation_date": now,
                        "receive_order_row_deleted_flag": "0",
                    },
                )
                order.rows.append(row)
                if not spec.cancel_flag:
                    total += spec.unit_price * spec.quantity
            extra.setdefault("receive_order_goods_amount", str(total))
            extra.setdefault("receive_order_total_amount", str(total))
            order.option = {k: v for k, v in (option or {}).items() if v is not None}
            self.index_order(order)
            self._log(
                "order.create",
                source,
                call_no,
                order_id=order_id,
                after={
                    "receive_order_order_status_id": status_id,
                    "receive_order_cancel_type_id": cancel_type_id,
                    "receive_order_last_modified_date": now,
                },
            )
            if not order.stock_consumed:
                for row in order.rows:
                    self._allocate(row, source, call_no)
            return order_id

    # ================================================================ order writes
    def _validate_changes(
        self, order: Order, changes: OrderChanges, *, shipped_flag: bool, human: bool
    ) -> OrderChanges:
        """Check an update against NE's rules; return the normalised changes."""
        if not human and order.status_id == 50 and not shipped_flag:
            raise NEError("shipped_update_flag_required")
        if not human and order.status_id == 1:
            allowed = {"receive_order_cancel_type_id", "receive_order_worker_text"}
            if set(changes.base) - allowed or changes.option or changes.rows:
                raise NEError("status1_restricted")
        slash = self.config.accept_slash_dates
        out = OrderChanges()
        writable = BASE_WRITABLE | ({"receive_order_order_status_id"} if human else set())
        for name, value in changes.base.items():
            if name not in writable:
                raise NEError("field_not_updatable", name)
            out.base[name] = _check_value(name, BASE_SCHEMA[name].kind, value, slash)
        if "receive_order_cancel_type_id" in out.base:
            value = out.base["receive_order_cancel_type_id"]
            entry = CANCEL_TYPES.get(int(value)) if value is not None else None
            if entry is None or entry[1] == "1":
                raise NEError("validation", f"[receive_order_cancel_type_id]={value}")
        if "receive_order_order_status_id" in out.base:
            value = out.base["receive_order_order_status_id"]
            if value is None or int(value) not in (0, 1, 2, 20, 30, 40, 50):
                raise NEError("validation", f"[receive_order_order_status_id]={value}")
        tag = out.base.get("receive_order_gruoping_tag")
        if tag is not None and self.config.tags_must_exist:
            names = {t["grouping_tag_name"] for t in self.tags}
            unknown = [t for t in _TAG_TOKEN.findall(tag) if t not in names]
            if unknown or _TAG_TOKEN.sub("", tag).strip():
                raise NEError("validation", f"[receive_order_gruoping_tag] unknown tag {unknown}")
        for name, value in changes.option.items():
            if name not in OPTION_FIELDS:
                raise NEError("field_not_updatable", name)
            out.option[name] = value
        rows = {row.row_no: row for row in order.rows}
        for row_no, values in changes.rows.items():
            if row_no not in rows:
                raise NEError("row_not_found", f"receive_order_row_no={row_no}")
            checked: dict[str, Value] = {}
            for name, value in values.items():
                if name not in ROW_WRITABLE:
                    raise NEError("field_not_updatable", name)
                checked[name] = _check_value(name, ROW_SCHEMA[name].kind, value, slash)
            if "receive_order_row_quantity" in checked:
                qty = checked["receive_order_row_quantity"]
                if qty is None or int(qty) < 0:
                    raise NEError("validation", "[receive_order_row_quantity]")
            if "receive_order_row_cancel_flag" in checked and checked[
                "receive_order_row_cancel_flag"
            ] not in ("0", "1"):
                raise NEError("validation", "[receive_order_row_cancel_flag]")
            if (
                "receive_order_row_goods_id" in checked
                and not checked["receive_order_row_goods_id"]
            ):
                raise NEError("validation", "[receive_order_row_goods_id]")
            out.rows[row_no] = checked
        return out

    def _apply_changes(
        self,
        order: Order,
        changes: OrderChanges,
        *,
        row_cancel_flag: bool,
        source: str,
        call_no: int | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Apply validated changes; returns the ``(before, after)`` of what changed."""
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        now = self.now()
        for name, value in changes.base.items():
            if name == "receive_order_cancel_type_id" and value is not None:
                self._change_cancel(
                    order, int(value), row_cancel_flag, source, call_no, before, after
                )
            elif name == "receive_order_order_status_id" and value is not None:
                if int(value) != order.status_id:
                    before[name], after[name] = str(order.status_id), value
                    self._set_status(order, int(value))
            elif order.extra.get(name) != value:
                before[name], after[name] = order.extra.get(name), value
                order.extra[name] = value
        for name, value in changes.option.items():
            if order.option.get(name) != value:
                before[name], after[name] = order.option.get(name), value
                order.option[name] = value
        if changes.option:
            order.option["receive_order_option_last_modified_date"] = now
        rows = {row.row_no: row for row in order.rows}
        for row_no, values in changes.rows.items():
            self._change_row(rows[row_no], values, source, call_no, before, after, now)
        return before, after

    def _change_cancel(
        self,
        order: Order,
        cancel_type: int,
        row_cancel_flag: bool,
        source: str,
        call_no: int | None,
        before: dict[str, Any],
        after: dict[str, Any],
    ) -> None:
        if cancel_type == order.cancel_type_id:
            return
        name = "receive_order_cancel_type_id"
        before[name], after[name] = str(order.cancel_type_id), str(cancel_type)
        was_cancelled = order.cancel_type_id != 0
        order.cancel_type_id = cancel_type
        if cancel_type != 0 and not was_cancelled:
            order.extra["receive_order_cancel_date"] = self.now()
            for row in order.rows:
                self._release(row, source, call_no)
            self._log(
                "order.cancel", source, call_no, order_id=order.id, after={name: str(cancel_type)}
            )
        elif cancel_type == 0:
            order.extra["receive_order_cancel_date"] = None
            if row_cancel_flag:
                for row in order.rows:
                    row.cancel_flag = 0
            if self.config.reallocate_on_change and not order.stock_consumed:
                for row in order.rows:
                    self._allocate(row, source, call_no)
            self._log("order.uncancel", source, call_no, order_id=order.id, after={name: "0"})

    def _change_row(
        self,
        row: Row,
        values: Mapping[str, Value],
        source: str,
        call_no: int | None,
        before: dict[str, Any],
        after: dict[str, Any],
        now: str,
    ) -> None:
        stock_relevant = False
        prefix = f"row{row.row_no}."
        for name, value in values.items():
            if name == "receive_order_row_goods_id" and value is not None:
                if value != row.goods_id:
                    before[prefix + name], after[prefix + name] = row.goods_id, value
                    self._release(row, source, call_no)  # the old goods gets its stock back
                    row.goods_id = value
                    stock_relevant = True
            elif name == "receive_order_row_quantity" and value is not None:
                if int(value) != row.quantity:
                    before[prefix + name], after[prefix + name] = str(row.quantity), value
                    row.quantity = int(value)
                    stock_relevant = True
            elif name == "receive_order_row_cancel_flag" and value is not None:
                if int(value) != row.cancel_flag:
                    before[prefix + name], after[prefix + name] = str(row.cancel_flag), value
                    row.cancel_flag = int(value)
                    stock_relevant = True
            elif row.extra.get(name) != value:
                before[prefix + name], after[prefix + name] = row.extra.get(name), value
                row.extra[name] = value
        row.extra["receive_order_row_last_modified_date"] = now
        if stock_relevant and not row.order.stock_consumed:
            if row.cancel_flag:
                self._release(row, source, call_no)
            elif row.allocation > row.quantity:
                self._release(row, source, call_no, row.allocation - row.quantity)
            if self.config.reallocate_on_change:
                self._allocate(row, source, call_no)

    def update_order(
        self,
        order_id: int | str,
        last_modified: str | None,
        changes: OrderChanges,
        *,
        shipped_update_flag: bool = False,
        row_cancel_update_flag: bool = False,
        call_no: int | None = None,
        source: str = "api",
    ) -> str:
        """``receiveorder_base/update`` for one order; returns the new last_modified."""
        with self.lock:
            order = self._order(order_id)
            self._check_lock(order, last_modified)
            checked = self._validate_changes(
                order, changes, shipped_flag=shipped_update_flag, human=False
            )
            before, after = self._apply_changes(
                order,
                checked,
                row_cancel_flag=row_cancel_update_flag,
                source=source,
                call_no=call_no,
            )
            before["receive_order_last_modified_date"] = order.last_modified
            after["receive_order_last_modified_date"] = self._touch(order, source)
            self._log(
                "order.update", source, call_no, order_id=order.id, before=before, after=after
            )
            return order.last_modified

    def human_edit(
        self,
        order_id: int,
        fields: Mapping[str, Value] | None = None,
        *,
        call_no: int | None = None,
        rows: Mapping[int, Mapping[str, Value]] | None = None,
        delete: bool = False,
    ) -> str:
        """A person edits the order in NE's screen: bumps last_modified, may change fields.

        Besides any writable field, a human may set ``receive_order_order_status_id`` (e.g. NE
        moving 40 back to 20 after a stock-take), cancel the order
        (``receive_order_cancel_type_id``), change rows (``rows``: row number → row fields,
        e.g. a quantity or ``receive_order_row_cancel_flag``) or delete the order
        (``delete``: ``receive_order_deleted_flag`` 1). Returns the new last_modified.
        """
        with self.lock:
            order = self._order(order_id)
            changes = OrderChanges(
                base=dict(fields or {}), rows={int(k): dict(v) for k, v in (rows or {}).items()}
            )
            checked = self._validate_changes(order, changes, shipped_flag=True, human=True)
            before, after = self._apply_changes(
                order, checked, row_cancel_flag=False, source="human", call_no=call_no
            )
            if delete and order.extra.get("receive_order_deleted_flag") != "1":
                before["receive_order_deleted_flag"] = order.extra.get("receive_order_deleted_flag")
                order.extra["receive_order_deleted_flag"] = after["receive_order_deleted_flag"] = (
                    "1"
                )
            before["receive_order_last_modified_date"] = order.last_modified
            after["receive_order_last_modified_date"] = self._touch(order, "human")
            self._log(
                "order.human_edit", "human", call_no, order_id=order.id, before=before, after=after
            )
            return order.last_modified

    def ship_order(
        self,
        order_id: int | str,
        last_modified: str | None,
        *,
        call_no: int | None = None,
        source: str = "api",
    ) -> str:
        """``shipped``: status → 50, send date set, allocated stock leaves the warehouse."""
        with self.lock:
            order = self._order(order_id)
            self._check_lock(order, last_modified)
            if order.cancel_type_id != 0:
                raise NEError("order_cancelled")
            if order.status_id == 50:
                raise NEError("already_shipped")
            allowed = {40, 20} if self.config.shipped_allowed_from_20 else {40}
            if order.status_id not in allowed:
                raise NEError("status_not_allowed", f"status {order.status_id}")
            effect = self.config.shipped_stock_effect
            if effect != "none":
                for row in order.rows:
                    if row.cancel_flag:
                        continue
                    goods = self.find_goods(row.goods_id)
                    if goods is None:
                        continue
                    taken = row.allocation if effect == "allocated" else row.quantity
                    before = {
                        "stock_quantity": goods.quantity,
                        "stock_allocation_quantity": goods.allocation,
                    }
                    goods.quantity -= taken
                    goods.allocation -= row.allocation
                    goods.last_modified = self.now()
                    self._log(
                        "stock.ship",
                        source,
                        call_no,
                        order_id=order.id,
                        goods_code=goods.code,
                        delta=-taken,
                        before=before,
                        after={
                            "stock_quantity": goods.quantity,
                            "stock_allocation_quantity": goods.allocation,
                            "row_no": row.row_no,
                        },
                    )
            order.stock_consumed = True
            old_status = order.status_id
            self._set_status(order, 50)
            order.extra["receive_order_send_date"] = self.now()
            previous = order.last_modified
            stamp = self._touch(order, source)
            self._log(
                "order.shipped",
                source,
                call_no,
                order_id=order.id,
                before={
                    "receive_order_order_status_id": str(old_status),
                    "receive_order_last_modified_date": previous,
                },
                after={
                    "receive_order_order_status_id": "50",
                    "receive_order_send_date": order.extra["receive_order_send_date"],
                    "receive_order_last_modified_date": stamp,
                },
            )
            return stamp

    def receipt_order(
        self,
        order_id: int | str,
        last_modified: str | None,
        *,
        label_print_flag: str | None = None,
        call_no: int | None = None,
        source: str = "api",
    ) -> str:
        """``receipted``: status 20 → 40 (納品書印刷済), printing date set."""
        with self.lock:
            order = self._order(order_id)
            self._check_lock(order, last_modified)
            if order.cancel_type_id != 0:
                raise NEError("order_cancelled")
            if order.status_id in (40, 50):
                raise NEError("already_printed")
            if order.status_id != 20:
                raise NEError("status_not_allowed", f"status {order.status_id}")
            instruct = order.extra.get("receive_order_statement_delivery_instruct_printing_date")
            if instruct and instruct > self.now():
                raise NEError("print_date_future")
            flag = None
            if label_print_flag not in (None, ""):
                flag = _check_value(
                    "receive_order_label_print_flag", "int", label_print_flag, False
                )
            previous = order.last_modified
            self._set_status(order, 40)
            order.extra["receive_order_statement_delivery_printing_date"] = self.now()
            if flag is not None:
                order.extra["receive_order_label_print_flag"] = flag
            stamp = self._touch(order, source)
            self._log(
                "order.receipted",
                source,
                call_no,
                order_id=order.id,
                before={
                    "receive_order_order_status_id": "20",
                    "receive_order_last_modified_date": previous,
                },
                after={
                    "receive_order_order_status_id": "40",
                    "receive_order_last_modified_date": stamp,
                },
            )
            return stamp

    def label_print_order(
        self,
        order_id: int | str,
        last_modified: str | None,
        flag: str | None,
        *,
        call_no: int | None = None,
        source: str = "api",
    ) -> str:
        """``labelprinted``: 1 = make a label-output target, 2 (default) = label output done."""
        with self.lock:
            order = self._order(order_id)
            self._check_lock(order, last_modified)
            if order.cancel_type_id != 0:
                raise NEError("order_cancelled")
            value = (flag or "2").strip()
            if value not in ("1", "2"):
                raise NEError("validation", "[receive_order_label_print_flag]")
            previous_flag = order.extra.get("receive_order_label_print_flag")
            order.extra["receive_order_label_print_flag"] = value
            if value == "2":
                order.extra["receive_order_label_print_date"] = self.now()
            previous = order.last_modified
            stamp = self._touch(order, source)
            self._log(
                "order.labelprinted",
                source,
                call_no,
                order_id=order.id,
                before={
                    "receive_order_label_print_flag": previous_flag,
                    "receive_order_last_modified_date": previous,
                },
                after={
                    "receive_order_label_print_flag": value,
                    "receive_order_last_modified_date": stamp,
                },
            )
            return stamp

    # ================================================================ uploads
    def queue_goods_upload(
        self, upload: UploadCsv, *, call_no: int | None = None, source: str = "api"
    ) -> int:
        """Create the queue row of a goods upload; the CSV is applied when the que finishes."""
        with self.lock:
            que_id = self._next_que_id
            self._next_que_id += 1
            now = self.clock.now()
            que = Que(
                que_id=que_id,
                method_name="SYOHIN_KIHON_CSV",
                upload_name=self.config.que_upload_name,
                client_file_name=self.config.que_client_file_name,
                file_name=f"{now:%Y%m%d%H%M%S}_{que_id}_SYOHIN_KIHON_CSV.csv",
                creation_date=format_ne(now),
                created_at=now,
                rows=upload.rows,
                call_no=call_no,
                parse_error=upload.error,
                inject_failure=self.faults.take_que_failure(),
            )
            self.ques[que_id] = que
            self._pending_ques.append(que_id)
            self._log(
                "que.create",
                source,
                call_no,
                que_id=que_id,
                after={"que_status_id": "0", "rows": len(upload.rows)},
            )
            self.process_ques()
            return que_id

    def process_ques(self) -> None:
        """Advance upload queue rows whose time has come (0 → 1 → 2 or -1)."""
        with self.lock:
            if not self._pending_ques:
                return
            now = self.clock.now()
            delay = self.config.que_processing_delay_s
            pending, self._pending_ques = self._pending_ques, []
            still: list[int] = []
            for que_id in pending:
                que = self.ques[que_id]
                elapsed = (now - que.created_at).total_seconds()
                if elapsed >= delay:
                    self._finish_que(que)
                    continue
                if elapsed >= delay / 2 and que.status_id == 0:
                    que.status_id = 1
                    que.last_modified = format_ne(now)
                    self._log(
                        "que.processing",
                        "que",
                        que.call_no,
                        que_id=que_id,
                        before={"que_status_id": "0"},
                        after={"que_status_id": "1"},
                    )
                still.append(que_id)
            self._pending_ques = still + self._pending_ques

    def _finish_que(self, que: Que) -> None:
        before = {"que_status_id": str(que.status_id)}
        failure = None
        if que.inject_failure:
            failure = "サンドボックス: 注入された処理失敗"
        elif que.parse_error:
            failure = que.parse_error
        elif self.config.upload_row_error_mode == "all_or_nothing":
            projected: dict[str, int] = {}
            for line, row in enumerate(que.rows, start=2):
                error = self._upload_row(row, line, que, projected)
                if error is not None:
                    que.row_errors.append({"line": line, "message": error})
            if que.row_errors:
                failure = " / ".join(e["message"] for e in que.row_errors)
        if failure is None:
            for line, row in enumerate(que.rows, start=2):
                error = self._upload_row(row, line, que, None)
                if error is not None:
                    que.row_errors.append({"line": line, "message": error})
        que.status_id = -1 if failure is not None else 2
        que.message = failure
        que.last_modified = self.now()
        self._log(
            "que.failed" if failure is not None else "que.done",
            "que",
            que.call_no,
            que_id=que.que_id,
            before=before,
            after={
                "que_status_id": str(que.status_id),
                "que_message": failure,
                "row_errors": list(que.row_errors),
            },
        )

    def _upload_row(
        self, row: Mapping[str, str], line: int, que: Que, projected: dict[str, int] | None
    ) -> str | None:
        """Apply one CSV row, or with ``projected`` only check it; returns an error text."""
        code = row.get("syohin_code", "")
        if not code:
            return f"{line}行目: syohin_codeが空です"
        text = row.get("zaiko_su", "")
        delta: int | None = None
        if text:
            try:
                delta = int(text)
            except ValueError:
                return f"{line}行目: zaiko_su({text})が整数ではありません"
        key = self.goods_key(code)
        goods = self.goods.get(key)
        exists = goods is not None or (projected is not None and key in projected)
        if not exists:
            missing = [c for c in CREATE_COLUMNS if not row.get(c)]
            if missing:
                needed = ",".join(missing)
                return f"{line}行目: 商品コード{code}は未登録です(新規登録には{needed}が必要)"
            if delta is not None and delta < 0:
                return f"{line}行目: 商品コード{code}の在庫数をマイナスにはできません"
            if projected is not None:
                projected[key] = delta or 0
                return None
            fields = {UPLOAD_COLUMNS[c]: v for c, v in row.items() if c in UPLOAD_COLUMNS and v}
            self.create_goods(code, 0, fields=fields, source="que", call_no=que.call_no)
            created = self.find_goods(code)
            assert created is not None
            self._apply_upload_row(created, code, {}, delta, que)
            return None
        free = (
            projected[key]
            if projected is not None and key in projected
            else (goods.free if goods is not None else 0)
        )
        if delta is not None and delta < 0 and -delta > free:
            return f"{line}行目: 商品コード{code}はフリー在庫数({free})を超えて減算できません"
        if projected is not None:
            projected[key] = free + (delta or 0)
            return None
        assert goods is not None
        self._apply_upload_row(goods, code, row, delta, que)
        return None

    def _apply_upload_row(
        self, goods: Goods, code: str, row: Mapping[str, str], delta: int | None, que: Que
    ) -> None:
        now = self.now()
        if self.config.upload_recases_goods_code and code != goods.code:
            self._log(
                "goods.recase",
                "que",
                que.call_no,
                goods_code=code,
                que_id=que.que_id,
                before={"goods_id": goods.code},
                after={"goods_id": code},
            )
            goods.code = code
            goods.last_modified = now
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for column, name in UPLOAD_COLUMNS.items():
            value = row.get(column)
            if value and goods.extra.get(name) != value:
                before[name], after[name] = goods.extra.get(name), value
                goods.extra[name] = value
        if after:
            goods.last_modified = now
            self._log(
                "goods.update",
                "que",
                que.call_no,
                goods_code=goods.code,
                que_id=que.que_id,
                before=before,
                after=after,
            )
        if delta:
            previous = goods.quantity
            goods.quantity += delta
            goods.last_modified = now
            self._log(
                "stock.upload",
                "que",
                que.call_no,
                goods_code=goods.code,
                que_id=que.que_id,
                delta=delta,
                before={"stock_quantity": previous},
                after={"stock_quantity": goods.quantity},
            )

    # ================================================================ search candidates
    def order_candidates(self, query: Query, id_field: str = "receive_order_id") -> list[Order]:
        """Orders that may match ``query``, in id order, narrowed by the id/status indexes."""
        ids = query.index_values(id_field)
        if ids is None and id_field != "receive_order_id":
            ids = query.index_values("receive_order_id")
        if ids is not None:
            found = (self.orders.get(i) for i in sorted(_ints(ids)))
            return [o for o in found if o is not None]
        statuses = query.index_values("receive_order_order_status_id")
        if statuses is not None:
            picked: list[Order] = []
            for status in _ints(statuses):
                picked.extend(self._by_status.get(status, {}).values())
            picked.sort(key=lambda o: o.id)
            return picked
        return list(self.orders.values())

    def row_candidates(self, query: Query) -> Iterable[Row]:
        """Rows that may match ``query`` (via the order indexes), in (order, row) order."""
        for order in self.order_candidates(query, "receive_order_row_receive_order_id"):
            yield from order.rows

    # ================================================================ snapshots
    def order_snapshot(self, order_id: int) -> dict[str, Any]:
        """Every base field of an order plus ``rows`` and ``option`` (NE strings)."""
        with self.lock:
            self.process_ques()
            order = self._order(order_id)
            data: dict[str, Any] = {name: fd.get(order) for name, fd in BASE_SCHEMA.items()}
            row_fields = [
                fd
                for name, fd in ROW_SCHEMA.items()
                if name.startswith("receive_order_row_")
                or name.startswith("receive_order_include_from")
            ]
            data["rows"] = [{fd.name: fd.get(r) for fd in row_fields} for r in order.rows]
            data["option"] = dict(order.option)
            data["stock_consumed"] = order.stock_consumed
            return data

    def goods_snapshot(self, code: str) -> dict[str, Any]:
        """A goods record with its stock fields."""
        with self.lock:
            self.process_ques()
            goods = self.find_goods(code)
            if goods is None:
                raise KeyError(code)
            return {name: fd.get(goods) for name, fd in GOODS_SCHEMA.items()}

    def que_snapshot(self, que_id: int) -> dict[str, Any]:
        """A queue row with its fields and the row errors NE only shows in its UI."""
        with self.lock:
            self.process_ques()
            que = self.ques[que_id]
            data: dict[str, Any] = {name: fd.get(que) for name, fd in QUE_SCHEMA.items()}
            data["row_errors"] = list(que.row_errors)
            return data


def _ints(values: Iterable[str]) -> list[int]:
    out = []
    for value in values:
        try:
            number = Decimal(value)
        except InvalidOperation:
            continue
        if number == number.to_integral_value():
            out.append(int(number))
    return out
