"""Field catalogues of the sandbox resources (names, kinds, getters) and NE label tables.

Field names follow reference §4.2, §4.5, §4.6, §5.1, §5.2, §5.5 verbatim, including NE's own
spelling mistakes (``receive_order_gruoping_tag``, ``receive_order_option_rapping``).
A :class:`FieldDef` knows how to read one field from a record as an NE string (or ``None``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from daemon.sandbox.model import Order, Row

Kind = Literal["int", "num", "date", "str"]
Getter = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class FieldDef:
    """One searchable field: NE name, value kind, getter, and whether it is a goods code."""

    name: str
    kind: Kind
    get: Getter
    native: Callable[[Any], Any] | None = None
    is_code: bool = False


Schema = dict[str, FieldDef]

ORDER_STATUS: dict[int, str] = {
    0: "取込情報不足",
    1: "受注メール取込済",
    2: "起票済(CSV/手入力)",
    20: "納品書印刷待ち",
    30: "納品書印刷中",
    40: "納品書印刷済",
    50: "出荷確定済（完了）",
}
#: cancel_type_id -> (name, deleted_flag); 0 is "valid order" (§4.4)
CANCEL_TYPES: dict[int, tuple[str, str]] = {
    0: ("有効な受注です。", "0"),
    1: ("顧客都合によるキャンセル", "0"),
    2: ("在庫不足によるキャンセル", "0"),
    3: ("他の伝票への統合", "0"),
    9: ("旧キャンセル区分", "1"),
}
_LABELS: dict[str, dict[str, str]] = {
    "receive_order_delivery_id": {
        "1": "ヤマト運輸(宅急便)",
        "2": "日本郵便(ゆうパック)",
        "13": "佐川急便(e飛伝2)",
        "30": "ネコポス",
    },
    "receive_order_payment_method_id": {
        "1": "代金引換",
        "2": "クレジットカード",
        "3": "銀行振込",
        "4": "後払い",
    },
    "receive_order_deposit_type_id": {"0": "未入金", "1": "一部入金", "2": "入金済"},
    "receive_order_import_type_id": {"1": "メール取込", "2": "手入力", "3": "CSV取込"},
    "receive_order_confirm_check_id": {"0": "未確認", "1": "要確認", "2": "確認済（表示）"},
    "receive_order_important_check_id": {"0": "未確認", "1": "確認済"},
    "receive_order_customer_type_id": {"0": "一般顧客", "1": "業者"},
    "receive_order_credit_approval_type_id": {"0": "必要なし", "10": "未承認", "20": "承認済"},
    "receive_order_row_received_time_merchandise_id": {"0": "取扱中", "1": "取扱中止"},
    "receive_order_row_received_time_goods_type_id": {"0": "通常", "10": "予約", "20": "受注"},
    "goods_type_id": {"0": "通常", "10": "予約", "20": "受注"},
    "goods_merchandise_id": {"0": "取扱中", "1": "取扱中止"},
}

# ---------------------------------------------------------------- base (受注伝票)
_BASE_EXTRA: tuple[tuple[str, Kind], ...] = (
    ("receive_order_shop_cut_form_id", "str"),
    ("receive_order_date", "date"),
    ("receive_order_import_date", "date"),
    ("receive_order_important_check_id", "int"),
    ("receive_order_confirm_check_id", "int"),
    ("receive_order_confirm_ids", "str"),
    ("receive_order_mail_status", "str"),
    ("receive_order_gruoping_tag", "str"),
    ("receive_order_import_type_id", "int"),
    ("receive_order_cancel_date", "date"),
    ("receive_order_closed_after_edit_date", "date"),
    ("receive_order_delivery_id", "int"),
    ("receive_order_payment_method_id", "int"),
    ("receive_order_total_amount", "num"),
    ("receive_order_tax_amount", "num"),
    ("receive_order_charge_amount", "num"),
    ("receive_order_delivery_fee_amount", "num"),
    ("receive_order_other_amount", "num"),
    ("receive_order_point_amount", "num"),
    ("receive_order_goods_amount", "num"),
    ("receive_order_deposit_amount", "num"),
    ("receive_order_deposit_type_id", "int"),
    ("receive_order_deposit_date", "date"),
    ("receive_order_note", "str"),
    ("receive_order_include_possible_order_id", "int"),
    ("receive_order_include_to_order_id", "int"),
    ("receive_order_multi_delivery_parent_order_id", "int"),
    ("receive_order_divide_from_order_id", "int"),
    ("receive_order_copy_from_order_id", "int"),
    ("receive_order_multi_delivery_parent_flag", "int"),
    ("receive_order_statement_delivery_instruct_printing_date", "date"),
    ("receive_order_statement_delivery_printing_date", "date"),
    ("receive_order_statement_delivery_text", "str"),
    ("receive_order_send_date", "date"),
    ("receive_order_send_plan_date", "date"),
    ("receive_order_send_sequence", "int"),
    ("receive_order_worker_text", "str"),
    ("receive_order_picking_instruct", "str"),
    ("receive_order_label_print_date", "date"),
    ("receive_order_label_print_flag", "int"),
    ("receive_order_hope_delivery_date", "date"),
    ("receive_order_hope_delivery_time_slot_id", "str"),
    ("receive_order_hope_delivery_time_slot_name", "str"),
    ("receive_order_delivery_method_id", "str"),
    ("receive_order_delivery_method_name", "str"),
    ("receive_order_seal1_id", "str"),
    ("receive_order_seal1_name", "str"),
    ("receive_order_seal2_id", "str"),
    ("receive_order_seal2_name", "str"),
    ("receive_order_seal3_id", "str"),
    ("receive_order_seal3_name", "str"),
    ("receive_order_seal4_id", "str"),
    ("receive_order_seal4_name", "str"),
    ("receive_order_business_office_stop_id", "str"),
    ("receive_order_business_office_stop_name", "str"),
    ("receive_order_invoice_id", "str"),
    ("receive_order_invoice_name", "str"),
    ("receive_order_temperature_id", "str"),
    ("receive_order_temperature_name", "str"),
    ("receive_order_business_office_name", "str"),
    ("receive_order_gift_flag", "int"),
    ("receive_order_delivery_cut_form_id", "str"),
    ("receive_order_delivery_cut_form_note", "str"),
    ("receive_order_credit_type_id", "str"),
    ("receive_order_credit_type_name", "str"),
    ("receive_order_credit_approval_no", "str"),
    ("receive_order_credit_approval_amount", "num"),
    ("receive_order_credit_approval_type_id", "int"),
    ("receive_order_credit_approval_date", "date"),
    ("receive_order_credit_approval_rate", "num"),
    ("receive_order_credit_number_payments", "int"),
    ("receive_order_credit_authorization_center_id", "str"),
    ("receive_order_credit_authorization_center_name", "str"),
    ("receive_order_credit_approval_fax_printing_date", "date"),
    ("receive_order_customer_type_id", "int"),
    ("receive_order_customer_id", "str"),
    ("receive_order_purchaser_name", "str"),
    ("receive_order_purchaser_kana", "str"),
    ("receive_order_purchaser_zip_code", "str"),
    ("receive_order_purchaser_address1", "str"),
    ("receive_order_purchaser_address2", "str"),
    ("receive_order_purchaser_tel", "str"),
    ("receive_order_purchaser_fax", "str"),
    ("receive_order_purchaser_mail_address", "str"),
    ("receive_order_consignee_name", "str"),
    ("receive_order_consignee_kana", "str"),
    ("receive_order_consignee_zip_code", "str"),
    ("receive_order_consignee_address1", "str"),
    ("receive_order_consignee_address2", "str"),
    ("receive_order_consignee_tel", "str"),
    ("receive_order_consignee_fax", "str"),
    ("receive_order_important_check_pic_id", "str"),
    ("receive_order_important_check_pic_name", "str"),
    ("receive_order_pic_id", "str"),
    ("receive_order_pic_name", "str"),
    ("receive_order_send_pic_id", "str"),
    ("receive_order_send_pic_name", "str"),
    ("receive_order_deleted_flag", "int"),
    ("receive_order_creator_id", "str"),
    ("receive_order_creator_name", "str"),
    ("receive_order_last_modified_by_id", "str"),
    ("receive_order_last_modified_by_name", "str"),
    ("receive_order_reminder_count", "int"),
    ("receive_order_reminder_last_date", "date"),
    ("receive_order_reminder_start_date", "date"),
)

#: Base fields ``update`` may not write (server-maintained or derived).
BASE_READ_ONLY: frozenset[str] = frozenset(
    {
        "receive_order_id",
        "receive_order_shop_id",
        "receive_order_order_status_id",
        "receive_order_import_date",
        "receive_order_import_type_id",
        "receive_order_cancel_date",
        "receive_order_send_date",
        "receive_order_statement_delivery_printing_date",
        "receive_order_label_print_date",
        "receive_order_deleted_flag",
        "receive_order_creation_date",
        "receive_order_last_modified_date",
        "receive_order_last_modified_null_safe_date",
        "receive_order_creator_id",
        "receive_order_creator_name",
        "receive_order_last_modified_by_id",
        "receive_order_last_modified_by_name",
        "receive_order_last_modified_by_null_safe_id",
        "receive_order_last_modified_by_null_safe_name",
    }
)


#: Base fields ``update`` may write.
BASE_WRITABLE: frozenset[str] = (
    frozenset({name for name, _kind in _BASE_EXTRA} | {"receive_order_cancel_type_id"})
    - BASE_READ_ONLY
)


def _extra(name: str) -> Getter:
    def get(record: Any) -> str | None:
        value: str | None = record.extra.get(name)
        return value

    return get


def _label(id_name: str, table: Mapping[str, str]) -> Getter:
    def get(record: Any) -> str | None:
        value = record.extra.get(id_name)
        return None if value is None else table.get(value)

    return get


def _order_status_name(order: Order) -> str | None:
    return ORDER_STATUS.get(order.status_id)


def _cancel_type_name(order: Order) -> str | None:
    entry = CANCEL_TYPES.get(order.cancel_type_id)
    return None if entry is None else entry[0]


def _base_schema() -> Schema:
    defs: list[FieldDef] = [
        FieldDef("receive_order_shop_id", "int", lambda o: str(o.shop_id), lambda o: o.shop_id),
        FieldDef("receive_order_id", "int", lambda o: str(o.id), lambda o: o.id),
        FieldDef(
            "receive_order_order_status_id",
            "int",
            lambda o: str(o.status_id),
            lambda o: o.status_id,
        ),
        FieldDef("receive_order_order_status_name", "str", _order_status_name),
        FieldDef(
            "receive_order_cancel_type_id",
            "int",
            lambda o: str(o.cancel_type_id),
            lambda o: o.cancel_type_id,
        ),
        FieldDef("receive_order_cancel_type_name", "str", _cancel_type_name),
        FieldDef("receive_order_creation_date", "date", lambda o: o.creation_date),
        FieldDef("receive_order_last_modified_date", "date", lambda o: o.last_modified),
        FieldDef("receive_order_last_modified_null_safe_date", "date", lambda o: o.last_modified),
        FieldDef(
            "receive_order_last_modified_by_null_safe_id",
            "str",
            lambda o: (
                o.extra.get("receive_order_last_modified_by_id")
                or o.extra.get("receive_order_creator_id")
            ),
        ),
        FieldDef(
            "receive_order_last_modified_by_null_safe_name",
            "str",
            lambda o: (
                o.extra.get("receive_order_last_modified_by_name")
                or o.extra.get("receive_order_creator_name")
            ),
        ),
    ]
    for name, kind in _BASE_EXTRA:
        defs.append(FieldDef(name, kind, _extra(name)))
        if name in _LABELS:
            label_name = name[: -len("_id")] + "_name"
            defs.append(FieldDef(label_name, "str", _label(name, _LABELS[name])))
    return {d.name: d for d in defs}


# ---------------------------------------------------------------- rows (受注明細)
_ROW_EXTRA: tuple[tuple[str, Kind], ...] = (
    ("receive_order_row_shop_row_no", "int"),
    ("receive_order_row_goods_name", "str"),
    ("receive_order_row_unit_price", "num"),
    ("receive_order_row_received_time_first_cost", "num"),
    ("receive_order_row_tax_rate", "num"),
    ("receive_order_row_wholesale_retail_ratio", "num"),
    ("receive_order_row_goods_option", "str"),
    ("receive_order_include_from_order_id", "int"),
    ("receive_order_include_from_row_no", "int"),
    ("receive_order_row_multi_delivery_parent_order_id", "int"),
    ("receive_order_row_divide_from_row_no", "int"),
    ("receive_order_row_copy_from_row_no", "int"),
    ("receive_order_row_advance_order_stock_allocation_quantity", "int"),
    ("receive_order_row_stock_allocation_date", "date"),
    ("receive_order_row_received_time_merchandise_id", "int"),
    ("receive_order_row_received_time_goods_type_id", "int"),
    ("receive_order_row_returned_good_quantity", "int"),
    ("receive_order_row_returned_bad_quantity", "int"),
    ("receive_order_row_returned_reason_id", "str"),
    ("receive_order_row_returned_reason_name", "str"),
    ("receive_order_row_org_row_no", "int"),
    ("receive_order_row_deleted_flag", "int"),
    ("receive_order_row_creation_date", "date"),
    ("receive_order_row_last_modified_date", "date"),
    ("receive_order_row_creator_id", "str"),
    ("receive_order_row_creator_name", "str"),
    ("receive_order_row_last_modified_by_id", "str"),
    ("receive_order_row_last_modified_by_name", "str"),
)

#: Row fields ``update`` may write (inside ``<receive_order_row_no value="n">``).
ROW_WRITABLE: frozenset[str] = frozenset(
    {
        "receive_order_row_goods_id",
        "receive_order_row_goods_name",
        "receive_order_row_quantity",
        "receive_order_row_unit_price",
        "receive_order_row_cancel_flag",
        "receive_order_row_goods_option",
        "receive_order_row_tax_rate",
        "receive_order_row_wholesale_retail_ratio",
        "receive_order_row_received_time_first_cost",
        "receive_order_row_shop_row_no",
    }
)


def _sub_total(row: Row) -> str | None:
    price = row.extra.get("receive_order_row_unit_price")
    if price is None:
        return None
    try:
        total = float(price) * row.quantity
    except ValueError:
        return None
    return str(int(total)) if total.is_integer() else f"{total:.2f}"


def _row_newest(row: Row) -> str | None:
    own = row.extra.get("receive_order_row_last_modified_date")
    base = row.order.last_modified
    return base if own is None or base > own else own


def _wrap_base(definition: FieldDef) -> FieldDef:
    get = definition.get
    native = definition.native
    return FieldDef(
        definition.name,
        definition.kind,
        lambda r: get(r.order),
        None if native is None else (lambda r: native(r.order)),
        definition.is_code,
    )


def _row_schema(base: Schema) -> Schema:
    defs: list[FieldDef] = [
        FieldDef(
            "receive_order_row_receive_order_id",
            "int",
            lambda r: str(r.order.id),
            lambda r: r.order.id,
        ),
        FieldDef(
            "receive_order_row_shop_cut_form_id",
            "str",
            lambda r: r.order.extra.get("receive_order_shop_cut_form_id"),
        ),
        FieldDef("receive_order_row_no", "int", lambda r: str(r.row_no), lambda r: r.row_no),
        FieldDef("receive_order_row_goods_id", "str", lambda r: r.goods_id, is_code=True),
        FieldDef(
            "receive_order_row_quantity", "int", lambda r: str(r.quantity), lambda r: r.quantity
        ),
        FieldDef(
            "receive_order_row_cancel_flag",
            "int",
            lambda r: str(r.cancel_flag),
            lambda r: r.cancel_flag,
        ),
        FieldDef(
            "receive_order_row_stock_allocation_quantity",
            "int",
            lambda r: str(r.allocation),
            lambda r: r.allocation,
        ),
        FieldDef("receive_order_row_sub_total_price", "num", _sub_total),
        FieldDef(
            "receive_order_row_last_modified_null_safe_date",
            "date",
            lambda r: (
                r.extra.get("receive_order_row_last_modified_date")
                or r.extra.get("receive_order_row_creation_date")
            ),
        ),
        FieldDef("receive_order_row_last_modified_newest_date", "date", _row_newest),
    ]
    for name, kind in _ROW_EXTRA:
        defs.append(FieldDef(name, kind, _extra(name)))
        if name in _LABELS:
            label_name = name[: -len("_id")] + "_name"
            defs.append(FieldDef(label_name, "str", _label(name, _LABELS[name])))
    schema = {d.name: d for d in defs}
    for name, definition in base.items():
        schema.setdefault(name, _wrap_base(definition))
    return schema


# ---------------------------------------------------------------- options
OPTION_FIELDS: tuple[str, ...] = (
    "receive_order_option_single_word_memo",
    "receive_order_option_message",
    "receive_order_option_noshi",
    "receive_order_option_rapping",
    *(f"receive_order_option_{i}" for i in range(1, 11)),
    "receive_order_option_received_time_shop_coupon",
    "receive_order_option_received_time_mall_coupon",
)


def _option_getter(name: str) -> Getter:
    def get(order: Order) -> str | None:
        return order.option.get(name)

    return get


def _option_schema() -> Schema:
    defs: list[FieldDef] = [
        FieldDef(
            "receive_order_option_receive_order_id", "int", lambda o: str(o.id), lambda o: o.id
        ),
        FieldDef("receive_order_option_creation_date", "date", lambda o: o.creation_date),
        FieldDef(
            "receive_order_option_last_modified_date",
            "date",
            lambda o: o.option.get("receive_order_option_last_modified_date"),
        ),
    ]
    kinds: dict[str, Kind] = {
        "receive_order_option_received_time_shop_coupon": "num",
        "receive_order_option_received_time_mall_coupon": "num",
    }
    for name in OPTION_FIELDS:
        defs.append(FieldDef(name, kinds.get(name, "str"), _option_getter(name)))
    return {d.name: d for d in defs}


# ---------------------------------------------------------------- goods and stock
_GOODS_EXTRA: tuple[tuple[str, Kind], ...] = (
    ("goods_name", "str"),
    ("goods_foreign_name", "str"),
    ("goods_type_id", "int"),
    ("goods_merchandise_id", "int"),
    ("goods_supplier_id", "str"),
    ("supplier_name", "str"),
    ("goods_jan_code", "str"),
    ("goods_model_number", "str"),
    ("goods_color", "str"),
    ("goods_size", "str"),
    ("goods_cost_price", "num"),
    ("goods_display_price", "num"),
    ("goods_selling_price", "num"),
    ("goods_tax_rate", "num"),
    ("goods_release_date", "date"),
    ("goods_stock_constant", "int"),
    ("goods_order_point", "int"),
    ("goods_lot", "int"),
    ("goods_stock_management_flag", "int"),
    ("goods_note", "str"),
    ("goods_visible_flag", "int"),
    ("goods_tag", "str"),
    ("goods_location", "str"),
    ("goods_deleted_flag", "int"),
)


def _stock_defs() -> list[FieldDef]:
    return [
        FieldDef("stock_goods_id", "str", lambda g: g.code, is_code=True),
        FieldDef("stock_quantity", "int", lambda g: str(g.quantity), lambda g: g.quantity),
        FieldDef(
            "stock_allocation_quantity", "int", lambda g: str(g.allocation), lambda g: g.allocation
        ),
        FieldDef("stock_free_quantity", "int", lambda g: str(g.free), lambda g: g.free),
        FieldDef("stock_defective_quantity", "int", lambda g: "0"),
        FieldDef("stock_remaining_order_quantity", "int", lambda g: "0"),
        FieldDef("stock_out_quantity", "int", lambda g: "0"),
        FieldDef("stock_advance_order_quantity", "int", lambda g: "0"),
        FieldDef("stock_advance_order_allocation_quantity", "int", lambda g: "0"),
        FieldDef("stock_advance_order_free_quantity", "int", lambda g: "0"),
        FieldDef("stock_deleted_flag", "int", lambda g: "0"),
        FieldDef("stock_creation_date", "date", lambda g: g.creation_date),
        FieldDef("stock_last_modified_date", "date", lambda g: g.last_modified),
        FieldDef(
            "stock_last_modified_null_safe_date",
            "date",
            lambda g: g.last_modified or g.creation_date,
        ),
    ]


def _goods_schema() -> Schema:
    defs: list[FieldDef] = [
        FieldDef("goods_id", "str", lambda g: g.code, is_code=True),
        FieldDef("goods_representation_id", "str", _extra("goods_representation_id"), is_code=True),
        FieldDef("goods_creation_date", "date", lambda g: g.creation_date),
        FieldDef("goods_last_modified_date", "date", lambda g: g.last_modified),
        FieldDef(
            "goods_last_modified_null_safe_date",
            "date",
            lambda g: g.last_modified or g.creation_date,
        ),
    ]
    for name, kind in _GOODS_EXTRA:
        defs.append(FieldDef(name, kind, _extra(name)))
        if name in _LABELS:
            defs.append(FieldDef(name[: -len("_id")] + "_name", "str", _label(name, _LABELS[name])))
    defs.extend(_stock_defs())
    return {d.name: d for d in defs}


def _stock_schema() -> Schema:
    return {d.name: d for d in _stock_defs()}


# ---------------------------------------------------------------- queue, tags
def _que_schema() -> Schema:
    defs: list[FieldDef] = [
        FieldDef("que_id", "int", lambda q: str(q.que_id), lambda q: q.que_id),
        FieldDef("que_method_name", "str", lambda q: q.method_name),
        FieldDef("que_shop_id", "int", lambda q: None),
        FieldDef("que_upload_name", "str", lambda q: q.upload_name),
        FieldDef("que_client_file_name", "str", lambda q: q.client_file_name),
        FieldDef("que_file_name", "str", lambda q: q.file_name),
        FieldDef("que_status_id", "int", lambda q: str(q.status_id), lambda q: q.status_id),
        FieldDef("que_message", "str", lambda q: q.message),
        FieldDef("que_deleted_flag", "int", lambda q: "0"),
        FieldDef("que_creation_date", "date", lambda q: q.creation_date),
        FieldDef("que_last_modified_date", "date", lambda q: q.last_modified),
        FieldDef(
            "que_last_modified_null_safe_date", "date", lambda q: q.last_modified or q.creation_date
        ),
        FieldDef("que_creator_id", "str", lambda q: "1"),
        FieldDef("que_creator_name", "str", lambda q: "API"),
        FieldDef("que_last_modified_by_id", "str", lambda q: None),
        FieldDef("que_last_modified_by_name", "str", lambda q: None),
    ]
    return {d.name: d for d in defs}


TAG_FIELDS: tuple[tuple[str, Kind], ...] = (
    ("grouping_tag_id", "int"),
    ("grouping_tag_name", "str"),
    ("grouping_tag_color", "str"),
    ("grouping_tag_str_color", "str"),
    ("grouping_tag_memo", "str"),
    ("grouping_tag_deleted_flag", "int"),
    ("grouping_tag_creation_date", "date"),
    ("grouping_tag_last_modified_date", "date"),
)


def _dict_getter(name: str) -> Getter:
    def get(record: Mapping[str, str | None]) -> str | None:
        return record.get(name)

    return get


def _tag_schema() -> Schema:
    return {name: FieldDef(name, kind, _dict_getter(name)) for name, kind in TAG_FIELDS}


BASE_SCHEMA: Schema = _base_schema()
ROW_SCHEMA: Schema = _row_schema(BASE_SCHEMA)
OPTION_SCHEMA: Schema = _option_schema()
GOODS_SCHEMA: Schema = _goods_schema()
STOCK_SCHEMA: Schema = _stock_schema()
QUE_SCHEMA: Schema = _que_schema()
TAG_SCHEMA: Schema = _tag_schema()

__all__ = [
    "BASE_READ_ONLY",
    "BASE_SCHEMA",
    "BASE_WRITABLE",
    "CANCEL_TYPES",
    "GOODS_SCHEMA",
    "OPTION_FIELDS",
    "OPTION_SCHEMA",
    "ORDER_STATUS",
    "QUE_SCHEMA",
    "ROW_SCHEMA",
    "ROW_WRITABLE",
    "STOCK_SCHEMA",
    "TAG_SCHEMA",
    "FieldDef",
    "Schema",
]
