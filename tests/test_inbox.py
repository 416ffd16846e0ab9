"""The durable inbox from the admin's side: ``nebridge inbox list|retry``, a crash between
accepting and moving a file, and how fast the running daemon picks up a new file.

Real files, real SQLite (and PostgreSQL when configured), the real CLI, real subprocesses.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from daemon.cli import app
from daemon.config import load_config
from daemon.inbox_admin import InboxError, requeue_rejected
from daemon.runtime import build_runtime
from daemon.store.engine import make_engine, read_session, write_session
from daemon.store.models import ImportedOrder, InboxBatch, InboxEvent, OutboxItem, WmsProduct
from tests.conftest import DEFAULT_PLUGINS, DEFAULT_WAREHOUSES, ConfigFactory

SHIP_HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"
RECEIPT_HEADER = "receipt_id,warehouse,confirmed_at,product_code,quantity"
AT = "2026-11-27 10:00:00"
BUGGY = {"code": "BUGGY", "ne_linked": True, "import_orders": False}
REPO = Path(__file__).resolve().parents[1]
CLI_LOG_HANDLER = "nebridge"  # the root handler daemon.logsetup installs


def drop(inbox: Path, name: str, header: str, rows: list[str]) -> Path:
    """Deliver a complete file the way a WMS should: write a hidden temporary, rename."""
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.part"
    tmp.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return tmp.rename(inbox / name)


def products(inbox: Path) -> None:
    drop(inbox, "products.csv", "product_code,link_code", ["P-A,goods-a", "P-B,goods-b"])


def invoke(runner: CliRunner, config: Path, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; its log handler (bound to the runner's stderr, closed
    afterwards) is removed again so that later in-process work logs nowhere stale."""
    root = logging.getLogger()
    try:
        result = runner.invoke(app, ["--config", str(config), *args])
    finally:
        root.handlers = [h for h in root.handlers if h.name != CLI_LOG_HANDLER]
    return result.exit_code, result.stdout, result.stderr


def listing(runner: CliRunner, config: Path, *args: str) -> dict[str, Any]:
    code, out, err = invoke(runner, config, "inbox", "list", "--json", *args)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def engine_for(config: Path) -> Any:
    return make_engine(load_config(config).config.resolved_database_url)


def imported(config: Path, warehouse: str, *order_ids: str) -> None:
    """Record orders as imported by nebridge into ``warehouse`` (only those may be shipped)."""
    engine = engine_for(config)
    try:
        with write_session(engine) as session:
            session.add_all(
                ImportedOrder(ne_order_id=order_id, warehouse=warehouse, state="instructed")
                for order_id in order_ids
            )
    finally:
        engine.dispose()


def events(config: Path) -> list[tuple[str, str, str]]:
    """(kind, external id, state) of every stored event."""
    engine = engine_for(config)
    try:
        with read_session(engine) as session:
            rows = session.execute(
                select(InboxEvent.kind, InboxEvent.external_id, InboxEvent.state).order_by(
                    InboxEvent.id
                )
            ).all()
    finally:
        engine.dispose()
    return [(str(k), str(x), str(s)) for k, x, s in rows]


def outbox_keys(config: Path) -> list[str]:
    engine = engine_for(config)
    try:
        with read_session(engine) as session:
            keys = list(session.scalars(select(OutboxItem.idempotency_key)))
    finally:
        engine.dispose()
    return sorted(keys)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "wms" / "inbox"


# -- inbox list -------------------------------------------------------------------------------


