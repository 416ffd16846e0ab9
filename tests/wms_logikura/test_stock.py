"""Logikura stock snapshots (issue #16): every page of ``/api/v1/inventories`` of each linked
warehouse, inside the shared request budget, a 429 in the middle waited out."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from typer.testing import CliRunner

from daemon.cli import app
from daemon.stock import take_snapshots
from daemon.store.engine import make_engine, read_session, upgrade
from daemon.store.models import StockSnapshotRecord
from plugins.wms_logikura.sandbox import SandboxServer
from tests.wms_logikura.conftest import FakeTime, connect, sandbox_config
from tests.wms_logikura.test_e2e import Linked, linked  # noqa: F401 (the linked fixture)


def expected_counts(lk: SandboxServer, code: str) -> dict[str, int]:
    wid = next(w.id for w in lk.state.warehouses.values() if w.code == code)
    counts: dict[str, int] = {}
    for inv in lk.state.inventories.values():
        if inv.warehouse_id == wid:
            product = str(lk.state.variants[inv.variant_id].product_code)
            counts[product] = counts.get(product, 0) + inv.quantity
    return counts


def test_snapshot_reads_every_page_within_the_budget_through_a_429(
    tmp_path: Path, http: requests.Session
) -> None:
    options = {"page_size": 3, "seed_size": 40, "rate_limit_per_minute": 20}
    with SandboxServer(sandbox_config(**options)) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        upgrade(engine)
        expected = expected_counts(lk, "ITAKU")
        assert len(expected) > 3 * 2, "the count spans several pages"
        assert list(connector.stock_batches(ctx, take=False)) == []  # read only when asked
        lk.faults.fail_next(429, path="/api/v1/inventories")
        report = take_snapshots(engine, connector, ctx, take=True)
        assert report.rejected == [] and len(report.stored) == 1
        with read_session(engine) as session:
            record = session.get(StockSnapshotRecord, report.stored[0])
        assert record is not None and record.warehouse == "ITAKU"  # SHINJUKU is not linked
        assert json.loads(record.quantities) == expected
        key = next(
            f"grant:{e.record_id}"
            for e in lk.ledger.entries(kind="oauth.token")
            if e.detail["grant_type"] == "authorization_code"
        )
        records = lk.state.traffic.requests(key)
        assert any(r.status == 429 for r in records), "the injected 429 reached the client"
        assert lk.state.traffic.max_in_window(60.0, key) <= 20
        engine.dispose()


def test_logikura_counts_compared_with_next_engine_through_the_cli(linked: Linked) -> None:  # noqa: F811 (the fixture imported above)
    ne, lk, staff = linked.ne, linked.lk, linked.staff
    ne.state.create_goods("A-1", quantity=10)
    ne.state.create_goods("B-2", quantity=5)
    lk.state.add_variant("LK-A", link_code="a-1", stock={"ITAKU": 10})
    lk.state.add_variant("LK-B", link_code="B-2", stock={"ITAKU": 5, "SHINJUKU": 7})
    linked.once()
    staff.receive("ITAKU", [("LK-A", 3)], received_date=lk.clock.today().isoformat())
    linked.once()
    assert ne.state.find_goods("A-1").quantity == 13  # type: ignore[union-attr]

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["--config", str(linked.config), *args])
        return result.exit_code, result.stdout

    code, out = run("stock", "take", "--json")
    assert code == 0 and len(json.loads(out)["snapshots"]) == 1  # ITAKU only: linked
    code, out = run("stock", "diff", "--json")
    data = json.loads(out)
    assert code == 0 and data["drifts"] == [] and data["compared"] == 2, data
    assert set(data["snapshots"]) == {"ITAKU"}

    ne.state.human_stock_edit("B-2", 9)  # a person in Next Engine
    code, out = run("stock", "diff", "--json")
    assert code == 1 and [(d["goods"], d["drift"]) for d in json.loads(out)["drifts"]] == [
        ("B-2", -4)
    ]
    code, out = run("stock", "reconcile", "--apply", "--yes", "--json")
    assert code == 0 and [c["state"] for c in json.loads(out)["corrections"]] == ["queued"]
    linked.once()
    assert ne.state.find_goods("B-2").quantity == 5  # type: ignore[union-attr]
    code, out = run("stock", "diff", "--json")
    assert code == 0 and json.loads(out)["drifts"] == []
