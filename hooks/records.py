"""Typed records that flow between the engine, the WMS connectors and the feature plugins.

All records are immutable. Timestamps are timezone-aware. Quantities are positive integers;
stock changes are signed integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, get_args, get_origin, get_type_hints

#: Per record type: its ``Literal`` fields and their allowed values (read once).
_CHOICES: dict[type[Any], dict[str, tuple[object, ...]]] = {}


def _choices(record_type: type[Any]) -> dict[str, tuple[object, ...]]:
    """The fields of a record type whose type is a ``Literal``, with their allowed values."""
    found = _CHOICES.get(record_type)
    if found is None:
        hints = get_type_hints(record_type)
        found = _CHOICES[record_type] = {
            f.name: get_args(hints[f.name])
            for f in fields(record_type)
            if get_origin(hints[f.name]) is Literal
        }
    return found


def check_choices(record: Any) -> None:
    """Refuse a record whose ``Literal`` field holds a value outside its choices (a
    ``Notice(level="warn")`` would otherwise pass silently): ``ValueError`` naming the
    record, the field, the value and the values allowed."""
    for name, allowed in _choices(type(record)).items():
        value = getattr(record, name)
        if value not in allowed:
            raise ValueError(
                f"{type(record).__name__}.{name} must be one of "
                f"{', '.join(map(repr, allowed))}, not {value!r}"
            )


# ---------------------------------------------------------------------------
# WMS side: what connectors deliver


class EventKind(StrEnum):
    """Kinds of WMS events that enter the durable inbox."""

    SHIPMENT = "shipment"
    RECEIPT = "receipt"


@dataclass(frozen=True, slots=True)
class ShipmentLine:
    """One product line of a confirmed shipment (出荷実績)."""

    #: The WMS product code (商品コード).
    product_code: str
    #: Units shipped, 1 or more.
    quantity: int


@dataclass(frozen=True, slots=True)
class WmsShipment:
    """A shipment confirmed in the WMS (出荷確定).

    ``ne_order_id`` is empty for shipments that did not come from Next Engine (wholesale,
    physical shops ...). ``product_code`` in the lines is the WMS product code.
    """

    #: The WMS's id of the shipment; a redelivered shipment with the same id and content is taken
    #: once.
    shipment_id: str
    #: The warehouse code (拠点コード) as configured in ``daemon.yaml``.
    warehouse: str
    #: The Next Engine order it fulfils (受注番号), or ``None`` for a shipment of another channel.
    ne_order_id: str | None
    #: The parcel's tracking number (発送伝票番号), if the WMS gave one.
    tracking_number: str | None
    #: When the WMS confirmed the shipment (timezone-aware).
    confirmed_at: datetime
    #: What left the warehouse, one line per product.
    lines: tuple[ShipmentLine, ...]

    @property
    def from_next_engine(self) -> bool:
        """True when the shipment fulfils an order imported from Next Engine."""
        return bool(self.ne_order_id)


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    """One product line of a confirmed receipt (入荷実績)."""

    #: The WMS product code (商品コード).
    product_code: str
    #: Units received, 1 or more.
    quantity: int


@dataclass(frozen=True, slots=True)
class WmsReceipt:
    """A receipt of goods confirmed in the WMS (入荷確定)."""

    #: The WMS's id of the receipt.
    receipt_id: str
    #: The warehouse code (拠点コード) as configured in ``daemon.yaml``.
    warehouse: str
    #: When the WMS confirmed the receipt (timezone-aware).
    confirmed_at: datetime
    #: What arrived, one line per product.
    lines: tuple[ReceiptLine, ...]


WmsEvent = WmsShipment | WmsReceipt


@dataclass(frozen=True, slots=True)
class ProductLink:
    """A WMS product and the Next Engine goods code registered on it (紐付けコード)."""

    #: The WMS product code (商品コード).
    product_code: str
    #: The Next Engine goods code registered on it (紐付けコード), or ``None`` when none is.
    link_code: str | None


@dataclass(frozen=True, slots=True)
class OrderInstructionLine:
    """One line of a shipment instruction sent to the WMS."""

    #: The line's number in the instruction, from 1.
    line_no: int
    #: The WMS product code matched to the goods.
    product_code: str
    #: The Next Engine goods code (商品コード) of the order row.
    ne_goods_code: str
    #: Units to ship, 1 or more.
    quantity: int


@dataclass(frozen=True, slots=True)
class OrderInstruction:
    """A Next Engine order turned into a WMS shipment instruction (出荷指示)."""

    #: The Next Engine order number (受注番号, ``receive_order_id``).
    ne_order_id: str
    #: The shop's own order number (``receive_order_shop_cut_form_id``).
    shop_order_id: str
    #: The warehouse code that is to ship it.
    warehouse: str
    #: When the order was placed (``receive_order_date``, as Next Engine sent it).
    order_date: str
    #: The delivery method's name (``receive_order_delivery_name``, else its id).
    delivery_method: str
    #: Who receives the parcel (送り先名).
    consignee_name: str
    #: The consignee's postal code.
    consignee_zip: str
    #: The consignee's address.
    consignee_address: str
    #: The consignee's telephone number.
    consignee_tel: str
    #: What to ship, one line per order row.
    lines: tuple[OrderInstructionLine, ...]


# ---------------------------------------------------------------------------
# Next Engine side: what plugins look at when they decide


@dataclass(frozen=True, slots=True)
class NeOrderRow:
    """A non-cancelled row of a Next Engine order (受注明細)."""

    #: The row number (``receive_order_row_no``).
    row_no: int
    #: The Next Engine goods code (``receive_order_row_goods_id``).
    goods_code: str
    #: Units ordered (``receive_order_row_quantity``).
    quantity: int


@dataclass(frozen=True, slots=True)
class NeOrder:
    """A Next Engine order slip (受注伝票) as seen at import time.

    ``fields`` holds every base field the engine fetched, as Next Engine sent them (strings or
    None), for plugins that need more than the typed attributes.
    """

    #: The Next Engine order number (受注番号, ``receive_order_id``).
    order_id: str
    #: The Next Engine shop id (店舗コード, ``receive_order_shop_id``), as a string.
    shop_id: str
    #: The shop's own order number (``receive_order_shop_cut_form_id``).
    shop_order_id: str
    #: The order status (受注状態区分, ``receive_order_order_status_id``); 20 at import.
    status_id: int
    #: The order's tags (受注分類タグ, ``receive_order_gruoping_tag``), e.g. ``[A][B]``.
    grouping_tag: str
    #: When the order last changed in Next Engine (``receive_order_last_modified_date``).
    last_modified: str
    #: The order's non-cancelled rows, by row number.
    rows: tuple[NeOrderRow, ...]
    #: Every base field fetched, by its Next Engine API name.
    fields: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WarehouseInfo:
    """A configured warehouse (拠点) as plugins see it."""

    #: The warehouse code (拠点コード), the key used everywhere.
    code: str
    #: Its display name (the code when none is configured).
    name: str
    #: True when its stock is Next Engine's stock (shipments and receipts move it).
    ne_linked: bool
    #: True when Next Engine orders are imported into it.
    import_orders: bool


# ---------------------------------------------------------------------------
# Decisions: what plugins return


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    """A filter plugin's answer for one order: ``accept=False`` skips it with ``reason``."""

    #: False skips the order at this import.
    accept: bool
    #: Why it was skipped, shown in the run report and logs.
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ShipOrder:
    """Move a Next Engine order to shipped (出荷確定済, status 50).

    Feeds the ``ship_order`` action kind (:data:`hooks.actions.SHIP_ORDER`: key, merge rule).
    """

    #: The Next Engine order number in canonical form (``16``, not ``0016``).
    ne_order_id: str
    kind: Literal["ship_order"] = "ship_order"