def test_list_shows_accepted_pending_held_and_rejected(
    runner: CliRunner,
    fake_site: Path,
    make_config: ConfigFactory,
    database_url: str,
    inbox: Path,
) -> None:
    config = make_config(
        database_url=database_url,
        warehouses=[*DEFAULT_WAREHOUSES, BUGGY],
        plugins={**DEFAULT_PLUGINS, "fake_raises": {"enabled": True}},
    )
    imported(config, "ITAKU", "2002", "2003", "2009")
    imported(config, "BUGGY", "2001")
    products(inbox)
    drop(
        inbox,
        "shipments-1.csv",
        SHIP_HEADER,
        [f"S-1,BUGGY,2001,T1,{AT},P-A,1", f"S-2,ITAKU,2002,T2,{AT},P-A,1"],
    )
    drop(inbox, "receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-B,5"])
    drop(inbox, "shipments-bad.csv", SHIP_HEADER, [f"S-9,ITAKU,2009,,{AT},P-ZZZ,1"])
    code, _out, _err = invoke(runner, config, "run", "--once")
    assert code == 1  # one held event, one rejected file
    # a later file only taken in (pipelines not run yet): S-3 pending, S-2 a duplicate
    drop(
        inbox,
        "shipments-2.csv",
        SHIP_HEADER,
        [f"S-2,ITAKU,2002,T2,{AT},P-A,1", f"S-3,ITAKU,2003,,{AT},P-B,2"],
    )
    runtime = build_runtime(config)
    try:
        intake = runtime.intake()
        assert intake is not None
        intake.run_once()
    finally:
        runtime.close()

    data = listing(runner, config)
    assert set(data) == {"limit", "accepted", "pending", "held", "rejected"}
    assert data["limit"] == 50
    accepted = data["accepted"]
    assert accepted["total"] == 3
    assert [(b["source"], b["kind"], b["events"], b["duplicates"]) for b in accepted["items"]] == [
        ("shipments-2.csv", "shipment", 1, 1),  # newest first
        ("receipts-1.csv", "receipt", 1, 0),
        ("shipments-1.csv", "shipment", 2, 0),
    ]
    assert set(accepted["items"][0]) == {
        "id",
        "source",
        "kind",
        "received_at",
        "events",
        "duplicates",
    }
    assert data["pending"]["total"] == 1
    (pending,) = data["pending"]["items"]
    assert (
        pending["kind"],
        pending["external_id"],
        pending["warehouse"],
        pending["source"],
        pending["attempts"],
        pending["reason"],
    ) == ("shipment", "S-3", "ITAKU", "shipments-2.csv", 0, None)
    (held,) = data["held"]["items"]
    assert (held["kind"], held["external_id"], held["warehouse"], held["source"]) == (
        "shipment",
        "S-1",
        "BUGGY",
        "shipments-1.csv",
    )
    assert "fake_raises" in held["reason"] and "bug while looking at S-1" in held["reason"]
    assert set(held) == {
        "id",
        "kind",
        "external_id",
        "warehouse",
        "source",
        "attempts",
        "received_at",
        "reason",
    }
    (rejected,) = data["rejected"]["items"]
    assert (rejected["source"], rejected["kind"]) == ("shipments-bad.csv", "shipment")
    assert rejected["reason"] == "shipments-bad.csv:2 [product_code]: unknown product 'P-ZZZ'"

    only_held = listing(runner, config, "--state", "held")
    assert set(only_held) == {"limit", "held"} and only_held["held"] == data["held"]
    limited = listing(runner, config, "--state", "accepted", "--limit", "1")
    assert limited["accepted"]["total"] == 3 and len(limited["accepted"]["items"]) == 1

    code, out, _err = invoke(runner, config, "inbox", "list")
    assert code == 0
    for text in (
        "accepted batches (3, newest first)",
        "pending events (1, oldest first)",
        "held events (1, oldest first)",
        "rejected batches (1, newest first)",
        "shipment:S-1",
        "shipment:S-3",
        "shipments-bad.csv",
        "[product_code]:",
        "inbox retry",
    ):
        assert text in out, text
    code, out, _err = invoke(runner, config, "inbox", "list", "--state", "accepted", "--limit", "2")
    assert "accepted batches (2 of 3, newest first)" in out and "held" not in out
    code, _out, err = invoke(runner, config, "inbox", "list", "--state", "lost")
    assert code == 2 and "lost" in err


def test_list_of_an_empty_inbox_says_so(runner: CliRunner, make_config: ConfigFactory) -> None:
    config = make_config()
    code, out, _err = invoke(runner, config, "inbox", "list")
    assert code == 0
    assert all(
        f"no {what}" in out
        for what in ("accepted batches", "pending events", "held events", "rejected batches")
    )
    assert listing(runner, config)["held"] == {"total": 0, "items": []}


