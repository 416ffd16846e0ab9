"""A linked world for end-to-end tests: sandbox + config pointing at it + connected company."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import load_config
from daemon.nelink import connect
from daemon.runtime import Runtime, build_runtime
from daemon.sandbox import SandboxConfig, SandboxServer
from daemon.store.engine import make_engine
from tests.conftest import ConfigFactory

CLIENT_ID, SECRET = "nebridge-e2e", "nebridge-e2e-secret-9"
SHIP_HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"
RECEIPT_HEADER = "receipt_id,warehouse,confirmed_at,product_code,quantity"
AT = "2026-11-27 10:00:00"


@dataclass
class World:
    """The sandbox, the config and the WMS folders of one test."""

    sandbox: SandboxServer
    config: Path
    inbox: Path
    outbox: Path

    def runtime(self) -> Runtime:
        return build_runtime(self.config)

    def drop(self, name: str, header: str, rows: list[str]) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        tmp = self.inbox / f".{name}.part"
        tmp.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        tmp.rename(self.inbox / name)

    def products(self, pairs: list[tuple[str, str]]) -> None:
        time.sleep(0.01)  # a newer master must have a newer mtime
        self.drop("products.csv", "product_code,link_code", [f"{p},{link}" for p, link in pairs])

    def instructed(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for path in sorted(self.outbox.glob("orders-*.csv")):
            with path.open(encoding="utf-8", newline="") as handle:
                rows.extend(csv.DictReader(handle))
        return rows

    def order(self, order_id: int) -> dict[str, Any]:
        return dict(self.sandbox.state.order_snapshot(order_id))

    def uploaded(self, code: str) -> int:
        return sum(e.delta or 0
                   for e in self.sandbox.ledger.entries(kind="stock.upload", goods_code=code))


def make_world(
    make_config: ConfigFactory, tmp_path: Path, sandbox_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[World]:
    options = {"client_id": CLIENT_ID, "client_secret": SECRET, "seed_size": 0,
               "que_processing_delay_s": 0.2, **(sandbox_options or {})}
    with SandboxServer(SandboxConfig.from_mapping(options)) as sandbox:
        settings: dict[str, Any] = {
            "nextengine": {"api_base": sandbox.base_url, "login_base": sandbox.base_url,
                           "client_id": CLIENT_ID, "client_secret": SECRET},
            "dispatch": {"queue_poll_seconds": 0.1, "queue_timeout_seconds": 30},
        }
        settings.update(overrides)
        config = make_config(**settings)
        loaded = load_config(config).config
        engine = make_engine(loaded.resolved_database_url)
        connect(loaded, engine, *sandbox.state.issue_login())
        engine.dispose()
        yield World(sandbox, config, tmp_path / "wms" / "inbox", tmp_path / "wms" / "outbox")
