"""XML documents for NE order writes: ``update``, ``bulkupdate`` and ``bulkupdatereceipted``.

Values are XML-escaped and the control characters NE refuses (0x00-0x08, 0x0B, 0x0C,
0x0E-0x1F) are dropped; element names are checked so a field name can never inject markup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from daemon.nextengine.dates import format_ne_datetime

XML_HEADER = '<?xml version="1.0" encoding="utf-8"?>'
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

FieldValue = str | int | Decimal | datetime | None
"""What a field may be set to; ``None`` writes an empty element (clears the field)."""


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """One order of a ``bulkupdate``: the lock date read from NE and the base fields to set."""

    order_id: str | int
    last_modified: str | datetime
    base_fields: Mapping[str, FieldValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OrderRef:
    """An order and the ``receive_order_last_modified_date`` last read for it."""

    order_id: str | int
    last_modified: str | datetime


def field_text(value: FieldValue) -> str:
    """NE's text for a value: dates as JST ``YYYY-MM-DD HH:MM:SS``, ``None`` as empty.

    ``bool`` is refused (is ``True`` "1" or "true"? say it explicitly with an int).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        raise TypeError("pass 0/1 instead of a bool for NE fields")
    if isinstance(value, datetime):
        return format_ne_datetime(value)
    if isinstance(value, str | int | Decimal):
        return str(value)
    raise TypeError(f"unsupported NE field value type {type(value).__name__}")


def last_modified_text(value: str | datetime) -> str:
    """``receive_order_last_modified_date`` as sent: strings exactly as NE gave them."""
    return value if isinstance(value, str) else format_ne_datetime(value)


def clean_text(text: str) -> str:
    """Drop the control characters NE refuses and escape ``& < > " '``."""
    text = _CONTROL_CHARS.sub("", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


def _name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a valid NE field name: {name!r}")
    return name


def _elements(fields: Mapping[str, FieldValue]) -> str:
    return "".join(
        f"<{_name(key)}>{clean_text(field_text(value))}</{key}>" for key, value in fields.items()
    )


def _order_attrs(order_id: str | int, last_modified: str | datetime) -> str:
    return (
        f'receive_order_id="{clean_text(str(order_id))}" '
        f'receive_order_last_modified_date="{clean_text(last_modified_text(last_modified))}"'
    )


def build_update_xml(base_fields: Mapping[str, FieldValue]) -> str:
    """The ``data`` of ``/api_v1_receiveorder_base/update``: one ``<receiveorder_base>``."""
    if not base_fields:
        raise ValueError("an order update needs at least one field")
    return (
        f"{XML_HEADER}<root><receiveorder_base>{_elements(base_fields)}</receiveorder_base></root>"
    )


def build_bulk_update_xml(items: Iterable[OrderUpdate]) -> str:
    """The ``data`` of ``bulkupdate``: one ``<receiveorder id=.. last_modified=..>`` per order."""
    parts: list[str] = []
    for item in items:
        if not item.base_fields:
            raise ValueError(f"order {item.order_id}: an order update needs at least one field")
        parts.append(
            f"<receiveorder {_order_attrs(item.order_id, item.last_modified)}>"
            f"<receiveorder_base>{_elements(item.base_fields)}</receiveorder_base>"
            "</receiveorder>"
        )
    return f"{XML_HEADER}<root>{''.join(parts)}</root>"


def build_bulk_receipted_xml(items: Iterable[OrderRef], label_print_flag: int | None) -> str:
    """The ``data`` of ``bulkupdatereceipted`` (orders 20 -> 40)."""
    flag = (
        ""
        if label_print_flag is None
        else f"<receive_order_label_print_flag>{int(label_print_flag)}"
        "</receive_order_label_print_flag>"
    )
    parts = [
        f"<receiveorder {_order_attrs(item.order_id, item.last_modified)}>{flag}</receiveorder>"
        for item in items
    ]
    return f"{XML_HEADER}<root>{''.join(parts)}</root>"
