"""Stock count files (``stock-*.csv``): one absolute snapshot per warehouse, taken whole.

Every row is checked like the rows of the other inbox files (warehouse known, product in the
master, quantity a whole number from 0, a timestamp); a file also may not list a product
twice for one warehouse nor give one warehouse two ``counted_at`` moments (a file is one
count per warehouse). Any error rejects the whole file with every reason by line.
"""

from __future__ import annotations

import functools
from datetime import datetime, tzinfo
from pathlib import Path

from hooks.connectors import ConnectorContext, StockSnapshot
from hooks.errors import BatchRejected, RecordError
from plugins.wms_csv.folders import (
    ClaimedFile,
    ReadyFile,
    check_unchanged,
    open_claimed,
)
from plugins.wms_csv.formats import STOCK, parse_count, parse_timestamp
from plugins.wms_csv.inbound import _ValueChecker
from plugins.wms_csv.reader import ErrorLog, Row, detect_encoding, read_rows


def read_stock(
    path: Path,
    source: str,
    ctx: ConnectorContext,
    zone: tzinfo,
    expected: ReadyFile | None = None,
) -> list[StockSnapshot]:
    """The snapshots of one stock file (one per warehouse in it, in order of appearance).

    Raises :class:`BatchRejected` with every error (up to the cap); with ``expected``, raises
    :class:`~hooks.errors.StepNotReady` if the file changed while it was read.
    """
    open_file = functools.partial(open_claimed, path, source, expected)
    encoding = detect_encoding(open_file, source)
    errors = ErrorLog(source)
    checker = _ValueChecker(ctx, zone)
    counts: dict[str, dict[str, int]] = {}
    moments: dict[str, tuple[datetime, str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for item in read_rows(open_file, encoding, STOCK, source):
        if errors.full:
            break
        if not isinstance(item, Row):
            errors.append(item)
            continue
        bad = False
        for column in STOCK.columns:
            reason = checker.error(column, item.values[column.name])
            if reason:
                errors.add(reason, item.line, column.name)
                bad = True
        if bad:
            continue
        warehouse, product = item.values["warehouse"], item.values["product_code"]
        counted_at = parse_timestamp(item.values["counted_at"], zone)
        seen = moments.setdefault(warehouse, (counted_at, item.values["counted_at"], item.line))
        if seen[0] != counted_at:
            errors.add(
                f"warehouse {warehouse!r} counted at {item.values['counted_at']!r}, but "
                f"at {seen[1]!r} on line {seen[2]}; a file holds one count per "
                "warehouse (split it into one file per count)",
                item.line,
                "counted_at",
            )
            continue
        key = (warehouse, product)
        if key in first_line:
            errors.add(
                f"product {product!r} of warehouse {warehouse!r} listed twice, first on "
                f"line {first_line[key]}",
                item.line,
                "product_code",
            )
            continue
        first_line[key] = item.line
        quantity = parse_count(item.values["quantity"])
        assert quantity is not None  # the checker accepted it
        counts.setdefault(warehouse, {})[product] = quantity
    if not counts and not errors.errors:
        errors.add(
            "no stock lines: a stock file lists at least one product of one warehouse", None, None
        )
    errors.raise_if_any()
    if expected is not None:
        check_unchanged(path, expected, source)
    return [
        StockSnapshot(warehouse, moments[warehouse][0], quantities)
        for warehouse, quantities in counts.items()
    ]


class CsvStockBatch(ClaimedFile):
    """One claimed ``stock-*.csv`` file (a :class:`~hooks.connectors.StockBatch`)."""

    label = "stock file "

    def snapshots(self) -> list[StockSnapshot]:
        """Validate the whole file and return its snapshots (a link is rejected unread)."""
        if self._file.refusal is not None:
            raise BatchRejected(self.source, [RecordError(self.source, self._file.refusal)])
        return read_stock(self._path, self.source, self._ctx, self._zone, self._file)
