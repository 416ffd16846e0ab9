"""A benchmark world: the NE sandbox on loopback, a linked nebridge configuration and WMS data.

Every run gets a fresh sandbox (``seed_size`` 0, so it holds only what the workload creates),
a fresh state folder with a migrated SQLite database, a company connected through the
sandbox's sign-in, and a product master of :data:`PRODUCTS` products linked to as many goods.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from daemon.config import load_config
from daemon.nelink import connect
from daemon.sandbox import SandboxConfig, SandboxServer
from daemon.store.engine import make_engine, upgrade

CLIENT_ID, CLIENT_SECRET = "nebridge-bench", "nebridge-bench-secret"
WAREHOUSE = "ITAKU"
PRODUCTS = 100
STOCK = 10**8
AT = "2026-11-27 10:00:00"
SHIP_HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"
RECEIPT_HEADER = "receipt_id,warehouse,confirmed_at,product_code,quantity"
QUE_DELAY_S = 0.5

#: Production defaults, except the pipeline interval (the naive strategy polls at it).
LATENCY_SCHEDULE: dict[str, float] = {
    "interval_seconds": 10,
    "jitter_seconds": 0,
    "dispatch_interval_seconds": 10,
    "intake_poll_seconds": 1,
}


def product(index: int) -> str:
    """The WMS product code of product ``index``."""
    return f"P-{index % PRODUCTS:03d}"


def goods(index: int) -> str:
    """The NE goods code (= link code) of product ``index``."""
    return f"G-{index % PRODUCTS:03d}"


def order_lines(index: int) -> list[tuple[int, int]]:
    """The (product index, quantity) lines of the ``index``-th order: one or two lines."""
    lines = [(index, 1 + index % 3)]
    if index % 2:
        lines.append((index + 37, 1))
    return lines


@dataclass
class World:
    """One benchmark world: the sandbox, the configuration and the WMS folders."""

    sandbox: SandboxServer
    root: Path
    config: Path
    inbox: Path
    outbox: Path

    def create_orders(self, count: int) -> list[int]:
        """Create ``count`` orders ready to ship (status 20) in NE; return their ids."""
        state = self.sandbox.state
        return [
            state.create_order([(goods(p), q) for p, q in order_lines(i)], shop_id=1)
            for i in range(count)
        ]

    def drop(self, name: str, header: str, rows: Iterable[str]) -> Path:
        """Write a WMS file under a hidden name, then rename it into the inbox."""
        temporary = self.inbox / f".{name}.part"
        with temporary.open("w", encoding="utf-8", newline="") as stream:
            stream.write(header + "\n")
            stream.writelines(row + "\n" for row in rows)
        target = self.inbox / name
        os.replace(temporary, target)
        return target

    def close(self) -> None:
        """Stop the sandbox."""
        self.sandbox.stop()


def shipment_rows(order_ids: Sequence[int], first: int = 0) -> list[str]:
    """Shipment lines confirming ``order_ids``; every other order has a tracking number."""
    rows = []
    for offset, order_id in enumerate(order_ids):
        index = first + offset
        tracking = f"TRK{order_id:010d}" if index % 2 == 0 else ""
        for p, quantity in order_lines(index):
            rows.append(
                f"S-{order_id},{WAREHOUSE},{order_id},{tracking},{AT},{product(p)},{quantity}"
            )
    return rows


def other_quantity(index: int) -> int:
    """The quantity of the ``index``-th shipment not from NE."""
    return 1 + index % 3


def receipt_quantity(index: int) -> int:
    """The quantity of the ``index``-th receipt."""
    return 1 + index % 5


def other_shipment_rows(count: int) -> list[str]:
    """Shipments not from NE at the linked warehouse (one line each)."""
    return [f"X-{i},{WAREHOUSE},,,{AT},{product(i)},{other_quantity(i)}" for i in range(count)]


def receipt_rows(count: int) -> list[str]:
    """Receipts at the linked warehouse (one line each)."""
    return [f"R-{i},{WAREHOUSE},{AT},{product(i)},{receipt_quantity(i)}" for i in range(count)]


def _yaml_text(data: Any) -> str:
    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.dump(data, buffer)
    return buffer.getvalue()


def start_world(
    root: Path,
    latency_ms: int,
    *,
    import_orders: bool,
    schedule: dict[str, float] | None = None,
    stable_seconds: float = 0.0,
    que_delay_s: float = QUE_DELAY_S,
    database_url: str | None = None,
) -> World:
    """Start a sandbox, write and migrate a linked configuration and the product master.

    ``database_url``: a PostgreSQL database to use instead of SQLite in the state folder;
    everything in its ``public`` schema is dropped first (give a database of its own).

    ``stable_seconds`` is 0 for workloads (their files are complete before the daemon starts)
    and the production default 0.5 for the latency runs, where files arrive while it runs.
    NE finishes an upload ``que_delay_s`` after it was queued; nebridge polls at half that.
    """
    options: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "seed_size": 0,
        "que_processing_delay_s": que_delay_s,
        "faults": {"latency_ms": latency_ms},
    }
    sandbox = SandboxServer(SandboxConfig.from_mapping(options)).start()
    try:
        for index in range(PRODUCTS):
            sandbox.state.create_goods(goods(index), quantity=STOCK)
        inbox, outbox = root / "wms" / "inbox", root / "wms" / "outbox"
        inbox.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {
            "state_dir": str(root / "state"),
            "log_level": "WARNING",
            "nextengine": {
                "api_base": sandbox.base_url,
                "login_base": sandbox.base_url,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
            "schedule": schedule or LATENCY_SCHEDULE,
            "dispatch": {"queue_poll_seconds": que_delay_s / 2, "queue_timeout_seconds": 120},
            "wms": {
                "connector": "csv",
                "csv": {
                    "inbox": str(inbox),
                    "outbox": str(outbox),
                    "stable_seconds": stable_seconds,
                },
            },
            "warehouses": [
                # the shipped orders are made in the sandbox, not imported by nebridge
                {
                    "code": WAREHOUSE,
                    "name": "委託販売在庫",
                    "ne_linked": True,
                    "import_orders": import_orders,
                    "ship_unimported_orders": True,
                },
                {
                    "code": "SHINJUKU",
                    "name": "新宿拠点",
                    "ne_linked": False,
                    "import_orders": False,
                },
            ],
            "plugins": {
                name: {"enabled": True}
                for name in (
                    "status_update",
                    "tracking_update",
                    "stock_minus",
                    "stock_plus",
                    "case_insensitive_match",
                )
            },
        }
        if database_url is not None:
            _empty_database(database_url)
            settings["database_url"] = database_url
        config = root / "daemon.yaml"
        config.write_text(_yaml_text(settings), encoding="utf-8")
        loaded = load_config(config).config
        engine = make_engine(loaded.resolved_database_url)
        try:
            upgrade(engine)
            connect(loaded, engine, *sandbox.state.issue_login())
        finally:
            engine.dispose()
        world = World(sandbox, root, config, inbox, outbox)
        world.drop(
            "products.csv",
            "product_code,link_code",
            (f"{product(i)},{goods(i)}" for i in range(PRODUCTS)),
        )
        return world
    except BaseException:
        sandbox.stop()
        raise


def _empty_database(url: str) -> None:
    """Drop everything in the ``public`` schema of the PostgreSQL database at ``url``."""
    from sqlalchemy import create_engine, text

    if not url.startswith("postgresql"):
        raise ValueError(f"--database-url takes a PostgreSQL database, not {url.split(':')[0]}")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