@dataclass(frozen=True, slots=True)
class WriteTracking:
    """Write a tracking number (発送伝票番号) together with the shipped status.

    The engine never writes a tracking number alone: without a :class:`ShipOrder` for the same
    order from the same event, this action is dropped and reported. Rides on the
    ``ship_order`` action kind (:data:`hooks.actions.SHIP_ORDER`).
    """

    #: The Next Engine order the number is written on.
    ne_order_id: str
    #: The tracking number (発送伝票番号) as the carrier gave it.
    tracking_number: str
    kind: Literal["write_tracking"] = "write_tracking"


@dataclass(frozen=True, slots=True)
class AdjustStock:
    """Change Next Engine stock of the goods linked to a WMS product by ``delta`` units.

    Feeds the ``adjust_stock`` action kind (:data:`hooks.actions.ADJUST_STOCK`: keys, merge
    rule).
    """

    #: The WMS product code; the engine finds the Next Engine goods through its link code.
    product_code: str
    #: The signed change in units (negative takes stock off); 0 changes nothing.
    delta: int
    kind: Literal["adjust_stock"] = "adjust_stock"


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the admin should know about an event; shown in history and status."""

    message: str
    level: Literal["info", "warning", "error"] = "info"
    kind: Literal["notice"] = "notice"

    def __post_init__(self) -> None:
        """Refuse a value outside the choices of a ``Literal`` field."""
        check_choices(self)


Action = ShipOrder | WriteTracking | AdjustStock | Notice


# ---------------------------------------------------------------------------
# Plugin metadata and health


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What a plugin says about itself.

    ``requires`` names plugins that must be enabled whenever this one is. ``config_model``
    is a pydantic model validating the plugin's section of ``daemon.yaml`` (without the
    ``enabled`` key); ``None`` means the plugin takes no options. ``hook_api`` is the range
    of :data:`hooks.HOOK_API_VERSION` the plugin works with, as a version specifier
    (``">=1.1,<2"``): a nebridge outside it refuses the plugin at load, naming both.
    """

    name: str
    summary: str
    requires: tuple[str, ...] = ()
    config_model: type[Any] | None = None
    setting_ja: str = ""
    hook_api: str = ">=1.0,<2"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The outcome of one health check, as ``nebridge doctor`` shows it."""

    #: What was checked, shown by ``nebridge doctor``.
    name: str
    #: False makes ``doctor`` exit 1.
    ok: bool
    #: What was found.
    detail: str = ""
    #: What the admin should do when it is not ok, ideally a command.
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for the people who must act, handed to each ``nebridge_notify`` sink.

    Built by the engine from the attention items (:mod:`daemon.notify`): ``key`` is the
    attention key it is about (stable while the problem lasts); ``event`` says why it is sent
    now — ``open`` (new problem), ``reminder`` (still open after the reminder time),
    ``resolved`` (the problem is gone), ``digest`` (many problems at once, one message for
    all; ``count`` of them, the first ``lines`` listed) or ``test``. ``delivery_key`` is unique
    per notification × sink and is the same on every retry: a sink that can pass it on (a
    header, the e-mail Message-ID) lets the receiver drop a copy.
    """

    key: str
    kind: str
    event: Literal["open", "reminder", "resolved", "digest", "test"]
    severity: Literal["info", "warning", "error"]
    title: str
    detail: str
    fix: str = ""
    warehouse: str = ""
    ids: tuple[str, ...] = ()
    since: datetime | None = None
    count: int = 1
    lines: tuple[str, ...] = ()
    delivery_key: str = ""
    #: Fleet mode: the code of the company this is about (its suggested commands already carry
    #: ``--company CODE``); empty in a single-company installation.
    company: str = ""

    def __post_init__(self) -> None:
        """Refuse a value outside the choices of a ``Literal`` field."""
        check_choices(self)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (the generic webhook's body; ``since`` as ISO 8601 UTC; ``company``
        only in fleet mode)."""
        data = {
            "key": self.key,
            "kind": self.kind,
            "event": self.event,
            "severity": self.severity,
            "title": self.title,
            "detail": self.detail,
            "fix": self.fix,
            "warehouse": self.warehouse,
            "ids": list(self.ids),
            "since": self.since.isoformat() if self.since else None,
            "count": self.count,
            "lines": list(self.lines),
            "delivery_key": self.delivery_key,
        }
        if self.company:
            data["company"] = self.company
        return data


# ---------------------------------------------------------------------------
# Attention: things a person must look at


@dataclass(frozen=True, slots=True)
class Problem:
    """Something a connector or the engine found that needs a person (an attention item).

    ``key`` names what the problem is about and stays the same while it lasts (e.g.
    ``logikura:partial:33``): reporting the same key again updates the stored problem, and
    resolving the key closes it. ``fix`` tells the admin what to do, ideally an exact command.
    """

    #: Stable while the problem lasts; reporting it again updates it, resolving it closes it.
    key: str
    #: The kind of problem (e.g. ``wms_mismatch``); groups items in ``attention``.
    kind: str
    #: What is wrong, in words.
    reason: str
    #: What the admin should do, ideally an exact command.
    fix: str
    #: The warehouse concerned, if one.
    warehouse: str = ""
    #: What it is about (an order, a shipment), shown beside the reason.
    subject: str = ""
    #: ``error`` needs action; ``warning`` should be looked at.
    severity: Literal["warning", "error"] = "error"

    def __post_init__(self) -> None:
        """Refuse a value outside the choices of a ``Literal`` field."""
        check_choices(self)
