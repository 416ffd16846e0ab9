"""Orders cancelled or edited in Next Engine after import reach the WMS (issue #15).

Real sandbox over HTTP, real order and cancellation files, real databases, the real CLI
(``run --once``, ``history``): a cancelled order is dropped in the WMS before pickup, an
edited one is cancelled (reason ``edited``) and re-instructed with its new content, in that
order; nebridge's own writes are no edits; a crash between writing the cancellations file
and recording it leaves one file; a change made while the daemon was down is found after.
"""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from daemon.admin import run_once
from daemon.cli import app
from daemon.metrics import Metrics
from daemon.nextengine.dates import format_ne_datetime
from daemon.pipeline import Stage, StageResult
from daemon.runtime import build_runtime
from daemon.store.engine import read_session
from daemon.store.models import OrderChange, utcnow
from hooks import hookimpl
from hooks.connectors import CancellationBatch, ConnectorSpec, OrderCancellation
from hooks.records import PluginInfo
from plugins.wms_csv.config import CsvConnectorConfig
from plugins.wms_csv.connector import CsvConnector
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory
from tests.ne_world import AT, SHIP_HEADER, World, make_world

PAST = "2026-01-05 09:00:00"  # print-instruct date long reached


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path, database_url: str) -> Iterator[World]:
    wms = {
        "connector": "csv",
        "csv": {
            "inbox": str(tmp_path / "wms" / "inbox"),
            "outbox": str(tmp_path / "wms" / "outbox"),
            "stable_seconds": 0.0,
        },
    }
    yield from make_world(
        make_config,
        tmp_path,
        database_url=database_url,
        wms=wms,
        order_import={"claim": "tag"},
        plugins={**DEFAULT_PLUGINS, "order_watch": {"enabled": True}},
    )


def cli(world: World, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--config", str(world.config), *args])
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


def run(world: World) -> None:
    """One pass of the daemon through the CLI (exit 1 only means attention waits)."""
    code, _out, err = cli(world, "run", "--once")
    assert code in (0, 1), err


def rows(world: World, pattern: str) -> list[list[dict[str, str]]]:
    return [
        list(csv.DictReader(io.StringIO(p.read_text(encoding="utf-8"), newline="")))
        for p in sorted(world.outbox.glob(pattern))
    ]


def cancellations(world: World) -> list[tuple[str, str]]:
    return [(r["ne_order_id"], r["reason"]) for f in rows(world, "cancellations-*.csv") for r in f]


def instructed(world: World) -> Counter[str]:
    return Counter(o for f in rows(world, "orders-*.csv") for o in {r["ne_order_id"] for r in f})


def setup(world: World) -> tuple[int, int, int]:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=50)
    st.create_goods("B-2", quantity=50)
    o1 = st.create_order([("A-1", 1)], instruct_date=PAST)
    o2 = st.create_order([("A-1", 2), ("B-2", 1)], instruct_date=PAST)
    o3 = st.create_order([("B-2", 3)], instruct_date=PAST)
    world.products([("P-A", "A-1"), ("P-B", "B-2")])
    run(world)
    assert instructed(world) == Counter({str(o1): 1, str(o2): 1, str(o3): 1})
    return o1, o2, o3


def scrape(world: World) -> str:
    """The daemon's Prometheus page, over HTTP."""
    rt = build_runtime(world.config)
    metrics = Metrics()
    metrics.watch_store(rt.db, rt.host)
    metrics.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics") as resp:
            return str(resp.read().decode())
    finally:
        metrics.stop()
        rt.close()


def history(world: World, order: int) -> list[dict[str, Any]]:
    code, out, err = cli(world, "history", "--order", str(order), "--json")
    assert code == 0, err
    return list(json.loads(out)["steps"])


