"""Order files written into the outbox for the WMS to import (出荷指示).

Cancellations of orders instructed earlier (``order_watch``) go to their own file per
:class:`CancellationBatch`, ``cancellations-<UTC>-<key>.csv``, written before the order file
of the same run; the WMS processes cancellations first.

One file per :class:`InstructionBatch`, named ``orders-<created_at UTC>-<key>.csv`` so a
re-push of the same batch after a crash rewrites the same file; written atomically, so the
WMS never sees a partial file.

Cells come from Next Engine, where shoppers type names and addresses: a cell starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return would be run as a formula by a
spreadsheet that opens the file (CSV injection), so such a cell is written with a leading
``'`` (OWASP's advice); every other cell is written exactly as it came.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from datetime import UTC
from pathlib import Path

from hooks.connectors import CancellationBatch, InstructionBatch
from hooks.errors import OrdersRefused
from hooks.records import OrderInstruction
from plugins.wms_csv.folders import write_atomically

ORDER_COLUMNS = (
    "ne_order_id",
    "shop_order_id",
    "warehouse",
    "order_date",
    "delivery_method",
    "consignee_name",
    "consignee_zip",
    "consignee_address",
    "consignee_tel",
    "line_no",
    "product_code",
    "ne_goods_code",
    "quantity",
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_SLUG_LENGTH = 40


def order_file_name(batch: InstructionBatch) -> str:
    """``orders-<YYYYMMDDTHHMMSSZ>-<key slug>-<key hash>.csv``, the same for every retry.

    The slug keeps the key readable; the short hash keeps different keys apart even when
    their slugs are equal or cut.
    """
    if batch.created_at.tzinfo is None:
        raise ValueError("InstructionBatch.created_at must be timezone-aware")
    stamp = batch.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = _UNSAFE.sub("_", batch.key)[:_SLUG_LENGTH].strip("_")
    digest = hashlib.sha256(batch.key.encode("utf-8")).hexdigest()[:8]
    return f"orders-{stamp}-{slug}-{digest}.csv" if slug else f"orders-{stamp}-{digest}.csv"


def write_orders(folder: Path, batch: InstructionBatch, encoding: str) -> Path | None:
    """Write the batch's orders, one row per order line; return the path (None if none written).

    An order with a character the output encoding cannot hold is left out of the file
    (replacing the character could send a parcel to a wrong address); once the file with
    every other order is written, :class:`OrdersRefused` names each order left out and why.
    The same batch always gives the same file, so a re-push after a crash rewrites it as it was.
    """
    parts: list[bytes] = []
    refused: dict[str, str] = {}
    for order in batch.orders:
        try:
            parts.append(_csv_text(_order_rows(order)).encode(encoding))
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start : exc.end]
            refused[order.ne_order_id] = (
                f"{bad!r} cannot be written in {encoding} (the WMS order file's encoding, "
                "wms.csv.encoding_out); replace it in the order in Next Engine, then "
                f"`nebridge orders retry {order.ne_order_id}`"
            )
    target = None
    if parts:
        target = folder / order_file_name(batch)
        write_atomically(target, _csv_text([ORDER_COLUMNS]).encode(encoding) + b"".join(parts))
    if refused:
        raise OrdersRefused(refused)
    return target


def _order_rows(order: OrderInstruction) -> list[tuple[str, ...]]:
    """The CSV rows of one order: the order fields repeated on each of its lines."""
    head = (
        order.ne_order_id,
        order.shop_order_id,
        order.warehouse,
        order.order_date,
        order.delivery_method,
        order.consignee_name,
        order.consignee_zip,
        order.consignee_address,
        order.consignee_tel,
    )
    return [
        tuple(
            neutralise(cell)
            for cell in (
                *head,
                str(line.line_no),
                line.product_code,
                line.ne_goods_code,
                str(line.quantity),
            )
        )
        for line in order.lines
    ]


def neutralise(cell: str) -> str:
    """``cell`` with a leading ``'`` if a spreadsheet would read it as a formula."""
    return "'" + cell if cell.startswith(FORMULA_PREFIXES) else cell


def _csv_text(rows: list[tuple[str, ...]]) -> str:
    """Rows as CSV text with CRLF line ends (RFC 4180)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


CANCELLATION_COLUMNS = ("ne_order_id", "warehouse", "reason", "detected_at")


def cancellation_file_name(batch: CancellationBatch) -> str:
    """``cancellations-<YYYYMMDDTHHMMSSZ>-<key slug>-<key hash>.csv``, the same on every retry."""
    if batch.created_at.tzinfo is None:
        raise ValueError("CancellationBatch.created_at must be timezone-aware")
    stamp = batch.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = _UNSAFE.sub("_", batch.key)[:_SLUG_LENGTH].strip("_")
    digest = hashlib.sha256(batch.key.encode("utf-8")).hexdigest()[:8]
    return f"cancellations-{stamp}-{slug}-{digest}.csv"


def write_cancellations(folder: Path, batch: CancellationBatch, encoding: str) -> Path | None:
    """Write the batch as one cancellations file (atomically; the same file on every retry).

    ``detected_at`` is ISO 8601 UTC. Order ids, warehouse codes and reasons are ASCII, so no
    cancellation is ever refused for its encoding.
    """
    if not batch.cancellations:
        return None
    rows = [
        CANCELLATION_COLUMNS,
        *(
            (
                c.ne_order_id,
                c.warehouse,
                c.reason,
                c.detected_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            for c in batch.cancellations
        ),
    ]
    target = folder / cancellation_file_name(batch)
    write_atomically(
        target, _csv_text([tuple(neutralise(x) for x in r) for r in rows]).encode(encoding)
    )
    return target
