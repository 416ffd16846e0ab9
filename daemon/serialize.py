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


def event_to_json(event: WmsEvent) -> str:
    """Canonical JSON of an event (sorted keys, no spaces) — the basis of its hash."""
    return json.dumps(asdict(event), default=_default, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def content_hash(payload: str) -> str:
    """SHA-256 of a canonical payload."""
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def event_from_json(kind: str, payload: str) -> WmsEvent:
    """Rebuild an event stored by :func:`event_to_json`."""
    data = json.loads(payload)
    confirmed_at = datetime.fromisoformat(data["confirmed_at"])
    if kind == EventKind.SHIPMENT:
        return WmsShipment(
            shipment_id=data["shipment_id"],
            warehouse=data["warehouse"],
            ne_order_id=data["ne_order_id"],
            tracking_number=data["tracking_number"],
            confirmed_at=confirmed_at,
            lines=tuple(ShipmentLine(**line) for line in data["lines"]),
        )
    return WmsReceipt(
        receipt_id=data["receipt_id"],
        warehouse=data["warehouse"],
        confirmed_at=confirmed_at,
        lines=tuple(ReceiptLine(**line) for line in data["lines"]),
    )


def dumps(data: Any) -> str:
    """Compact JSON for payload columns."""
    return json.dumps(data, default=_default, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def json_loads(payload: str) -> Any:
    """Parse a payload column."""
    return json.loads(payload)
