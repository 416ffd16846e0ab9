"""The ``csv`` connector passes the connector conformance suite, on real folders."""

from __future__ import annotations

import csv
import itertools
import logging
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from daemon.testing.conformance import ConnectorConformance, ConnectorHarness, Lines
from daemon.testing.installation import (
    AT,
    PRODUCTS_HEADER,
    RECEIPT_HEADER,
    SHIP_HEADER,
    STOCK_HEADER,
    drop_file,
)
from hooks.connectors import ConnectorContext, WmsConnector
from hooks.records import WarehouseInfo
from plugins.wms_csv import CsvConnector, CsvConnectorConfig


class CsvHarness(ConnectorHarness):
    """The WMS is whoever writes the inbox and reads the outbox: this harness."""

    products = ("P-1", "P-2")

    def __init__(self, root: Path, http: requests.Session) -> None:
        self.config = CsvConnectorConfig(
            inbox=root / "inbox", outbox=root / "outbox", stable_seconds=0.0
        )
        self.state_dir = root / "state"
        self.http = http
        self.numbers = itertools.count(1)

    def connector(self) -> WmsConnector:
        return CsvConnector(self.config)

    def context(self, cursors: Mapping[str, str], imported: Collection[str]) -> ConnectorContext:
        return ConnectorContext(
            warehouses={
                "ITAKU": WarehouseInfo("ITAKU", "委託販売在庫", True, True),
                "SHINJUKU": WarehouseInfo("SHINJUKU", "新宿拠点", False, False),
            },
            is_known_product=lambda code: True,
            http=self.http,
            clock=lambda: datetime.now(UTC),
            log=logging.getLogger("conformance.csv"),
            cursors=cursors,
            state_dir=self.state_dir,
            is_imported_order=imported.__contains__,
        )

    def _ship(self, ne_order_id: str, lines: Lines) -> None:
        ident = f"S-{next(self.numbers)}"
        drop_file(
            self.config.inbox,
            f"shipments-{ident}.csv",
            SHIP_HEADER,
            [f"{ident},{self.warehouse},{ne_order_id},,{AT},{code},{qty}" for code, qty in lines],
        )

    def confirm_shipment(self, lines: Lines) -> None:
        self._ship("", lines)

    def ship_instructed(self, ne_order_id: str) -> None:
        lines = [
            (row["product_code"], int(row["quantity"]))
            for row in self._orders()
            if row["ne_order_id"] == ne_order_id
        ]
        self._ship(ne_order_id, lines)

    def confirm_receipt(self, lines: Lines) -> None:
        ident = f"R-{next(self.numbers)}"
        drop_file(
            self.config.inbox,
            f"receipts-{ident}.csv",
            RECEIPT_HEADER,
            [f"{ident},{self.warehouse},{AT},{code},{qty}" for code, qty in lines],
        )

    def confirm_invalid_shipment(self) -> None:
        drop_file(
            self.config.inbox,
            "shipments-bad.csv",
            SHIP_HEADER,
            [f"S-OK,{self.warehouse},,,{AT},P-1,1", f"S-BAD,{self.warehouse},,,{AT},P-1,0"],
        )

    def publish_products(self) -> None:
        drop_file(
            self.config.inbox,
            "products.csv",
            PRODUCTS_HEADER,
            [f"{code},NE-{code}" for code in self.products],
        )

    def count_stock(self) -> Mapping[str, int]:
        counts = {"P-1": 7, "P-2": 0}
        drop_file(
            self.config.inbox,
            "stock-1.csv",
            STOCK_HEADER,
            [f"{self.warehouse},{code},{qty},{AT}" for code, qty in counts.items()],
        )
        return counts

    def _rows(self, pattern: str) -> Iterator[tuple[Path, dict[str, str]]]:
        for path in sorted(self.config.outbox.glob(pattern)):
            with path.open(encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    yield path, row

    def _orders(self) -> list[dict[str, str]]:
        return [row for _path, row in self._rows("orders-*.csv")]

    def instructions(self) -> Counter[str]:
        return Counter(
            order
            for _path, order in {
                (path, row["ne_order_id"]) for path, row in self._rows("orders-*.csv")
            }
        )

    def cancelled(self) -> Counter[str]:
        return Counter(row["ne_order_id"] for _path, row in self._rows("cancellations-*.csv"))


class TestCsvConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[CsvHarness]:
        with requests.Session() as http:
            yield CsvHarness(tmp_path, http)
