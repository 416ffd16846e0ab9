"""The CSV file formats the WMS drops into the inbox, and how their values are read.

Outside tools rely on these formats, so they are declared here as data: the canonical column
names, the accepted (Japanese) header aliases and the check each value gets.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

from hooks.records import EventKind

MAX_TRACKING_LENGTH = 50
MAX_QUANTITY = 9_999_999
#: Longest shipment/receipt id, product code and link code (the database columns hold 128).
MAX_ID_LENGTH = 128
#: Longest warehouse code (as ``daemon.yaml`` allows).
MAX_WAREHOUSE_LENGTH = 32
#: Longest Next Engine order number, in digits.
MAX_ORDER_ID_DIGITS = 18
#: A tracking number starting with one of these would run as a formula in a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@")


Check = Literal[
    "text", "warehouse", "timestamp", "product", "quantity", "order_id", "tracking", "count"
]
"""What a non-empty value must be, beyond being present (a string: checked per value)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a format: canonical name, header aliases and the check of its values."""

    name: str
    aliases: tuple[str, ...] = ()
    check: Check = "text"
    required: bool = True
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class FileFormat:
    """One kind of inbox file, recognised by its name prefix.

    ``id_column`` groups rows into one record (or, for products, must be unique);
    ``group_columns`` must hold the same value on every row of one id.
    """

    prefix: str
    noun: str
    kind: EventKind | None
    id_column: str
    group_columns: tuple[str, ...]
    columns: tuple[Column, ...]

    def header_lookup(self) -> dict[str, str]:
        """Map every normalised header spelling to its canonical column name."""
        return {
            normalise_header(spelling): column.name
            for column in self.columns
            for spelling in (column.name, *column.aliases)
        }


_WAREHOUSE = Column(
    "warehouse",
    ("倉庫コード", "拠点コード", "倉庫", "拠点"),
    check="warehouse",
    max_length=MAX_WAREHOUSE_LENGTH,
)
_PRODUCT = Column("product_code", ("商品コード", "品番"), check="product", max_length=MAX_ID_LENGTH)

SHIPMENTS = FileFormat(
    prefix="shipments",
    noun="shipment",
    kind=EventKind.SHIPMENT,
    id_column="shipment_id",
    group_columns=("warehouse", "ne_order_id", "tracking_number", "confirmed_at"),
    columns=(
        Column("shipment_id", ("出荷ID", "出荷番号"), max_length=MAX_ID_LENGTH),
        _WAREHOUSE,
        Column(
            "ne_order_id",
            ("受注伝票番号", "伝票番号", "受注番号"),
            check="order_id",
            required=False,
        ),
        Column(
            "tracking_number",
            (
                "追跡番号",
                "送り状番号",
                "問い合わせ番号",
                "問合せ番号",
                "お問い合わせ番号",
                "発送伝票番号",
            ),
            check="tracking",
            required=False,
            max_length=MAX_TRACKING_LENGTH,
        ),
        Column("confirmed_at", ("出荷確定日時", "出荷日時", "確定日時"), check="timestamp"),
        _PRODUCT,
        Column("quantity", ("数量", "出荷数", "出荷数量"), check="quantity"),
    ),
)

RECEIPTS = FileFormat(
    prefix="receipts",
    noun="receipt",
    kind=EventKind.RECEIPT,
    id_column="receipt_id",
    group_columns=("warehouse", "confirmed_at"),
    columns=(
        Column("receipt_id", ("入荷ID", "入荷番号"), max_length=MAX_ID_LENGTH),
        _WAREHOUSE,
        Column("confirmed_at", ("入荷確定日時", "入荷日時", "確定日時"), check="timestamp"),
        _PRODUCT,
        Column("quantity", ("数量", "入荷数", "入荷数量"), check="quantity"),
    ),
)

PRODUCTS = FileFormat(
    prefix="products",
    noun="product",
    kind=None,
    id_column="product_code",
    group_columns=(),
    columns=(
        Column("product_code", ("商品コード", "品番"), max_length=MAX_ID_LENGTH),
        Column(
            "link_code", ("紐付けコード", "ne商品コード"), required=False, max_length=MAX_ID_LENGTH
        ),
    ),
)

STOCK = FileFormat(
    prefix="stock",
    noun="stock count",
    kind=None,
    id_column="product_code",
    group_columns=(),
    columns=(
        _WAREHOUSE,
        _PRODUCT,
        Column("quantity", ("在庫数", "数量", "在庫数量"), check="count"),
        Column("counted_at", ("棚卸日時", "集計日時", "確定日時"), check="timestamp"),
    ),
)
"""Absolute on-hand stock per warehouse × product at ``counted_at`` (one snapshot per
warehouse per file); read by :mod:`plugins.wms_csv.stock`."""

FORMATS = (SHIPMENTS, RECEIPTS, PRODUCTS, STOCK)


def format_for_name(name: str) -> FileFormat | None:
    """The format of an inbox file name (``<prefix>*.csv``, any case), or None to ignore it.

    Hidden files (``.x``) and temporary ``.tmp``/``.part`` files never match, because they do
    not both start with a prefix and end with ``.csv``.
    """
    lowered = name.lower()
    if not lowered.endswith(".csv"):
        return None
    return next((fmt for fmt in FORMATS if lowered.startswith(fmt.prefix)), None)


def normalise_header(cell: str) -> str:
    """Header cells match ignoring case, surrounding spaces and full-width/half-width forms."""
    return unicodedata.normalize("NFKC", cell).strip().casefold()


_SLASHED = re.compile(r"\d{4}/\d{1,2}/\d{1,2} \d{1,2}:\d{2}(:\d{2})?", re.ASCII)
_ISO_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", re.ASCII)


def parse_timestamp(value: str, zone: tzinfo) -> datetime:
    """Read a timestamp as an aware datetime; values without an offset are taken in ``zone``.

    Accepted: ISO 8601 with date and time (``2026-11-27T10:05:00+09:00``, ``...Z``, or
    without offset such as ``2026-11-27 10:05:00``) and ``YYYY/MM/DD HH:MM[:SS]``.
    Raises ValueError otherwise.
    """
    if _SLASHED.fullmatch(value):
        pattern = "%Y/%m/%d %H:%M:%S" if value.count(":") == 2 else "%Y/%m/%d %H:%M"
        parsed = datetime.strptime(value, pattern)
    elif _ISO_PREFIX.match(value):
        parsed = datetime.fromisoformat(value)
    else:
        raise ValueError(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


_ORDER_ID = re.compile(rf"[1-9][0-9]{{0,{MAX_ORDER_ID_DIGITS - 1}}}", re.ASCII)


def is_order_id(value: str) -> bool:
    """True for a Next Engine order number in canonical form: a positive whole number in
    ASCII digits without leading zeros (``16``, not ``0016``), at most 18 digits."""
    return _ORDER_ID.fullmatch(value) is not None


def parse_count(value: str) -> int | None:
    """An on-hand quantity: 0 up to :data:`MAX_QUANTITY` in ASCII digits, or None."""
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number <= MAX_QUANTITY else None


def parse_quantity(value: str) -> int | None:
    """A positive integer up to :data:`MAX_QUANTITY` written with ASCII digits, or None."""
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if 0 < number <= MAX_QUANTITY else None