# -- inbox retry NAME -------------------------------------------------------------------------


def test_a_fixed_rejected_file_is_accepted_once_after_retry(
    runner: CliRunner, make_config: ConfigFactory, database_url: str, inbox: Path
) -> None:
    config = make_config(database_url=database_url)
    imported(config, "ITAKU", "7001", "7002")
    products(inbox)
    bad = drop(
        inbox,
        "shipments-7.csv",
        SHIP_HEADER,
        [f"S-7,ITAKU,7001,T7,{AT},P-ZZZ,1", f"S-8,ITAKU,7002,,{AT},P-B,2"],
    )
    code, _out, _err = invoke(runner, config, "run", "--once")
    assert code == 1
    rejected = inbox / "rejected"
    assert files(rejected) == ["shipments-7.csv", "shipments-7.csv.errors.txt"]
    assert events(config) == []  # rejected whole: not even S-8 was taken

    code, _out, err = invoke(runner, config, "inbox", "retry", "shipments-8.csv")
    assert code == 1 and "no rejected file named 'shipments-8.csv'" in err
    assert "nebridge inbox list --state rejected" in err
    code, _out, err = invoke(runner, config, "inbox", "retry", "../daemon.yaml")
    assert code == 1 and "give the name only" in err
    code, _out, err = invoke(runner, config, "inbox", "retry", f"{bad.name}.errors.txt")
    assert code == 1 and f"retry the file it describes, {bad.name}" in err

    fixed = rejected / bad.name
    fixed.write_text(fixed.read_text(encoding="utf-8").replace("P-ZZZ", "P-A"), encoding="utf-8")

    code, _out, err = invoke(runner, config, "inbox", "retry", bad.name)
    assert code == 0, err
    assert "back in the WMS inbox" in err
    assert (inbox / bad.name).is_file()
    left = files(rejected)
    assert len(left) == 1 and left[0].startswith("shipments-7.csv.errors.retried-")
    assert "P-ZZZ" in (rejected / left[0]).read_text(encoding="utf-8")  # the old report kept
    assert listing(runner, config, "--state", "rejected")["rejected"] == {"total": 0, "items": []}

    code, out, _err = invoke(runner, config, "run", "--once", "--json")
    report = json.loads(out)
    assert code == 0, report["problems"]
    assert report["intake"]["accepted"] == [bad.name] and report["intake"]["events"] == 2
    code, out, _err = invoke(runner, config, "run", "--once", "--json")
    assert code == 0 and json.loads(out)["intake"]["accepted"] == []
    assert events(config) == [("shipment", "S-7", "processed"), ("shipment", "S-8", "processed")]
    assert outbox_keys(config) == ["ship:7001", "ship:7002"]
    assert files(inbox / "processed") == [bad.name]
    accepted = listing(runner, config, "--state", "accepted")["accepted"]["items"]
    assert [(b["source"], b["events"]) for b in accepted] == [(bad.name, 2)]


