"""Turning WMS events and actions into stored JSON and back, with stable content hashes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from hooks.records import (
    EventKind,
    ReceiptLine,
    ShipmentLine,
    WmsEvent,
    WmsReceipt,
    WmsShipment,
)


def event_kind(event: WmsEvent) -> EventKind:
    """The inbox kind of an event."""
    return EventKind.SHIPMENT if isinstance(event, WmsShipment) else EventKind.RECEIPT


def event_external_id(event: WmsEvent) -> str:
    """The WMS's own id of the event (shipment id or receipt id)."""
    return event.shipment_id if isinstance(event, WmsShipment) else event.receipt_id


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


_CANONICAL = json.JSONEncoder(
    default=_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False
)


def _plain(event: WmsEvent) -> dict[str, Any]:
    """``asdict(event)`` without its deep copies, for the engine's own record types."""
    if type(event) is WmsShipment and all(type(x) is ShipmentLine for x in event.lines):
        return {
            "shipment_id": event.shipment_id,
            "warehouse": event.warehouse,
            "ne_order_id": event.ne_order_id,
            "tracking_number": event.tracking_number,
            "confirmed_at": event.confirmed_at,
            "lines": [
                {"product_code": x.product_code, "quantity": x.quantity} for x in event.lines
            ],
        }
    if type(event) is WmsReceipt and all(type(x) is ReceiptLine for x in event.lines):
        return {
            "receipt_id": event.receipt_id,
            "warehouse": event.warehouse,
            "confirmed_at": event.confirmed_at,
            "lines": [
                {"product_code": x.product_code, "quantity": x.quantity} for x in event.lines
            ],
        }
    return asdict(event)


def event_to_json(event: WmsEvent) -> str:
    """Canonical JSON of an event (sorted keys, no spaces) — the basis of its hash."""
    return _CANONICAL.encode(_plain(event))


def content_hash(payload: str) -> str:
    """SHA-256 of a canonical payload."""
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def event_from_json(kind: str, payload: str) -> WmsEvent:
    """Rebuild an event stored by :func:`event_to_json`."""
    data = json.loads(payload)
    confirmed_at = datetime.fromisoformat(data["confirmed_at"])
    if kind == EventKind.SHIPMENT:
        return WmsShipment(
            data["shipment_id"],
            data["warehouse"],
            data["ne_order_id"],
            data["tracking_number"],
            confirmed_at,
            tuple(ShipmentLine(x["product_code"], x["quantity"]) for x in data["lines"]),
        )
    return WmsReceipt(
        data["receipt_id"],
        data["warehouse"],
        confirmed_at,
        tuple(ReceiptLine(x["product_code"], x["quantity"]) for x in data["lines"]),
    )


def dumps(data: Any) -> str:
    """Compact JSON for payload columns."""
    return _CANONICAL.encode(data)


def json_loads(payload: str) -> Any:
    """Parse a payload column."""
    return json.loads(payload)
