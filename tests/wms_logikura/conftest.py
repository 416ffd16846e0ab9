"""Shared pieces of the Logikura tests: the sandbox on loopback, a clock whose sleep moves
both the connector's and the sandbox's time, contexts and connected connectors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from daemon.runtime import build_runtime
from daemon.sandbox import SandboxServer as NeSandbox
from daemon.testing.installation import sign_in
from hooks.connectors import AuthorizingConnector, ConnectorContext, InstructionBatch
from hooks.records import OrderInstruction, OrderInstructionLine, WarehouseInfo
from plugins.wms_logikura import LogikuraConfig, LogikuraConnector
from plugins.wms_logikura.sandbox import SandboxConfig, SandboxServer

CLIENT_ID = "nebridge-lk-test"
SECRET = "lk-test-secret-0123456789"
REDIRECT = "http://127.0.0.1:8766/callback"
WAREHOUSES = ("ITAKU", "SHINJUKU")


class FakeTime:
    """POSIX seconds that only move when told; ``sleep`` moves them (and the frozen sandbox
    clock) forward, so minutes of rate limiting pass in milliseconds."""

    def __init__(self, sandbox: SandboxServer | None = None) -> None:
        self.sandbox = sandbox
        self.now = sandbox.clock.timestamp() if sandbox is not None else 1_800_000_000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        if self.sandbox is not None:
            self.sandbox.clock.advance(seconds)

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.advance(seconds)

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def sandbox_config(**options: Any) -> SandboxConfig:
    """The sandbox with the tests' client, a frozen clock and no seeded histories."""
    return SandboxConfig.from_mapping(
        {"client_id": CLIENT_ID, "client_secret": SECRET, "clock_frozen": True, **options}
    )


@pytest.fixture
def lk() -> Iterator[SandboxServer]:
    with SandboxServer(sandbox_config()) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    yield session
    session.close()


def logikura_section(server: SandboxServer, **overrides: Any) -> dict[str, Any]:
    """The connector's ``wms.logikura`` section pointing at ``server``, as daemon.yaml holds it."""
    return {
        "api_base": server.base_url,
        "auth_base": server.base_url,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "redirect_uri": REDIRECT,
        **overrides,
    }


def logikura_config(server: SandboxServer, **overrides: Any) -> LogikuraConfig:
    """The connector's validated section pointing at ``server``."""
    return LogikuraConfig.model_validate(logikura_section(server, **overrides))


def make_ctx(
    state_dir: Path,
    http: requests.Session,
    clock: FakeTime,
    *,
    warehouses: Iterable[str] = WAREHOUSES,
    known: set[str] | None = None,
    imported: Iterable[str] = (),
    cursors: dict[str, str] | None = None,
    log: logging.Logger | None = None,
    mask_secret: Callable[[str], None] = lambda _secret: None,
) -> ConnectorContext:
    """A context as the engine lends it; ``known=None`` knows every product."""
    orders = set(imported)
    return ConnectorContext(
        warehouses={c: WarehouseInfo(c, c, c == "ITAKU", c == "ITAKU") for c in warehouses},
        is_known_product=(lambda code: True) if known is None else known.__contains__,
        http=http,
        clock=clock.utc,
        log=log or logging.getLogger("test.logikura"),
        cursors=cursors if cursors is not None else {},
        state_dir=state_dir,
        is_imported_order=orders.__contains__,
        mask_secret=mask_secret,
    )


def connect(
    server: SandboxServer,
    state_dir: Path,
    http: requests.Session,
    clock: FakeTime,
    mask_secret: Callable[[str], None] = lambda _secret: None,
    **overrides: Any,
) -> tuple[LogikuraConnector, ConnectorContext]:
    """A connector authorised through the code flow (code issued as if the user approved)."""
    connector = LogikuraConnector(
        logikura_config(server, **overrides), clock=clock, sleep=clock.sleep
    )
    ctx = make_ctx(state_dir, http, clock, mask_secret=mask_secret)
    connector.authorize(server.state.issue_code(REDIRECT), ctx)
    return connector, ctx


def order(
    ne_order_id: str,
    *lines: tuple[str, int],
    delivery: str = "ヤマト運輸(宅急便)",
    name: str = "山田 太郎",
    address: str = "東京都新宿区西新宿1-1-1",
) -> OrderInstruction:
    """An instruction as the importer makes it."""
    return OrderInstruction(
        ne_order_id=ne_order_id,
        shop_order_id=f"R-{ne_order_id}",
        warehouse="ITAKU",
        order_date="2026-11-27 10:00:00",
        delivery_method=delivery,
        consignee_name=name,
        consignee_zip="1600023",
        consignee_address=address,
        consignee_tel="0312345678",
        lines=tuple(
            OrderInstructionLine(i + 1, code, code, qty) for i, (code, qty) in enumerate(lines)
        ),
    )


def batch(key: str, *orders: OrderInstruction) -> InstructionBatch:
    return InstructionBatch(
        key=key, created_at=datetime(2026, 11, 27, 1, 0, tzinfo=UTC), orders=orders
    )


def link_both(config: Path, ne: NeSandbox, lk: SandboxServer) -> None:
    """Sign the installation of ``config`` in to the Next Engine sandbox and authorise it in
    the Logikura sandbox, as `nebridge connect` and `nebridge wms connect` do."""
    sign_in(config, ne)
    runtime = build_runtime(config)
    try:
        connector: object = runtime.connector
        assert isinstance(connector, AuthorizingConnector)
        connector.authorize(lk.state.issue_code(REDIRECT), runtime.connector_context())
    finally:
        runtime.close()