def test_cancel_before_pickup_reaches_the_wms_once_and_ne_ships_only_the_others(
    world: World,
) -> None:
    o1, o2, o3 = setup(world)
    run(world)  # the claim tag nebridge wrote itself is no edit
    assert cancellations(world) == []

    # the daemon is down while a person cancels o1 and deletes o3 in Next Engine
    world.sandbox.state.human_edit(o1, {"receive_order_cancel_type_id": "1"})
    world.sandbox.state.human_edit(o3, delete=True)
    run(world)
    assert sorted(cancellations(world)) == sorted([(str(o1), "cancelled"), (str(o3), "deleted")])
    (only,) = rows(world, "cancellations-*.csv")
    assert set(only[0]) == {"ne_order_id", "warehouse", "reason", "detected_at"}
    assert only[0]["warehouse"] == "ITAKU" and only[0]["detected_at"].endswith("Z")
    assert instructed(world) == Counter({str(o1): 1, str(o2): 1, str(o3): 1})

    run(world)  # nothing found twice
    assert len(cancellations(world)) == 2
    code, out, err = cli(world, "orders", "list", "--state", "cancelled", "--json")
    assert code == 0, err
    assert {r["ne_order_id"] for r in json.loads(out)} == {str(o1), str(o3)}
    world.sandbox.state.human_edit(o1, {"receive_order_cancel_type_id": "0"})
    run(world)  # valid again in Next Engine: never re-sent by itself (the WMS may hold it)
    assert instructed(world)[str(o1)] == 1
    code, _out, err = cli(world, "orders", "retry", str(o1))
    assert code == 0, err
    run(world)  # the admin's retry sends it again
    assert instructed(world)[str(o1)] == 2
    world.sandbox.state.human_edit(o1, {"receive_order_cancel_type_id": "1"})
    run(world)
    assert len(cancellations(world)) == 3
    steps = [s["what"] for s in history(world, o1)]
    assert any("cancelled in Next Engine" in s for s in steps), steps

    world.drop(
        "shipments-1.csv",
        SHIP_HEADER,
        [f"S-2,ITAKU,{o2},T-2,{AT},P-A,2", f"S-2,ITAKU,{o2},T-2,{AT},P-B,1"],
    )
    run(world)  # nebridge's own status and tracking writes are no edits
    run(world)
    assert world.sandbox.ledger.shipped_order_ids() == [o2]
    assert len(cancellations(world)) == 3
    code, out, _err = cli(world, "status", "--json")
    assert code in (0, 1)
    watch = json.loads(out)["order_watch"]
    assert watch == {"ITAKU": {"cancelled": 2, "deleted": 1}}
    text = scrape(world)
    assert 'nebridge_order_changes_total{kind="cancelled",warehouse="ITAKU"} 2.0' in text
    assert 'nebridge_order_changes_total{kind="deleted",warehouse="ITAKU"} 1.0' in text


def test_edit_of_address_and_quantity_cancels_then_reinstructs_the_new_content(
    world: World,
) -> None:
    o1, o2, o3 = setup(world)
    st = world.sandbox.state
    st.human_edit(o1, {"receive_order_consignee_address1": "大阪府大阪市北区1-1"})
    st.human_edit(o2, rows={1: {"receive_order_row_quantity": "5"}})
    st.human_edit(o3, {"receive_order_worker_text": "call before delivery"})  # not an edit
    run(world)
    assert sorted(cancellations(world)) == sorted([(str(o1), "edited"), (str(o2), "edited")])
    assert instructed(world) == Counter({str(o1): 2, str(o2): 2, str(o3): 1})
    (cancel_file,) = sorted(world.outbox.glob("cancellations-*.csv"))
    newest = max(world.outbox.glob("orders-*.csv"), key=lambda p: p.stat().st_mtime_ns)
    assert cancel_file.stat().st_mtime_ns <= newest.stat().st_mtime_ns
    by_order = {(r["ne_order_id"], r["product_code"]): r for r in _newest_rows(world)}
    assert by_order[(str(o1), "P-A")]["consignee_address"].startswith("大阪府大阪市北区1-1")
    assert by_order[(str(o2), "P-A")]["quantity"] == "5"
    assert by_order[(str(o2), "P-B")]["quantity"] == "1"

    run(world)  # the re-instructed orders are watched from their new content
    assert len(cancellations(world)) == 2
    assert instructed(world) == Counter({str(o1): 2, str(o2): 2, str(o3): 1})
    steps = history(world, o2)
    assert any(
        "edited in Next Engine" in s["what"] and "quantity 2 → 5" in s["detail"] for s in steps
    ), steps