def test_retry_says_when_the_connector_cannot_requeue(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    runtime = build_runtime(make_config())
    try:
        with pytest.raises(InboxError, match="cannot put a rejected batch back"):
            requeue_rejected(
                runtime.engine,
                object(),
                "api",  # type: ignore[arg-type]
                runtime.connector_context(),
                "page-1",
            )
    finally:
        runtime.close()


# -- inbox retry --event ----------------------------------------------------------------------


def test_a_held_event_is_processed_after_retry_without_doubling_actions(
    runner: CliRunner,
    fake_site: Path,
    make_config: ConfigFactory,
    database_url: str,
    inbox: Path,
) -> None:
    warehouses = [*DEFAULT_WAREHOUSES, BUGGY]
    config = make_config(
        database_url=database_url,
        warehouses=warehouses,
        plugins={**DEFAULT_PLUGINS, "fake_raises": {"enabled": True}},
    )
    imported(config, "ITAKU", "2002")
    imported(config, "BUGGY", "2001")
    products(inbox)
    drop(
        inbox,
        "shipments-1.csv",
        SHIP_HEADER,
        [f"S-1,BUGGY,2001,T1,{AT},P-A,1", f"S-2,ITAKU,2002,T2,{AT},P-A,1"],
    )
    code, _out, _err = invoke(runner, config, "run", "--once")
    assert code == 1
    assert events(config) == [("shipment", "S-1", "held"), ("shipment", "S-2", "processed")]
    assert outbox_keys(config) == ["ship:2002"]

    code, _out, err = invoke(runner, config, "inbox", "retry", "--event", "shipment:S-2")
    assert code == 1 and "is processed, not held" in err
    code, _out, err = invoke(runner, config, "inbox", "retry", "--event", "receipt:S-1")
    assert code == 1 and "nebridge inbox list --state held" in err
    code, _out, err = invoke(runner, config, "inbox", "retry")
    assert code == 2 and "--event KIND:ID" in err
    code, _out, err = invoke(runner, config, "inbox", "retry", "x.csv", "--event", "S-1")
    assert code == 2

    # retried while the plugin is still broken: held again, nothing stored
    code, _out, err = invoke(runner, config, "inbox", "retry", "--event", "shipment:S-1")
    assert code == 0 and "pending again" in err
    assert listing(runner, config, "--state", "pending")["pending"]["items"][0]["reason"] is None
    invoke(runner, config, "run", "--once")
    (held,) = listing(runner, config, "--state", "held")["held"]["items"]
    assert held["external_id"] == "S-1" and held["attempts"] == 2
    assert outbox_keys(config) == ["ship:2002"]

    # the admin disables the broken plugin, then retries (the id alone is unambiguous)
    make_config(
        database_url=database_url,
        warehouses=warehouses,
        plugins={**DEFAULT_PLUGINS, "fake_raises": {"enabled": False}},
    )
    code, _out, err = invoke(runner, config, "inbox", "retry", "--event", "S-1")
    assert code == 0, err
    code, _out, err = invoke(runner, config, "run", "--once")
    assert code == 0, err
    assert events(config) == [("shipment", "S-1", "processed"), ("shipment", "S-2", "processed")]
    assert outbox_keys(config) == ["ship:2001", "ship:2002"]

    # held again after its actions were stored (e.g. set by hand), retried: nothing doubles
    engine = engine_for(config)
    try:
        with write_session(engine) as session:
            session.execute(
                update(InboxEvent)
                .where(InboxEvent.external_id == "S-1")
                .values(state="held", last_error="checked by hand")
            )
        code, _out, err = invoke(runner, config, "inbox", "retry", "--event", "shipment:S-1")
        assert code == 0, err
        invoke(runner, config, "run", "--once")
        with read_session(engine) as session:
            n_items = session.scalar(select(func.count()).select_from(OutboxItem))
    finally:
        engine.dispose()
    assert events(config)[0] == ("shipment", "S-1", "processed")
    assert n_items == 2 and outbox_keys(config) == ["ship:2001", "ship:2002"]


# -- crash between accepting and moving a file --------------------------------------------------

CRASH_AFTER_ACCEPT = """
import os, signal, sys
from pathlib import Path
from daemon.runtime import build_runtime

runtime = build_runtime(Path(sys.argv[1]))
connector, intake = runtime.connector, runtime.intake()
batches = connector.pending_batches

def crashing_batches(kind, ctx):
    for batch in batches(kind, ctx):
        # the events are committed to the database; die before the file is moved away
        batch.commit = lambda: os.kill(os.getpid(), signal.SIGKILL)
        yield batch

connector.pending_batches = crashing_batches
intake.run_once()
print("not killed")
"""


def test_a_crash_between_accepting_and_moving_a_file_loses_and_doubles_nothing(
    runner: CliRunner, make_config: ConfigFactory, inbox: Path
) -> None:
    config = make_config()
    imported(config, "ITAKU", "1001")
    products(inbox)
    drop(
        inbox,
        "shipments-1.csv",
        SHIP_HEADER,
        [f"S-1,ITAKU,1001,T1,{AT},P-A,1", f"S-2,ITAKU,,,{AT},P-B,2"],
    )
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_ACCEPT, str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert "not killed" not in crashed.stdout
    assert [x for _k, x, _s in events(config)] == ["S-1", "S-2"]  # committed before the kill
    assert files(inbox / ".claimed") == ["shipments-1.csv"]  # ... and the file not moved

    code, out, _err = invoke(runner, config, "run", "--once", "--json")
    report = json.loads(out)
    assert code == 0, report["problems"]
    assert report["intake"]["accepted"] == ["shipments-1.csv"]
    assert (report["intake"]["events"], report["intake"]["duplicates"]) == (0, 2)
    assert events(config) == [("shipment", "S-1", "processed"), ("shipment", "S-2", "processed")]
    assert outbox_keys(config) == ["ship:1001", "stock:shipment:S-2:P-B:stock_minus"]
    assert files(inbox / "processed") == ["shipments-1.csv"]
    assert files(inbox / ".claimed") == [] and files(inbox) == ["products.csv"]
    batches = listing(runner, config, "--state", "accepted")["accepted"]["items"]
    assert [(b["source"], b["events"], b["duplicates"]) for b in batches] == [
        ("shipments-1.csv", 0, 2),
        ("shipments-1.csv", 2, 0),
    ]


# -- arrival ----------------------------------------------------------------------------------


def test_two_files_arriving_together_are_both_accepted(
    runner: CliRunner, make_config: ConfigFactory, inbox: Path
) -> None:
    config = make_config()
    imported(config, "ITAKU", "1001", "1002")
    products(inbox)
    drop(inbox, "shipments-a.csv", SHIP_HEADER, [f"S-1,ITAKU,1001,T1,{AT},P-A,1"])
    drop(inbox, "shipments-b.csv", SHIP_HEADER, [f"S-2,ITAKU,1002,T2,{AT},P-B,1"])
    stamp = time.time() - 5
    for name in ("shipments-a.csv", "shipments-b.csv"):  # the very same mtime
        os.utime(inbox / name, (stamp, stamp))
    code, out, _err = invoke(runner, config, "run", "--once", "--json")
    report = json.loads(out)
    assert code == 0, report["problems"]
    assert sorted(report["intake"]["accepted"]) == ["shipments-a.csv", "shipments-b.csv"]
    assert [x for _k, x, _s in events(config)] == ["S-1", "S-2"]
    assert files(inbox / "processed") == ["shipments-a.csv", "shipments-b.csv"]


def test_the_running_daemon_takes_a_new_file_within_two_seconds(
    make_config: ConfigFactory, inbox: Path, tmp_path: Path
) -> None:
    daemon_log = tmp_path / "daemon.log"
    config = make_config(
        schedule={
            "interval_seconds": 60,
            "jitter_seconds": 0,
            "dispatch_interval_seconds": 60,
            "intake_poll_seconds": 1,
        }
    )
    products(inbox)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "--config", str(config), "run"],
        stdout=daemon_log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    engine = engine_for(config)
    try:

        def count(table: Any) -> int:
            with read_session(engine) as session:
                return int(session.scalar(select(func.count()).select_from(table)) or 0)

        deadline = time.monotonic() + 60
        while count(WmsProduct) == 0:  # the first intake pass has run: the daemon is up
            assert proc.poll() is None, daemon_log.read_text()
            assert time.monotonic() < deadline, daemon_log.read_text()
            time.sleep(0.05)
        drop(inbox, "shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,1001,T1,{AT},P-A,1"])
        dropped = time.monotonic()
        while count(InboxEvent) == 0 and time.monotonic() - dropped < 10:
            time.sleep(0.02)
        took = time.monotonic() - dropped
        assert count(InboxEvent) == 1, daemon_log.read_text()
        assert took < 2.0, f"taken {took:.2f} s after the drop (interval_seconds is 60)"
        with read_session(engine) as session:
            batch = session.scalars(select(InboxBatch)).one()
        assert (batch.source, batch.state) == ("shipments-1.csv", "accepted")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, daemon_log.read_text()
    finally:
        engine.dispose()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
