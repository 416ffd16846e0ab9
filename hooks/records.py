"""Typed records that flow between the engine, the WMS connectors and the feature plugins.

All records are immutable. Timestamps are timezone-aware. Quantities are positive integers;
stock changes are signed integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

# ---------------------------------------------------------------------------
# WMS side: what connectors deliver


class EventKind(StrEnum):
    """Kinds of WMS events that enter the durable inbox."""

    SHIPMENT = "shipment"
    RECEIPT = "receipt"


@dataclass(frozen=True, slots=True)
class ShipmentLine:
    """One product line of a confirmed shipment (出荷実績)."""

    product_code: str
    quantity: int


@dataclass(frozen=True, slots=True)
class WmsShipment:
    """A shipment confirmed in the WMS (出荷確定).

    ``ne_order_id`` is empty for shipments that did not come from Next Engine (wholesale,
    physical shops ...). ``product_code`` in the lines is the WMS product code.
    """

    shipment_id: str
    warehouse: str
    ne_order_id: str | None
    tracking_number: str | None
    confirmed_at: datetime
    lines: tuple[ShipmentLine, ...]

    @property
    def from_next_engine(self) -> bool:
        """True when the shipment fulfils an order imported from Next Engine."""
        return bool(self.ne_order_id)


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    """One product line of a confirmed receipt (入荷実績)."""

    product_code: str
    quantity: int


@dataclass(frozen=True, slots=True)
class WmsReceipt:
    """A receipt of goods confirmed in the WMS (入荷確定)."""

    receipt_id: str
    warehouse: str
    confirmed_at: datetime
    lines: tuple[ReceiptLine, ...]


WmsEvent = WmsShipment | WmsReceipt


@dataclass(frozen=True, slots=True)
class ProductLink:
    """A WMS product and the Next Engine goods code registered on it (紐付けコード)."""

    product_code: str
    link_code: str | None


@dataclass(frozen=True, slots=True)
class OrderInstructionLine:
    """One line of a shipment instruction sent to the WMS."""

    line_no: int
    product_code: str
    ne_goods_code: str
    quantity: int


@dataclass(frozen=True, slots=True)
class OrderInstruction:
    """A Next Engine order turned into a WMS shipment instruction (出荷指示)."""

    ne_order_id: str
    shop_order_id: str
    warehouse: str
    order_date: str
    delivery_method: str
    consignee_name: str
    consignee_zip: str
    consignee_address: str
    consignee_tel: str
    lines: tuple[OrderInstructionLine, ...]


# ---------------------------------------------------------------------------
# Next Engine side: what plugins look at when they decide


@dataclass(frozen=True, slots=True)
class NeOrderRow:
    """A non-cancelled row of a Next Engine order (受注明細)."""

    row_no: int
    goods_code: str
    quantity: int


@dataclass(frozen=True, slots=True)
class NeOrder:
    """A Next Engine order slip (受注伝票) as seen at import time.

    ``fields`` holds every base field the engine fetched, as Next Engine sent them (strings or
    None), for plugins that need more than the typed attributes.
    """

    order_id: str
    shop_id: str
    shop_order_id: str
    status_id: int
    grouping_tag: str
    last_modified: str
    rows: tuple[NeOrderRow, ...]
    fields: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WarehouseInfo:
    """A configured warehouse (拠点) as plugins see it."""

    code: str
    name: str
    ne_linked: bool
    import_orders: bool


# ---------------------------------------------------------------------------
# Decisions: what plugins return


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    """A filter plugin's answer for one order: ``accept=False`` skips it with ``reason``."""

    accept: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ShipOrder:
    """Move a Next Engine order to shipped (出荷確定済, status 50)."""

    ne_order_id: str
    kind: Literal["ship_order"] = "ship_order"


@dataclass(frozen=True, slots=True)
class WriteTracking:
    """Write a tracking number (発送伝票番号) together with the shipped status.

    The engine never writes a tracking number alone: without a :class:`ShipOrder` for the same
    order from the same event, this action is dropped and reported.
    """

    ne_order_id: str
    tracking_number: str
    kind: Literal["write_tracking"] = "write_tracking"


@dataclass(frozen=True, slots=True)
class AdjustStock:
    """Change Next Engine stock of the goods linked to a WMS product by ``delta`` units."""

    product_code: str
    delta: int
    kind: Literal["adjust_stock"] = "adjust_stock"


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the admin should know about an event; shown in history and status."""

    message: str
    level: Literal["info", "warning", "error"] = "info"
    kind: Literal["notice"] = "notice"


Action = ShipOrder | WriteTracking | AdjustStock | Notice


# ---------------------------------------------------------------------------
# Plugin metadata and health


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What a plugin says about itself.

    ``requires`` names plugins that must be enabled whenever this one is. ``config_model``
    is a pydantic model validating the plugin's section of ``daemon.yaml`` (without the
    ``enabled`` key); ``None`` means the plugin takes no options.
    """

    name: str
    summary: str
    requires: tuple[str, ...] = ()
    config_model: type[Any] | None = None
    setting_ja: str = ""


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The outcome of one health check, as ``nebridge doctor`` shows it."""

    name: str
    ok: bool
    detail: str = ""
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

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (the generic webhook's body; ``since`` as ISO 8601 UTC)."""
        return {"key": self.key, "kind": self.kind, "event": self.event,
                "severity": self.severity, "title": self.title, "detail": self.detail,
                "fix": self.fix, "warehouse": self.warehouse, "ids": list(self.ids),
                "since": self.since.isoformat() if self.since else None,
                "count": self.count, "lines": list(self.lines),
                "delivery_key": self.delivery_key}


# ---------------------------------------------------------------------------
# Attention: things a person must look at


@dataclass(frozen=True, slots=True)
class Problem:
    """Something a connector or the engine found that needs a person (an attention item).

    ``key`` names what the problem is about and stays the same while it lasts (e.g.
    ``logikura:partial:33``): reporting the same key again updates the stored problem, and
    resolving the key closes it. ``fix`` tells the admin what to do, ideally an exact command.
    """

    key: str
    kind: str
    reason: str
    fix: str
    warehouse: str = ""
    subject: str = ""
    severity: Literal["warning", "error"] = "error"