def _newest_rows(world: World) -> list[dict[str, str]]:
    newest = max(world.outbox.glob("orders-*.csv"), key=lambda p: p.stat().st_mtime_ns)
    return list(csv.DictReader(io.StringIO(newest.read_text(encoding="utf-8"), newline="")))


def test_crash_between_writing_the_cancellations_file_and_recording_it_writes_it_once(
    world: World,
) -> None:
    o1, _o2, _o3 = setup(world)
    world.sandbox.state.human_edit(o1, {"receive_order_cancel_type_id": "1"})
    # the crashed pass: the change is recorded, the file written, the answer never recorded
    rt = build_runtime(world.config)
    try:
        importer = rt.order_importer()
        assert importer is not None and importer.watch is not None
        (page,) = importer._pages(importer._scan("ITAKU"))
        importer._watch("ITAKU", page.groups, False, StageResult(Stage.IMPORT_ORDERS, "ITAKU"))
        with read_session(rt.engine) as session:
            (change,) = session.scalars(select(OrderChange)).all()
        importer.connector.push_cancellations(
            CancellationBatch(  # type: ignore[attr-defined]
                change.batch,
                change.detected_at,
                [OrderCancellation(str(o1), "ITAKU", "cancelled", change.detected_at)],
            ),
            importer.connector_context(),
        )
    finally:
        rt.close()
    assert cancellations(world) == [(str(o1), "cancelled")]
    run(world)  # the restarted daemon delivers the same batch again: the same file
    run(world)
    assert cancellations(world) == [(str(o1), "cancelled")]
    assert len(list(world.outbox.glob("cancellations-*.csv"))) == 1
    states = [s for s in history(world, o1) if "cancelled in Next Engine" in s["what"]]
    assert states and "told to drop" in states[-1]["detail"]


def test_goods_shipped_for_a_cancelled_order_wait_for_the_admin_who_applies_the_stock_once(
    world: World,
) -> None:
    o1, _o2, _o3 = setup(world)
    world.sandbox.state.human_edit(o1, {"receive_order_cancel_type_id": "1"})
    run(world)
    assert cancellations(world) == [(str(o1), "cancelled")]
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{o1},T-1,{AT},P-A,1"])
    run(world)  # the warehouse shipped it anyway
    assert world.sandbox.ledger.shipped_order_ids() == []
    code, out, _err = cli(world, "attention", "--json")
    items = {i["key"]: i for i in json.loads(out)["items"]}
    item = items[f"order_watch:shipped:{o1}"]
    assert item["reason"].startswith(f"goods left ITAKU for order {o1}, which was cancelled")
    assert "S-1 (P-A ×1)" in item["reason"]
    assert f"nebridge orders shipped-anyway {o1} --apply-stock" in item["fix"]
    assert world.uploaded("A-1") == 0

    code, _out, err = cli(world, "orders", "shipped-anyway", str(o1))
    assert code == 2 and "--apply-stock or --leave-stock" in err
    code, _out, err = cli(world, "orders", "shipped-anyway", str(o1), "--apply-stock")
    assert code == 0 and "1 stock change(s) queued" in err, err
    code, _out, err = cli(world, "orders", "shipped-anyway", str(o1), "--apply-stock")
    assert code == 1 and "no shipment of a cancelled order waits" in err
    run(world)
    run(world)
    assert world.uploaded("A-1") == -1  # applied once
    assert world.sandbox.ledger.shipped_order_ids() == []
    code, out, _err = cli(world, "attention", "--json")
    assert f"order_watch:shipped:{o1}" not in {i["key"] for i in json.loads(out)["items"]}


def test_an_order_whose_print_date_falls_due_later_is_imported_then(world: World) -> None:
    """With the watch, the print-date search runs only once a seen order falls due."""
    st = world.sandbox.state
    st.create_goods("A-1", quantity=50)
    world.products([("P-A", "A-1")])
    run(world)
    soon = utcnow() + timedelta(seconds=2)
    later = st.create_order([("A-1", 1)], instruct_date=format_ne_datetime(soon))
    run(world)
    assert instructed(world) == Counter()
    while utcnow() <= soon + timedelta(seconds=1):
        time.sleep(0.2)
    run(world)
    assert instructed(world) == Counter({str(later): 1})


