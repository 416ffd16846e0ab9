"""The ``logikura`` connector passes the connector conformance suite against its sandbox."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import pytest
import requests

from daemon.testing.conformance import ConnectorConformance, ConnectorHarness, Lines
from hooks.connectors import ConnectorContext, WmsConnector
from plugins.wms_logikura import LogikuraConnector
from plugins.wms_logikura.sandbox import SandboxServer, WarehouseStaff
from tests.wms_logikura.conftest import FakeTime, connect, logikura_config, make_ctx

STOCK = 50
DELIVERY = {"delivery_methods": {"ヤマト運輸(宅急便)": "yamato_b2"}}


class LogikuraHarness(ConnectorHarness):
    """Logikura is its sandbox; its warehouse staff ship, receive and are asked for counts."""

    products = ("CF-1", "CF-2")

    def __init__(self, lk: SandboxServer, state_dir: Path, http: requests.Session) -> None:
        self.lk, self.state_dir, self.http = lk, state_dir, http
        self.clock = FakeTime(lk)
        for code in self.products:
            lk.state.add_variant(code, link_code=code, stock={self.warehouse: STOCK})
        connect(lk, state_dir, http, self.clock, **DELIVERY)  # authorised once, tokens kept
        self.staff = WarehouseStaff(lk.base_url)

    def connector(self) -> WmsConnector:
        return LogikuraConnector(
            logikura_config(self.lk, **DELIVERY), clock=self.clock, sleep=self.clock.sleep
        )

    def context(self, cursors: Mapping[str, str], imported: Collection[str]) -> ConnectorContext:
        return make_ctx(
            self.state_dir, self.http, self.clock, cursors=dict(cursors), imported=imported
        )

    def confirm_shipment(self, lines: Lines) -> None:
        self.staff.ship_direct(self.warehouse, list(lines), order_number="W-1")

    def ship_instructed(self, ne_order_id: str) -> None:
        schedule = self.lk.state.schedules_for(ne_order_id)[0]["id"]
        self.staff.start(schedule, self.warehouse)
        self.staff.ship(schedule)

    def confirm_receipt(self, lines: Lines) -> None:
        self.staff.receive(
            self.warehouse, list(lines), received_date=self.lk.clock.today().isoformat()
        )

    def confirm_invalid_shipment(self) -> None:
        made = self.staff.ship_direct(self.warehouse, [(self.products[0], 1)])
        self.staff.garble("shipment", made["id"], shipping_items=[None])

    def count_stock(self) -> Mapping[str, int]:
        return dict.fromkeys(self.products, STOCK)

    def instructions(self) -> Counter[str]:
        return Counter(str(e.order_number) for e in self.lk.ledger.entries(kind="schedule.create"))

    def cancelled(self) -> Counter[str]:
        return Counter(str(e.order_number) for e in self.lk.ledger.entries(kind="schedule.delete"))


class TestLogikuraConformance(ConnectorConformance):
    @pytest.fixture
    def harness(
        self, lk: SandboxServer, tmp_path: Path, http: requests.Session
    ) -> Iterator[LogikuraHarness]:
        harness = LogikuraHarness(lk, tmp_path, http)
        yield harness
        harness.staff.close()
