"""A configured nebridge installation in a folder, signed in to a Next Engine sandbox.

The pieces behind the pytest fixtures of :mod:`daemon.testing.pytest_plugin`, usable without
pytest too (a script, a notebook)::

    with SandboxServer(kit_sandbox_config()) as ne:
        with open_installation(Path("/tmp/try"), ne) as nb:
            ne.state.create_goods("A-1", quantity=5)
            nb.products([("P-A", "A-1")])
            order = ne.state.create_order([("A-1", 1)], shop_id=1)
            nb.run_once()
            nb.ship(order, [("P-A", 1)], tracking="T-1")
            nb.run_once()
            assert ne.ledger.shipped_order_ids() == [order]

Everything is real: the sandbox answers over HTTP on loopback, the store is a SQLite file,
the WMS is the ``csv`` connector's folders, and :meth:`Installation.run_once` is one pass of
the engine (what ``nebridge run --once`` does).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from daemon.admin import RunOnceReport
    from daemon.runtime import Runtime
    from daemon.sandbox import Ledger, SandboxConfig, SandboxServer

#: The Next Engine app the kit's sandbox accepts and its installations use.
CLIENT_ID, CLIENT_SECRET = "nebridge-e2e", "nebridge-e2e-secret-9"
#: Header of a shipment file (出荷実績) as the ``csv`` connector reads it.
SHIP_HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"
#: Header of a receipt file (入荷実績).
RECEIPT_HEADER = "receipt_id,warehouse,confirmed_at,product_code,quantity"
#: Header of a product master file (商品マスタ) with the link codes (紐付けコード).
PRODUCTS_HEADER = "product_code,link_code"
#: Header of a stock count file (棚卸): absolute on-hand quantities at ``counted_at``.
STOCK_HEADER = "warehouse,product_code,quantity,counted_at"
#: The confirmation time written when a test does not say one (Asia/Tokyo, no offset).
AT = "2026-11-27 10:00:00"

#: The built-in plugins an installation enables unless told otherwise.
DEFAULT_PLUGINS: dict[str, Any] = {
    "status_update": {"enabled": True},
    "tracking_update": {"enabled": True},
    "stock_minus": {"enabled": True},
    "stock_plus": {"enabled": True},
    "tag_filter": {"enabled": False},
    "case_insensitive_match": {"enabled": True},
}
#: Two warehouses: ``ITAKU`` linked to Next Engine (orders imported), ``SHINJUKU`` not.
DEFAULT_WAREHOUSES: list[dict[str, Any]] = [
    {"code": "ITAKU", "name": "委託販売在庫", "ne_linked": True, "import_orders": True},
    {"code": "SHINJUKU", "name": "新宿拠点", "ne_linked": False, "import_orders": False},
]

Encoding = Literal["utf-8", "utf-8-sig", "cp932"]


def dump_yaml(data: Any) -> str:
    """YAML text for a plain structure (Japanese kept readable)."""
    from ruamel.yaml import YAML

    buf = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.dump(data, buf)
    return buf.getvalue()


def write_config(folder: Path, migrate: bool = True, **overrides: Any) -> Path:
    """Write ``folder/daemon.yaml`` for a ``csv`` WMS under ``folder/wms`` and a SQLite store
    under ``folder/state``; keyword arguments replace whole top-level sections (``plugins=``,
    ``nextengine=`` …). ``migrate`` creates the database schema, as ``nebridge db upgrade``."""
    data: dict[str, Any] = {
        "state_dir": str(folder / "state"),
        "nextengine": {"client_id": "test-client", "client_secret": "test-secret-123"},
        "schedule": {
            "interval_seconds": 60,
            "jitter_seconds": 0,
            "dispatch_interval_seconds": 5,
            "intake_poll_seconds": 0.2,
        },
        "wms": {
            "connector": "csv",
            "csv": {
                "inbox": str(folder / "wms" / "inbox"),
                "outbox": str(folder / "wms" / "outbox"),
                "stable_seconds": 0.0,
            },
        },
        "warehouses": DEFAULT_WAREHOUSES,
        "plugins": DEFAULT_PLUGINS,
        **overrides,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "daemon.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    if migrate:
        from daemon.config import load_config
        from daemon.store.engine import make_engine, upgrade

        engine = make_engine(load_config(path).config.resolved_database_url)
        upgrade(engine)
        engine.dispose()
    return path


def kit_sandbox_config(**options: Any) -> SandboxConfig:
    """The sandbox the kit's installations sign in to: no seeded data, a quick upload queue;
    ``options`` are :class:`~daemon.sandbox.SandboxConfig` options (``docs/sandbox.md``)."""
    from daemon.sandbox import SandboxConfig

    return SandboxConfig.from_mapping(
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "seed_size": 0,
            "que_processing_delay_s": 0.2,
            **options,
        }
    )


def sign_in(config: Path, sandbox: SandboxServer) -> None:
    """Connect the installation of ``config`` to ``sandbox`` as ``nebridge connect`` does."""
    from daemon.config import load_config
    from daemon.nelink import connect
    from daemon.store.engine import make_engine

    loaded = load_config(config).config
    engine = make_engine(loaded.resolved_database_url)
    try:
        connect(loaded, engine, *sandbox.state.issue_login())
    finally:
        engine.dispose()


def drop_file(
    inbox: Path, name: str, header: str, rows: Sequence[str], encoding: Encoding = "utf-8"
) -> Path:
    """Put a complete CSV file ``name`` into a ``csv`` connector's ``inbox``: written aside,
    then renamed, as a careful WMS does (so it is never read half-written)."""
    inbox.mkdir(parents=True, exist_ok=True)
    part = inbox / f".{name}.part"
    part.write_bytes(("\n".join([header, *rows]) + "\n").encode(encoding))
    return part.rename(inbox / name)


def sandbox_settings(sandbox: SandboxServer) -> dict[str, Any]:
    """The ``daemon.yaml`` sections that point an installation at ``sandbox``: its API and
    login hosts, the kit's app, and a quick poll of its upload queue."""
    return {
        "nextengine": {
            "api_base": sandbox.base_url,
            "login_base": sandbox.base_url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        "dispatch": {"queue_poll_seconds": 0.1, "queue_timeout_seconds": 30},
    }


@dataclass
class Installation:
    """A configured installation: its ``daemon.yaml``, its WMS folders and the sandbox it is
    signed in to. Every helper acts on real files and the real engine."""

    sandbox: SandboxServer
    config: Path
    inbox: Path
    outbox: Path

    @property
    def ledger(self) -> Ledger:
        """What Next Engine received (shipped orders, stock uploads …)."""
        return self.sandbox.ledger

    def runtime(self) -> Runtime:
        """The engine as ``nebridge run`` builds it; close it after use."""
        from daemon.runtime import build_runtime

        return build_runtime(self.config)

    def run_once(self, dry_run: bool = False) -> RunOnceReport:
        """One pass of the engine (``nebridge run --once``): WMS intake, every warehouse's
        pipeline, the outbox drained; returns its report (``.ok``, ``.problems`` …)."""
        from daemon.admin import run_once

        runtime = self.runtime()
        try:
            return run_once(runtime, dry_run=dry_run)
        finally:
            runtime.close()

    def drop(
        self, name: str, header: str, rows: Sequence[str], encoding: Encoding = "utf-8"
    ) -> Path:
        """Put a complete WMS file ``name`` into the inbox (see :func:`drop_file`)."""
        return drop_file(self.inbox, name, header, rows, encoding)

    def ship(
        self,
        ne_order_id: int | str | None,
        lines: Sequence[tuple[str, int]],
        *,
        tracking: str = "",
        warehouse: str = "ITAKU",
        shipment_id: str | None = None,
        confirmed_at: str = AT,
        encoding: Encoding = "utf-8",
    ) -> Path:
        """Drop a shipment confirmed in the WMS: ``lines`` are ``(WMS product code, quantity)``;
        ``ne_order_id=None`` is a shipment that did not come from Next Engine."""
        order = "" if ne_order_id is None else str(ne_order_id)
        ident = shipment_id or f"S-{order or 'X'}-{time.monotonic_ns()}"
        rows = [
            f"{ident},{warehouse},{order},{tracking},{confirmed_at},{code},{qty}"
            for code, qty in lines
        ]
        return self.drop(f"shipments-{ident}.csv", SHIP_HEADER, rows, encoding)

    def receive(
        self,
        lines: Sequence[tuple[str, int]],
        *,
        warehouse: str = "ITAKU",
        receipt_id: str | None = None,
        confirmed_at: str = AT,
        encoding: Encoding = "utf-8",
    ) -> Path:
        """Drop a receipt of goods confirmed in the WMS (``(WMS product code, quantity)``)."""
        ident = receipt_id or f"R-{time.monotonic_ns()}"
        rows = [f"{ident},{warehouse},{confirmed_at},{code},{qty}" for code, qty in lines]
        return self.drop(f"receipts-{ident}.csv", RECEIPT_HEADER, rows, encoding)

    def products(self, pairs: Sequence[tuple[str, str]], encoding: Encoding = "utf-8") -> Path:
        """Drop the WMS product master: ``(WMS product code, Next Engine goods code)`` pairs."""
        time.sleep(0.01)  # a newer master must have a newer mtime
        return self.drop(
            "products.csv", PRODUCTS_HEADER, [f"{code},{link}" for code, link in pairs], encoding
        )

    def count_stock(
        self,
        quantities: Mapping[str, int],
        *,
        warehouse: str = "ITAKU",
        counted_at: str = AT,
        encoding: Encoding = "utf-8",
    ) -> Path:
        """Drop a stock count of ``warehouse``: on-hand quantity per WMS product code."""
        rows = [f"{warehouse},{code},{qty},{counted_at}" for code, qty in quantities.items()]
        return self.drop(f"stock-{time.monotonic_ns()}.csv", STOCK_HEADER, rows, encoding)

    def instructed(self) -> list[dict[str, Any]]:
        """Every order line nebridge wrote to the WMS (the outbox's order files), in order."""
        rows: list[dict[str, Any]] = []
        for path in sorted(self.outbox.glob("orders-*.csv")):
            with path.open(encoding="utf-8", newline="") as handle:
                rows.extend(csv.DictReader(handle))
        return rows

    def order(self, order_id: int) -> dict[str, Any]:
        """The Next Engine order as the sandbox holds it now (API field names)."""
        return dict(self.sandbox.state.order_snapshot(order_id))

    def uploaded(self, goods_code: str) -> int:
        """The net stock change Next Engine received for ``goods_code``."""
        return sum(
            e.delta or 0 for e in self.ledger.entries(kind="stock.upload", goods_code=goods_code)
        )


@contextmanager
def open_installation(
    folder: Path,
    sandbox: SandboxServer,
    plugins: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[Installation]:
    """An installation in ``folder`` signed in to ``sandbox``; ``plugins`` is the ``plugins``
    section (default :data:`DEFAULT_PLUGINS`), ``overrides`` replace other sections."""
    settings = {
        **sandbox_settings(sandbox),
        "plugins": dict(plugins if plugins is not None else DEFAULT_PLUGINS),
        **overrides,
    }
    config = write_config(folder, **settings)
    sign_in(config, sandbox)
    yield Installation(sandbox, config, folder / "wms" / "inbox", folder / "wms" / "outbox")
