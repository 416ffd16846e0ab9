"""Histories are read by what changed (issue #20.4): a poll re-reads the last page it reached
and what follows, not the whole window; a backdated history is still seen; a deletion before
the resume point makes that poll read the whole window again. Request counts come from the
sandbox's traffic record (no timing)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import requests

from hooks.connectors import ConnectorContext, InboundBatch
from hooks.records import EventKind
from plugins.wms_logikura import LogikuraConnector
from plugins.wms_logikura.sandbox import SandboxServer
from tests.wms_logikura.conftest import FakeTime, connect, sandbox_config

HISTORIES = 2000
PATH = "/api/v1/shipping_histories"


def poll(
    connector: LogikuraConnector, ctx: ConnectorContext, lk: SandboxServer
) -> tuple[int, list[str]]:
    """One intake of shipments as the engine does it: (history list requests, event ids)."""
    before = len(lk.state.traffic.requests())
    ids: list[str] = []
    cursors = dict(ctx.cursors)
    for batch in connector.pending_batches(EventKind.SHIPMENT, ctx):
        assert isinstance(batch, InboundBatch)
        ids.extend(e.shipment_id for e in batch.events())  # type: ignore[union-attr]
        if batch.cursor is not None:
            cursors[batch.cursor[0]] = batch.cursor[1]
        batch.commit()
    ctx.cursors = cursors
    calls = [r for r in lk.state.traffic.requests()[before:] if r.path == PATH]
    return len(calls), ids


def direct(lk: SandboxServer, shipped_date: str | None = None, n: int = 1) -> list[Any]:
    """``n`` direct shipments of one item at ITAKU, made in-process (fast)."""
    state = lk.state
    warehouse = state.warehouse_by_code("ITAKU").id
    consignee = next(iter(state.consignees))
    inventory = next(i.id for i in state.inventories.values() if i.warehouse_id == warehouse)
    state.inventories[inventory].quantity += n
    body = {
        "sales_order": {"order_number": "W-1"},
        "shipping_history": {
            "shipping_items": [{"inventory_id": inventory, "shipping_quantity": 1, "price": 0}],
            "consignee_id": consignee,
            "warehouse_id": warehouse,
            "shipped_date": shipped_date,
        },
    }
    with state.acting("python"):
        return [state.create_shipping_history(body)["shipping_history"]["id"] for _ in range(n)]


def test_polls_read_only_what_changed(tmp_path: Path, http: requests.Session) -> None:
    with SandboxServer(sandbox_config(seed_size=4, page_size=25)) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock, sweep_hours=168)
        direct(lk, n=HISTORIES)
        calls, ids = poll(connector, ctx, lk)
        assert len(ids) == HISTORIES and calls == HISTORIES // 25  # the first, whole read
        assert poll(connector, ctx, lk) == (1, [])  # nothing new: the last page only

        clock.advance(3 * 86_400)
        backdated = direct(lk, shipped_date=(lk.clock.today() - timedelta(days=2)).isoformat())
        today = direct(lk)
        calls, ids = poll(connector, ctx, lk)
        assert calls <= 2 and ids == [f"LK-SH-{backdated[0]}", f"LK-SH-{today[0]}"]

        del lk.state.shipments[5]  # a history vanishes before the resume point
        calls, ids = poll(connector, ctx, lk)
        assert calls > HISTORIES // 25 and ids == []  # the whole window, nothing doubled
        assert poll(connector, ctx, lk)[0] == 1