def test_an_order_whose_every_row_is_cancelled_leaves_the_wms_and_is_held(world: World) -> None:
    o1, _o2, _o3 = setup(world)
    world.sandbox.state.human_edit(o1, rows={1: {"receive_order_row_cancel_flag": "1"}})
    run(world)
    assert cancellations(world) == [(str(o1), "edited")]
    assert instructed(world)[str(o1)] == 1  # not instructed again: nothing left to ship
    code, out, err = cli(world, "orders", "list", "--state", "held", "--json")
    assert code == 0, err
    (held,) = json.loads(out)
    assert held["ne_order_id"] == str(o1) and held["reason"] == "order has no rows to ship"


class PlainFolders:
    """A third-party connector that cannot take an order back: the CSV folders without
    ``push_cancellations`` (so not a :class:`~hooks.connectors.CancellingConnector`)."""

    def __init__(self, config: CsvConnectorConfig) -> None:
        self._csv = CsvConnector(config)
        self.recover = self._csv.recover
        self.has_new_input = self._csv.has_new_input
        self.pending_batches = self._csv.pending_batches
        self.product_snapshot = self._csv.product_snapshot
        self.push_orders = self._csv.push_orders


class PlainFoldersPlugin:
    """Offers the ``plain`` connector."""

    @hookimpl
    def nebridge_plugin_info(self) -> PluginInfo:
        return PluginInfo(name="wms_plain", summary="CSV folders that cannot cancel")

    @hookimpl
    def nebridge_wms_connectors(self) -> list[ConnectorSpec]:
        return [ConnectorSpec(name="plain", factory=PlainFolders, config_model=CsvConnectorConfig)]


def test_a_connector_that_cannot_cancel_puts_each_change_in_front_of_a_person(
    make_config: ConfigFactory,
    tmp_path: Path,
    database_url: str,
) -> None:
    folders = {
        "inbox": str(tmp_path / "wms" / "inbox"),
        "outbox": str(tmp_path / "wms" / "outbox"),
        "stable_seconds": 0.0,
    }
    plain = PlainFoldersPlugin()
    for world in make_world(
        make_config,
        tmp_path,
        database_url=database_url,
        wms={"connector": "plain", "plain": folders},
        plugins={**DEFAULT_PLUGINS, "order_watch": {"enabled": True}},
    ):

        def once(world: World = world) -> None:
            rt = build_runtime(world.config, extra_plugins={"wms_plain": plain})
            try:
                run_once(rt)
            finally:
                rt.close()

        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        o1 = st.create_order([("A-1", 1)], instruct_date=PAST)
        o2 = st.create_order([("A-1", 2)], instruct_date=PAST)
        world.products([("P-A", "A-1")])
        once()
        assert instructed(world) == Counter({str(o1): 1, str(o2): 1})
        st.human_edit(o1, {"receive_order_cancel_type_id": "1"})
        st.human_edit(o2, rows={1: {"receive_order_row_quantity": "3"}})
        once()
        once()
        assert cancellations(world) == []  # the connector has no way to say it
        assert instructed(world) == Counter({str(o1): 1, str(o2): 1})  # never re-sent
        code, out, _err = cli(world, "attention", "--json")
        items = {i["key"]: i for i in json.loads(out)["items"]}
        for order, what in ((o1, "cancelled"), (o2, "edited")):
            item = items[f"order_watch:stop:{order}"]
            assert item["reason"].startswith(
                f"stop picking order {order} in ITAKU: {what} in Next Engine at "
            )
            assert "cannot cancel orders" in item["reason"]
            assert f"nebridge orders stopped {order}" in item["fix"]
        code, _out, err = cli(world, "orders", "stopped", str(o1))
        assert code == 0, err
        code, out, _err = cli(world, "attention", "--json")
        keys = {i["key"] for i in json.loads(out)["items"]}
        assert f"order_watch:stop:{o1}" not in keys and f"order_watch:stop:{o2}" in keys
        code, _out, err = cli(world, "orders", "stopped", str(o1))
        assert code == 1 and "not waiting to be stopped" in err
