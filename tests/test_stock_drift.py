"""Stock drift (issue #16): snapshots, the comparison with Next Engine, corrections.

Everything runs against the Next Engine sandbox over HTTP, with real CSV files in the inbox
and the real CLI.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlmodel import select
from typer.testing import CliRunner

from daemon.attention import collect
from daemon.cli import app
from daemon.stock import check as stock_check
from daemon.stock import compare, reconcile
from daemon.store.engine import read_session
from daemon.store.models import InboxBatch, InboxEvent, OutboxItem, StockSnapshotRecord
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory
from tests.ne_world import AT, RECEIPT_HEADER, SHIP_HEADER, World, make_world

STOCK_HEADER = "warehouse,product_code,quantity,counted_at"
LATER = "2026-11-27 12:00:00"  # counted after AT
EARLIER = "2026-11-27 09:00:00"  # counted before AT


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path, database_url: str) -> Iterator[World]:
    """A linked world on SQLite, and on PostgreSQL when it is configured."""
    yield from make_world(make_config, tmp_path, database_url=database_url)


def intake_only(world: World) -> None:
    """Accept what the WMS dropped without letting the plugins decide (events undecided)."""
    rt = world.runtime()
    try:
        intake = rt.intake()
        assert intake is not None
        intake.run_once()
    finally:
        rt.close()


def stock(world: World, name: str, rows: list[str]) -> None:
    world.drop(name, STOCK_HEADER, rows)


def cli(world: World, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(world.config), *args])


def diff_json(world: World) -> tuple[int, dict[str, Any]]:
    result = cli(world, "stock", "diff", "--json")
    return result.exit_code, json.loads(result.stdout)


def drift_of(data: dict[str, Any], goods: str) -> dict[str, Any] | None:
    return next((d for d in data["drifts"] if d["goods"] == goods), None)


def test_in_flight_at_snapshot_time_is_not_drift_and_a_manual_edit_is(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    st.create_goods("B-2", quantity=7)
    world.products([("P-A", "A-1"), ("P-B", "B-2")])
    world.run_once()
    # a receipt (+5) and a wholesale shipment (-2) confirmed before the count, accepted but
    # not decided yet: the count has them, Next Engine not yet
    world.drop("receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-A,5"])
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,,,{AT},P-B,2"])
    stock(world, "stock-1.csv", [f"ITAKU,P-A,15,{LATER}", f"ITAKU,P-B,5,{LATER}"])
    intake_only(world)
    code, data = diff_json(world)
    assert code == 0, data
    assert data["drifts"] == [] and data["compared"] == 2

    world.run_once()  # decided and sent: still no drift (now nothing is in flight)
    code, data = diff_json(world)
    assert code == 0 and data["drifts"] == []

    # a person overwrites A-1 in Next Engine: found, unexplained, exit 1
    reply = requests.post(
        f"{world.sandbox.base_url}/_sandbox/human_edit/stock",
        json={"goods_id": "A-1", "quantity": 12},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    result = cli(world, "stock", "diff")
    assert result.exit_code == 1, result.output
    assert "A-1" in result.stdout and "+3" in result.stdout and "unknown" in result.stdout
    code, data = diff_json(world)
    row = drift_of(data, "A-1")
    assert code == 1 and row is not None
    assert (row["ne"], row["wms"], row["in_flight"], row["drift"]) == (12, 15, 0, 3)
    assert "stock record changed at" in row["explanation"]  # seen in Next Engine's data
    assert "a manual edit in Next Engine?" in row["explanation"]
    other = cli(world, "stock", "diff", "--warehouse", "SHINJUKU", "--json")
    assert other.exit_code == 0 and json.loads(other.stdout)["drifts"] == []  # not counted
    assert cli(world, "stock", "diff", "--warehouse", "NOWHERE").exit_code == 2
    shown = cli(world, "inbox", "list", "--json")
    assert shown.exit_code == 0 and "stock-1.csv" in shown.stdout, shown.output

    # shown first, asked, refused: nothing queued
    shown = cli(world, "stock", "reconcile", "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["applied"] is False
    assert [(p["goods"], p["delta"]) for p in json.loads(shown.stdout)["corrections"]] == [
        ("A-1", 3)
    ]
    assert cli(world, "stock", "reconcile", "--apply", "--json").exit_code == 2
    declined = CliRunner().invoke(
        app, ["--config", str(world.config), "stock", "reconcile", "--apply"], input="n\n"
    )
    assert declined.exit_code == 1 and "nothing queued" in declined.output
    with read_session(world.runtime().engine) as session:
        assert (
            session.scalars(select(OutboxItem).where(OutboxItem.plugin == "stock_reconcile")).all()
            == []
        )
    # corrected on request, once
    result = cli(world, "stock", "reconcile", "--apply", "--yes", "--json")
    assert result.exit_code == 0, result.output
    corrections = json.loads(result.stdout)["corrections"]
    assert [(c["goods"], c["delta"], c["state"]) for c in corrections] == [("A-1", 3, "queued")]
    assert corrections[0]["key"].startswith("reconcile:") and corrections[0]["key"].endswith(":A-1")
    again = cli(world, "stock", "reconcile", "--apply", "--yes", "--json")  # in flight now
    assert again.exit_code == 0 and json.loads(again.stdout)["corrections"] == []
    world.run_once()
    assert st.find_goods("A-1").quantity == 15  # type: ignore[union-attr]
    assert world.uploaded("A-1") == 5 + 3
    code, data = diff_json(world)
    assert code == 0 and data["drifts"] == []
    assert cli(world, "stock", "reconcile", "--apply", "--yes").exit_code == 0
    world.run_once()
    assert world.uploaded("A-1") == 8  # never sent twice
    shown = cli(world, "history", "--goods", "A-1", "--json")
    assert shown.exit_code == 0, shown.output
    whats = [step["what"] for step in json.loads(shown.stdout)["steps"]]
    assert any("correct Next Engine stock of A-1 by +3" in w for w in whats), whats
    assert any(w.endswith("done after 1 attempt(s)") for w in whats), whats


def test_snapshot_older_than_applied_events(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    world.products([("P-A", "A-1")])
    world.run_once()
    world.drop("receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-A,4"])
    world.run_once()  # NE 14, applied
    assert world.uploaded("A-1") == 4
    stock(world, "stock-old.csv", [f"ITAKU,P-A,10,{EARLIER}"])  # counted before the receipt
    intake_only(world)
    code, data = diff_json(world)
    assert code == 0 and data["drifts"] == [], data
    # and an undecided event after the count is in neither: still no drift
    world.drop("shipments-2.csv", SHIP_HEADER, [f"S-9,ITAKU,,,{LATER},P-A,1"])
    intake_only(world)
    code, data = diff_json(world)
    assert code == 0 and data["drifts"] == [], data


def test_case_insensitive_link_codes_and_unlinked_warehouse(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    st.create_goods("NE-ONLY", quantity=3)
    world.products([("P-A", "a-1"), ("P-FREE", "")])
    world.run_once()
    stock(
        world,
        "stock-1.csv",
        [f"ITAKU,P-A,10,{LATER}", f"ITAKU,P-FREE,4,{LATER}", f"SHINJUKU,P-A,99,{LATER}"],
    )  # SHINJUKU is not linked
    intake_only(world)
    code, data = diff_json(world)
    assert code == 0 and data["drifts"] == [], data
    assert {"goods": "NE-ONLY", "ne": 3} in data["not_in_wms"]
    assert [(r["product"], r["wms"]) for r in data["not_linked"]] == [("P-FREE", 4)]
    assert set(data["snapshots"]) == {"ITAKU"}


def test_exact_link_codes_without_case_insensitive_match(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    plugins = {**DEFAULT_PLUGINS, "case_insensitive_match": {"enabled": False}}
    for world in make_world(make_config, tmp_path, plugins=plugins):
        world.sandbox.state.create_goods("A-1", quantity=10)
        world.products([("P-A", "a-1")])
        world.run_once()
        stock(world, "stock-1.csv", [f"ITAKU,P-A,10,{LATER}"])
        intake_only(world)
        code, data = diff_json(world)
        assert code == 0 and data["drifts"] == []
        assert {"goods": "A-1", "ne": 10} in data["not_in_wms"]
        assert data["not_linked"][0]["product"] == "P-A"
        assert "no Next Engine goods" in data["not_linked"][0]["reason"]


def test_shipment_of_a_cancelled_order_is_explained(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    order = st.create_order([("A-1", 1)], shop_id=1)
    world.products([("P-A", "A-1")])
    world.run_once()
    st.human_edit(order, {"receive_order_cancel_type_id": "1"})
    world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},T-1,{AT},P-A,1"])
    world.run_once()  # the ship action is skipped: NE keeps 10, the warehouse has 9
    stock(world, "stock-1.csv", [f"ITAKU,P-A,9,{LATER}"])
    intake_only(world)
    code, data = diff_json(world)
    row = drift_of(data, "A-1")
    assert code == 0 and row is not None and row["drift"] == -1 and not row["unexplained"]
    assert "skipped" in row["explanation"]
    # corrected on request; a later manual edit is not blamed on the old shipment
    assert cli(world, "stock", "reconcile", "--apply", "--yes").exit_code == 0
    world.run_once()
    assert st.find_goods("A-1").quantity == 9  # type: ignore[union-attr]
    code, data = diff_json(world)
    assert code == 0 and data["drifts"] == []
    st.human_stock_edit("A-1", 11)
    code, data = diff_json(world)
    row = drift_of(data, "A-1")
    assert code == 1 and row is not None and row["drift"] == -2 and row["unexplained"]
    assert "skipped" not in row["explanation"] and "unknown" in row["explanation"]


def test_reconcile_is_sent_once_across_a_crash(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    world.products([("P-A", "A-1")])
    world.run_once()
    stock(world, "stock-1.csv", [f"ITAKU,P-A,6,{LATER}"])
    intake_only(world)
    first = cli(world, "stock", "reconcile", "--apply", "--yes", "--json")
    assert first.exit_code == 0, first.output
    # deciding again from the same snapshot adds nothing: the queued correction is in
    # flight, and even a decision that missed it finds its key taken
    rt = world.runtime()
    try:
        diff = compare(rt.db, rt.ne_client(), rt.warehouses(), str.casefold)
        assert diff.drifts == []
        row = diff.rows[0]
        row.in_flight, row.waits = 0, False
        again = reconcile(rt.db, diff)
    finally:
        rt.close()
    assert [c.state for c in again] == ["exists"]
    # the upload's answer is lost after Next Engine applied it (a crash of the call)
    world.sandbox.faults.drop_next(when="after", path="/api_v1_master_goods/upload")
    with read_session(world.runtime().engine) as session:
        items = session.scalars(
            select(OutboxItem).where(OutboxItem.plugin == "stock_reconcile")
        ).all()
    assert len(items) == 1
    for _ in range(3):
        world.run_once()
    assert world.uploaded("A-1") == -4
    assert st.find_goods("A-1").quantity == 6  # type: ignore[union-attr]


def test_reconcile_waits_for_undecided_events_and_max_delta(world: World) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    st.create_goods("B-2", quantity=10)
    world.products([("P-A", "A-1"), ("P-B", "B-2")])
    world.run_once()
    world.drop("receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{LATER},P-A,1"])
    stock(world, "stock-1.csv", [f"ITAKU,P-A,2,{AT}", f"ITAKU,P-B,30,{AT}"])
    intake_only(world)
    rt = world.runtime()
    try:
        diff = compare(rt.db, rt.ne_client(), rt.warehouses(), str.casefold)
        done = {c.goods: c for c in reconcile(rt.db, diff, max_delta=5)}
    finally:
        rt.close()
    assert done["A-1"].state == "waits"  # a newer receipt of A-1 is undecided
    assert done["B-2"].state == "skipped" and "max_auto_correct" in done["B-2"].detail
    with read_session(world.runtime().engine) as session:
        assert (
            session.scalars(select(OutboxItem).where(OutboxItem.plugin == "stock_reconcile")).all()
            == []
        )


def test_bad_stock_file_rejected_whole_with_line_reasons(world: World) -> None:
    world.sandbox.state.create_goods("A-1", quantity=10)
    world.products([("P-A", "A-1")])
    world.run_once()
    stock(
        world,
        "stock-bad.csv",
        [
            f"ITAKU,P-A,10,{LATER}",
            f"ITAKU,P-A,11,{LATER}",
            f"ITAKU,P-NOPE,1,{LATER}",
            f"NOWHERE,P-A,1,{LATER}",
            f"ITAKU,P-A,-1,{LATER}",
            f"ITAKU,P-A,1,{AT}",
            "ITAKU,P-A,1,yesterday",
        ],
    )
    result = cli(world, "stock", "take", "--json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {
        "snapshots": [],
        "accepted": [],
        "rejected": ["stock-bad.csv"],
    }
    errors = (world.inbox / "rejected" / "stock-bad.csv.errors.txt").read_text("utf-8")
    for needle in (
        "line 3",
        "listed twice",
        "line 4",
        "unknown product 'P-NOPE'",
        "line 5",
        "unknown warehouse 'NOWHERE'",
        "line 6",
        "not a whole number",
        "line 7",
        "one count per warehouse",
        "line 8",
        "not a timestamp",
    ):
        assert needle in errors, (needle, errors)
    with read_session(world.runtime().engine) as session:
        batch = session.scalars(select(InboxBatch).where(InboxBatch.kind == "stock")).one()
        assert batch.state == "rejected" and "P-NOPE" in (batch.errors or "")
        assert session.scalars(select(InboxEvent)).all() == []
    result = cli(world, "stock", "diff")
    assert result.exit_code == 1 and "no stock snapshot yet" in result.output
    # fixed in place and handed back like any rejected file
    (world.inbox / "rejected" / "stock-bad.csv").write_text(
        f"{STOCK_HEADER}\nITAKU,P-A,10,{LATER}\n", encoding="utf-8"
    )
    assert cli(world, "inbox", "retry", "stock-bad.csv").exit_code == 0
    taken = cli(world, "stock", "take", "--json")
    assert taken.exit_code == 0 and json.loads(taken.stdout)["accepted"] == ["stock-bad.csv"]
    assert cli(world, "stock", "diff").exit_code == 0


def test_plugin_reports_drift_and_auto_corrects_up_to_the_threshold(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    plugins = {
        **DEFAULT_PLUGINS,
        "stock_reconcile": {"enabled": True, "auto_correct": True, "max_auto_correct": 5},
    }
    for world in make_world(make_config, tmp_path, plugins=plugins):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=10)
        st.create_goods("B-2", quantity=10)
        world.products([("P-A", "A-1"), ("P-B", "B-2")])
        world.run_once()
        stock(world, "stock-1.csv", [f"ITAKU,P-A,13,{LATER}", f"ITAKU,P-B,30,{LATER}"])
        intake_only(world)
        rt = world.runtime()
        try:
            diff = stock_check(rt, take=False)
            assert diff is not None and len(diff.unexplained) == 2
            shown = collect(rt.db)
        finally:
            rt.close()
        drift = [i for i in shown.items if i.kind == "stock_drift"]
        assert [i.subject for i in drift] == ["B-2"]  # 20 > 5 waits for a person
        assert "reconcile --apply --goods B-2" in drift[0].fix
        world.run_once()
        assert world.uploaded("A-1") == 3 and world.uploaded("B-2") == 0
        # the person corrects B-2; the next pass closes the attention item
        assert cli(world, "stock", "reconcile", "--apply", "--yes", "--goods", "B-2").exit_code == 0
        world.run_once()
        assert world.uploaded("B-2") == 20
        rt = world.runtime()
        try:
            diff = stock_check(rt, take=False)
            assert diff is not None and diff.drifts == []
            assert "stock_drift" not in collect(rt.db).counts
        finally:
            rt.close()


def test_running_daemon_compares_after_each_snapshot(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    plugins = {
        **DEFAULT_PLUGINS,
        "stock_reconcile": {"enabled": True, "auto_correct": True, "max_auto_correct": 3},
    }
    for world in make_world(make_config, tmp_path, plugins=plugins):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=10)
        st.create_goods("B-2", quantity=10)
        world.products([("P-A", "A-1"), ("P-B", "B-2")])
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(world.config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            stock(world, "stock-1.csv", [f"ITAKU,P-A,8,{LATER}", f"ITAKU,P-B,50,{LATER}"])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and world.uploaded("A-1") != -2:
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        assert world.uploaded("A-1") == -2 and world.uploaded("B-2") == 0
        rt = world.runtime()
        try:
            shown = collect(rt.db)
        finally:
            rt.close()
        assert [i.subject for i in shown.items if i.kind == "stock_drift"] == ["B-2"]


def test_only_the_newest_snapshots_are_kept(world: World) -> None:
    world.sandbox.state.create_goods("A-1", quantity=10)
    world.products([("P-A", "A-1")])
    world.run_once()
    for day in range(1, 13):
        stock(world, f"stock-{day:02d}.csv", [f"ITAKU,P-A,10,2026-11-{day:02d} 12:00:00"])
    assert cli(world, "stock", "take").exit_code == 0
    with read_session(world.runtime().engine) as session:
        kept = sorted(r.counted_at.day for r in session.scalars(select(StockSnapshotRecord)))
    assert kept == list(range(3, 13))
    code, data = diff_json(world)
    assert code == 0 and data["snapshots"]["ITAKU"]["counted_at"].startswith("2026-11-12")
