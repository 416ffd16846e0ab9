"""Validation and reading of inbound files: shipments and receipts as events, the product master.

An event file is read in three streaming passes so memory stays bounded by the open
shipments, not by the file:

1. every row's values are checked, and the number of rows of each id is counted;
2. rows are grouped by id, each group is complete once its counted rows were seen; groups
   are checked for differing header fields (warehouse, ...) and summed quantities;
3. only if both passes found nothing, the groups are yielded as events, in the same way —
   from the groups pass 2 kept, for a file of at most :data:`KEEP_ROWS` rows (its rows are
   held anyway for a moment; reading and checking them a third time cost about a third of
   the reading), else by reading the file again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, tzinfo
from pathlib import Path

from hooks.connectors import ConnectorContext
from hooks.records import ProductLink, ReceiptLine, ShipmentLine, WmsEvent, WmsReceipt, WmsShipment
from plugins.wms_csv.folders import ReadyFile, check_unchanged, open_claimed
from plugins.wms_csv.formats import (
    FORMULA_STARTS,
    MAX_QUANTITY,
    PRODUCTS,
    SHIPMENTS,
    Column,
    FileFormat,
    is_order_id,
    parse_count,
    parse_quantity,
    parse_timestamp,
)
from plugins.wms_csv.reader import ErrorLog, Opener, Row, detect_encoding, read_rows

_CACHE_SIZE = 1024
#: Files with at most this many rows are read twice, not three times (pass 2 keeps its
#: groups for pass 3): tens of MB at most; larger files keep memory bounded by open records.
KEEP_ROWS = 50_000


def read_events(
    path: Path,
    source: str,
    fmt: FileFormat,
    ctx: ConnectorContext,
    zone: tzinfo,
    expected: ReadyFile | None = None,
) -> Iterator[WmsEvent]:
    """Yield the events of a shipments or receipts file, one per id with all its lines.

    Raises :class:`BatchRejected` with every error (up to the cap) before the first event.
    With ``expected`` (the file as scanned), every pass and the end check that the file did
    not change, else :class:`~hooks.errors.StepNotReady` is raised (nothing of it may be
    stored).
    """
    open_file = functools.partial(open_claimed, path, source, expected)
    encoding = detect_encoding(open_file, source)
    errors = ErrorLog(source)
    counts = _check_rows(open_file, encoding, fmt, ctx, zone, errors)
    kept: list[list[Row]] | None = [] if sum(counts.values()) <= KEEP_ROWS else None
    if not errors.full:
        _check_groups(
            _keeping(_groups(_rows(open_file, encoding, fmt, source), fmt, counts), kept),
            fmt,
            zone,
            errors,
        )
    errors.raise_if_any()
    build: Callable[[list[Row], tzinfo], WmsEvent] = _shipment if fmt is SHIPMENTS else _receipt
    groups = (
        kept if kept is not None else _groups(_rows(open_file, encoding, fmt, source), fmt, counts)
    )
    for group in groups:
        yield build(group, zone)
    if expected is not None:
        check_unchanged(path, expected, source)


def read_products(path: Path, source: str, expected: ReadyFile | None = None) -> list[ProductLink]:
    """Read a complete product master; raises :class:`BatchRejected` with every error
    (and :class:`~hooks.errors.StepNotReady` if it changed since ``expected`` was scanned)."""
    open_file = functools.partial(open_claimed, path, source, expected)
    encoding = detect_encoding(open_file, source)
    errors = ErrorLog(source)
    products: list[ProductLink] = []
    first_line: dict[str, int] = {}
    for item in read_rows(open_file, encoding, PRODUCTS, source):
        if not isinstance(item, Row):
            errors.append(item)
            continue
        code = item.values["product_code"]
        if not code:
            errors.add("missing value", item.line, "product_code")
        elif code in first_line:
            reason = f"duplicate product {code!r}, first on line {first_line[code]}"
            errors.add(reason, item.line, "product_code")
        else:
            first_line[code] = item.line
            products.append(ProductLink(code, item.values["link_code"] or None))
        if errors.full:
            break
    errors.raise_if_any()
    if expected is not None:
        check_unchanged(path, expected, source)
    return products


def _rows(open_file: Opener, encoding: str, fmt: FileFormat, source: str) -> Iterator[Row]:
    """The well-formed rows only (pass 1 reported the others)."""
    return (item for item in read_rows(open_file, encoding, fmt, source) if isinstance(item, Row))


def _check_rows(
    open_file: Opener,
    encoding: str,
    fmt: FileFormat,
    ctx: ConnectorContext,
    zone: tzinfo,
    errors: ErrorLog,
) -> dict[str, int]:
    """Pass 1: check every value of every row; return the number of rows of each id."""
    checker = _ValueChecker(ctx, zone)
    counts: dict[str, int] = {}
    for item in read_rows(open_file, encoding, fmt, errors.source):
        if not isinstance(item, Row):
            errors.append(item)
        else:
            for column in fmt.columns:
                reason = checker.error(column, item.values[column.name])
                if reason:
                    errors.add(reason, item.line, column.name)
            record_id = item.values[fmt.id_column]
            if record_id:
                counts[record_id] = counts.get(record_id, 0) + 1
        if errors.full:
            break
    return counts


class _ValueChecker:
    """Checks single values; remembers recent answers, since rows of one id repeat values."""

    def __init__(self, ctx: ConnectorContext, zone: tzinfo) -> None:
        self._warehouses = ctx.warehouses
        self._zone = zone
        self._known_product = functools.lru_cache(maxsize=_CACHE_SIZE)(ctx.is_known_product)
        self._is_timestamp = functools.lru_cache(maxsize=_CACHE_SIZE)(self._parses_as_timestamp)

    def error(self, column: Column, value: str) -> str | None:
        """Why ``value`` is not acceptable in ``column``, or None."""
        if not value:
            return "missing value" if column.required else None
        if "\x00" in value:
            return "contains a NUL byte (binary data in a text file?)"
        if column.max_length is not None and len(value) > column.max_length:
            return f"longer than {column.max_length} characters ({len(value)})"
        match column.check:
            case "warehouse" if value not in self._warehouses:
                return f"unknown warehouse {value!r}"
            case "product" if not self._known_product(value):
                return f"unknown product {value!r}"
            case "quantity" if parse_quantity(value) is None:
                if value.isascii() and value.isdigit() and int(value) > MAX_QUANTITY:
                    return f"quantity {value} is larger than {MAX_QUANTITY:,}"
                return f"not a positive integer: {value!r}"
            case "count" if parse_count(value) is None:
                return f"not a whole number from 0 to {MAX_QUANTITY:,}: {value!r}"
            case "order_id" if not is_order_id(value):
                return (
                    "not a Next Engine order number (a positive whole number without "
                    f"leading zeros, as Next Engine shows it): {value!r}"
                )
            case "tracking" if value.startswith(FORMULA_STARTS):
                return (
                    f"not a tracking number: {value!r} starts with {value[0]!r}, which "
                    "spreadsheets run as a formula"
                )
            case "timestamp" if not self._is_timestamp(value):
                return (
                    f"not a timestamp: {value!r} (expected ISO 8601, YYYY-MM-DD HH:MM:SS "
                    "or YYYY/MM/DD HH:MM[:SS])"
                )
        return None

    def _parses_as_timestamp(self, value: str) -> bool:
        """True if :func:`parse_timestamp` accepts the value."""
        try:
            parse_timestamp(value, self._zone)
        except ValueError:
            return False
        return True


def _groups(rows: Iterable[Row], fmt: FileFormat, counts: dict[str, int]) -> Iterator[list[Row]]:
    """Yield the rows of each id as soon as all of its counted rows were seen.

    Only ids with rows still to come are held, so memory follows the open records.
    """
    open_groups: dict[str, list[Row]] = {}
    for row in rows:
        record_id = row.values[fmt.id_column]
        if not record_id:
            continue
        group = open_groups.get(record_id)
        if group is None:
            group = open_groups[record_id] = []
        group.append(row)
        if len(group) == counts[record_id]:
            del open_groups[record_id]
            yield group


def _keeping(groups: Iterable[list[Row]], kept: list[list[Row]] | None) -> Iterator[list[Row]]:
    """The groups, each also appended to ``kept`` (unless it is None)."""
    for group in groups:
        if kept is not None:
            kept.append(group)
        yield group


def _check_groups(
    groups: Iterable[list[Row]], fmt: FileFormat, zone: tzinfo, errors: ErrorLog
) -> None:
    """Pass 2: check each complete group, until the error cap is reached."""
    for group in groups:
        _check_group(group, fmt, zone, errors)
        if errors.full:
            return


def _check_group(group: list[Row], fmt: FileFormat, zone: tzinfo, errors: ErrorLog) -> None:
    """The same header fields on every row of an id; quantities of one product (on several
    lines, as an echoed order file lists them) add up to at most :data:`MAX_QUANTITY`."""
    first = group[0]
    record_id = first.values[fmt.id_column]
    totals: dict[str, int] = {}
    for row in group:
        for name in fmt.group_columns:
            value, expected = row.values[name], first.values[name]
            if value != expected and _comparable(name, value, zone) != _comparable(
                name, expected, zone
            ):
                reason = (
                    f"{fmt.noun} {record_id!r}: {name} {value!r} differs from {expected!r} "
                    f"on line {first.line}"
                )
                errors.add(reason, row.line, name)
        product = row.values["product_code"]
        quantity = parse_quantity(row.values["quantity"]) or 0
        totals[product] = total = totals.get(product, 0) + quantity
        if total > MAX_QUANTITY >= total - quantity:
            reason = (
                f"quantities of product {product!r} in {fmt.noun} {record_id!r} add up "
                f"to more than {MAX_QUANTITY:,}"
            )
            errors.add(reason, row.line, "quantity")


def _comparable(column: str, value: str, zone: tzinfo) -> str:
    """A header value as compared across rows: timestamps by the instant they denote."""
    if column != "confirmed_at":
        return value
    try:
        return parse_timestamp(value, zone).astimezone(UTC).isoformat()
    except ValueError:
        return value


def _shipment(group: list[Row], zone: tzinfo) -> WmsShipment:
    """Build a shipment event from the validated rows of one shipment id."""
    head = group[0].values
    return WmsShipment(
        shipment_id=head["shipment_id"],
        warehouse=head["warehouse"],
        ne_order_id=head["ne_order_id"] or None,
        tracking_number=head["tracking_number"] or None,
        confirmed_at=parse_timestamp(head["confirmed_at"], zone),
        lines=tuple(ShipmentLine(product, quantity) for product, quantity in _summed(group)),
    )


def _receipt(group: list[Row], zone: tzinfo) -> WmsReceipt:
    """Build a receipt event from the validated rows of one receipt id."""
    head = group[0].values
    return WmsReceipt(
        receipt_id=head["receipt_id"],
        warehouse=head["warehouse"],
        confirmed_at=parse_timestamp(head["confirmed_at"], zone),
        lines=tuple(ReceiptLine(product, quantity) for product, quantity in _summed(group)),
    )


def _summed(group: list[Row]) -> list[tuple[str, int]]:
    """(product, quantity) of a group, one per product in order of first appearance, with the
    quantities of its lines added up."""
    totals: dict[str, int] = {}
    for row in group:
        product = row.values["product_code"]
        totals[product] = totals.get(product, 0) + _quantity(row)
    return list(totals.items())


def _quantity(row: Row) -> int:
    """The quantity of a row that pass 1 validated."""
    quantity = parse_quantity(row.values["quantity"])
    if quantity is None:
        raise ValueError(f"line {row.line}: quantity changed after validation")
    return quantity
