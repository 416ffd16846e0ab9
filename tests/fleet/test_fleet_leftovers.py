"""Fleet operator leftovers (issue #19): a reload retries every failed company at once, a
pipeline run whose database went away is not logged as a failure of its own, unlink waits
for the worker (or single-company daemon) that may be sending what it removes."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import make_url
from typer.testing import CliRunner

import hooks.notify
from daemon import attention
from daemon.attention import AttentionItem, AttentionKind
from daemon.cli import app, common
from daemon.config import load_config
from daemon.fleet.companies import Companies, Company
from daemon.fleet.leases import Lease, LeaseKeeper, fleet_engine
from daemon.fleet.runtime import FleetDatabase
from daemon.fleet.worker import FleetWorker
from daemon.instancelock import InstanceLock
from daemon.logsetup import configure_logging, log_context
from daemon.nelink import mark_needs_reconnect
from daemon.pipeline import Stage
from daemon.runtime import build_runtime
from daemon.store.engine import DatabaseUnavailable, make_engine, upgrade, write_session
from daemon.store.models import ImportedOrder, InboxBatch, InboxEvent, OutboxItem, utcnow
from hooks.records import Problem
from tests.conftest import ConfigFactory
from tests.fleet.test_fleet_cli import CODES, Fleet, connect, fleet
from tests.fleet.test_fleet_cli_fence import lease_row
from tests.fleet.test_worker import Recorder, company_file

__all__ = ["fleet"]  # the fixture, used by name
from tests.pgproxy import TcpProxy


def test_sighup_retries_a_hung_company_at_once_though_its_file_did_not_change(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> None:
    """A plugin that hung at start and then failed is paused (a minute); the operator fixes
    the plugin — no company file changes — and sends SIGHUP: the company starts at the next
    round, and what showed it as not served is cleared."""
    folder = tmp_path / "companies"
    folder.mkdir()
    company_file(folder, "a")
    release = threading.Event()
    fixed = threading.Event()
    recorder = Recorder()

    def start(company: Company, lease: Lease) -> Recorder.Service:
        if not fixed.is_set():
            release.wait()
            raise RuntimeError("plugin broken")
        return recorder.start(company, lease)

    config = make_config(database_url=fleet_url, companies_dir="companies")
    engine = fleet_engine(fleet_url, lease_seconds=30.0)
    started: list[str] = []
    worker = FleetWorker(
        Companies(load_config(config)),
        engine,
        start,
        lease_seconds=30.0,
        start_seconds=0.2,
        worker_id="w",
        on_started=lambda company: started.append(company.code),
    )
    try:
        worker.step()
        deadline = time.monotonic() + 10
        while not worker.failures() and time.monotonic() < deadline:
            time.sleep(0.05)
            worker.step()  # given up past the start deadline
        assert list(worker.failures()) == ["a"]
        release.set()  # the hung start returns, failing
        while worker.failures()["a"].failures < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        failure = worker.failures()["a"]
        assert failure.failures == 2 and failure.retry_at > time.monotonic() + 30
        fixed.set()  # the plugin fixed; no company file changed
        worker.step()
        assert worker.serving() == [] and worker.starting() == []  # still paused
        worker.request_reload()  # what SIGHUP does
        worker.step()
        while worker.starting() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.serving() == ["a"] and worker.failures() == {}
        assert started == ["a"]  # the attention item showing it failed is resolved
    finally:
        release.set()
        stop = threading.Event()
        stop.set()
        worker.serve(stop)
        engine.dispose()


def test_a_run_whose_database_went_away_is_left_to_the_job_runner(
    make_config: ConfigFactory, fleet_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker resumed after SIGSTOP past its lease finds its database session ended: the
    stage's run cannot be recorded. That is the outage the job runner logs once, not an
    ERROR with a traceback from the pipeline: DatabaseUnavailable goes up to it."""
    target = make_url(fleet_url)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        via_proxy = target.set(host="127.0.0.1", port=proxy.port)
        config = make_config(
            migrate=False, database_url=via_proxy.render_as_string(hide_password=False)
        )
        runtime = build_runtime(config)
        try:
            # a warehouse without the order import: its stage touches no database
            pipeline = next(p for p in runtime.pipelines() if not p.warehouse.import_orders)
            proxy.stop()  # the database session ends under the paused worker
            caplog.clear()
            with pytest.raises(DatabaseUnavailable):
                pipeline.run_once(stages=[Stage.IMPORT_ORDERS])
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        finally:
            runtime.close()


def exports(folder: Path) -> list[Path]:
    """The files unlink exported unfinished work to, anywhere under ``folder``."""
    return sorted(folder.rglob("unlink-export-*.json"))


def test_unlink_for_a_company_holds_its_lease_and_is_refused_while_a_worker_serves_it(
    fleet: Fleet,
) -> None:
    """unlink removes the unfinished actions a worker may be sending: refused, naming the
    worker and what to do, while one serves the company; it holds the lease otherwise."""
    assert connect(fleet, "acme").exit_code == 0
    root = fleet.config.parent
    engine = FleetDatabase(fleet.url).engine
    keeper = LeaseKeeper(engine, CODES, lease_seconds=30.0, worker_id="host-a:1:w")
    try:
        keeper.tick()
        held = lease_row(fleet, "acme")
        refused = fleet.cli("unlink", "--company", "acme", "--yes", "--json")
        assert refused.exit_code == 1, refused.output
        error = json.loads(refused.stdout)["error"]
        assert f"served by worker host-a:1:w on host {socket.gethostname()}" in error
        assert "removes the unfinished actions that worker may be sending" in error
        assert "systemctl stop nebridge" in error and "then start them" in error
        assert lease_row(fleet, "acme") == held and exports(root) == []  # nothing done
        keeper.stop()  # the workers stopped
        done = fleet.cli("unlink", "--company", "acme", "--yes", "--json")
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["unlinked"] is True and len(exports(root)) == 1
        assert lease_row(fleet, "acme") == (None, held[1] + 1)  # taken, then released
    finally:
        keeper.stop()
        engine.dispose()


def test_unlink_is_refused_beside_a_running_single_company_daemon(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """As in fleet mode: unlink waits for the daemon that may be sending the actions it
    removes (it takes the instance lock, as `run --once` does)."""
    config_path = make_config()
    config = load_config(config_path).config
    engine = make_engine(config.resolved_database_url)
    daemon = InstanceLock(config, engine)
    try:
        assert daemon.try_acquire()  # the daemon runs
        refused = CliRunner().invoke(
            app, ["--config", str(config_path), "unlink", "--yes", "--json"]
        )
        assert refused.exit_code == 1, refused.output
        error = json.loads(refused.stdout)["error"]
        assert "another nebridge process" in error and "systemctl stop nebridge" in error
        assert exports(tmp_path) == []  # nothing done
        daemon.release()
        done = CliRunner().invoke(app, ["--config", str(config_path), "unlink", "--yes"])
        assert done.exit_code == 0, done.output
        assert len(exports(tmp_path)) == 1
    finally:
        daemon.release()
        engine.dispose()


def test_the_counts_only_read_counts_what_collect_counts(database_url: str) -> None:
    """The metrics refresh reads attention.counts (one statement, no item read): the same
    counts as collect, kind by kind, for every warehouse and for one, live items included."""
    engine = make_engine(database_url)
    upgrade(engine)
    try:
        with write_session(engine) as session:
            for n, (warehouse, state) in enumerate(
                [("W1", "held"), ("W2", "held"), ("W1", "done"), ("W2", "held")]
            ):
                session.add(ImportedOrder(ne_order_id=f"O-{n}", warehouse=warehouse, state=state))
                session.add(
                    InboxEvent(
                        kind="shipment",
                        external_id=f"S-{n}",
                        warehouse=warehouse,
                        content_hash="0" * 64,
                        payload="{}",
                        source="s.csv",
                        state=state,
                    )
                )
            for n, (warehouse, state) in enumerate(
                [("W1", "failed"), ("W2", "failed"), ("W2", "in_doubt"), ("W1", "pending")]
            ):
                session.add(
                    OutboxItem(
                        idempotency_key=f"k-{n}",
                        kind="ship_order",
                        warehouse=warehouse,
                        plugin="p",
                        subject=f"O-{n}",
                        payload="{}",
                        state=state,
                    )
                )
            for n, state in enumerate(["rejected", "rejected", "done"]):
                session.add(InboxBatch(source=f"f-{n}.csv", kind="shipment", state=state))
        for key, warehouse in (("a", "W1"), ("b", "W2"), ("c", "")):
            attention.report(
                engine,
                Problem(
                    key=f"wms_mismatch:{key}",
                    kind=AttentionKind.WMS_MISMATCH,
                    reason="r",
                    fix="f",
                    warehouse=warehouse,
                ),
            )
        attention.resolve(engine, ["wms_mismatch:b"])
        live = [
            AttentionItem(
                kind=AttentionKind.PAUSED_STAGE, key="p", reason="r", fix="f", since=utcnow()
            )
        ]
        assert attention.counts(engine, live=live) == {
            "held_order": 3,
            "held_event": 3,
            "failed_action": 2,
            "in_doubt_action": 1,
            "rejected_file": 2,
            "wms_mismatch": 2,
            "paused_stage": 1,
        }
        for warehouse in (None, "W1", "W2", "W3"):
            assert (
                attention.counts(engine, live=live, warehouse=warehouse)
                == attention.collect(engine, live=live, limit=0, warehouse=warehouse).counts
            )
        assert attention.counts(engine, warehouse="W2") == {
            "held_order": 2,
            "held_event": 2,
            "failed_action": 1,
            "in_doubt_action": 1,
            "rejected_file": 2,
            "wms_mismatch": 1,
        }
    finally:
        engine.dispose()


def suggested(text: str) -> list[str]:
    """Every command ``text`` suggests (`nebridge …`)."""
    return re.findall(r"`nebridge ([^`]*)`", text)


def test_every_command_a_company_command_suggests_carries_its_company(fleet: Fleet) -> None:
    """The hints of commands run with --company — on stderr, in --json errors, by info,
    fail or echo — name the company, so the operator can run them as they are; the
    commands covering every company (which refuse --company) are left as they are."""
    shared = FleetDatabase(fleet.url)
    try:
        with write_session(shared.company_engine("acme")) as session:
            session.add(
                InboxEvent(
                    kind="shipment",
                    external_id="S-1",
                    warehouse="MAIN",
                    content_hash="0" * 64,
                    payload="{}",
                    source="s.csv",
                    state="held",
                    received_at=utcnow(),
                )
            )
    finally:
        shared.close()
    runs = {
        "retried": fleet.cli("inbox", "retry", "--event", "shipment:S-1", "--company", "acme"),
        "usage": fleet.cli("inbox", "retry", "--company", "acme"),
        "unknown order": fleet.cli("history", "--order", "9", "--company", "acme"),
        "warehouse (json)": fleet.cli(
            "stock", "diff", "--warehouse", "NOPE", "--json", "--company", "acme"
        ),
        "by env": fleet.cli("inbox", "retry", env={"NEBRIDGE_COMPANY": "acme"}),
    }
    assert runs["retried"].exit_code == 0, runs["retried"].output
    assert "`nebridge run --once --company acme`" in runs["retried"].stderr
    assert "`nebridge inbox list --company acme`" in runs["usage"].stderr
    assert json.loads(runs["warehouse (json)"].stdout)["error"].endswith(
        "`nebridge warehouses list --company acme` shows them"
    )
    for what, run in runs.items():
        commands = suggested(run.stdout + run.stderr)
        assert commands, (what, run.output)
        assert all(c.endswith("--company acme") for c in commands), (what, commands)
    # the same commands for the other company name it; a fleet-wide one names none
    other = fleet.cli("inbox", "retry", "--company", "bolt")
    assert suggested(other.stderr) == ["inbox list --company bolt"]
    refused = fleet.cli("config", "check", "--company", "acme")
    assert refused.exit_code == 2 and suggested(refused.stderr) == ["config check"]
    assert hooks.notify.EVERY_COMPANY == common.EVERY_COMPANY  # the hints left alone


def test_a_company_jobs_log_lines_name_the_company_in_their_commands(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker's reconnect line (logged in a company job, whose log context names the
    company, as the scheduler sets it) says `nebridge connect --company CODE`."""
    for code in CODES:
        assert connect(fleet, code).exit_code == 0
    shared = FleetDatabase(fleet.url)
    configure_logging("INFO")
    capsys.readouterr()
    try:
        with log_context(company="acme"):
            mark_needs_reconnect(shared.company_engine("acme"), "the refresh token was refused")
        mark_needs_reconnect(shared.company_engine("bolt"), "no company in the context")
    finally:
        shared.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if "re-connection" in line]
    assert len(lines) == 2, lines
    assert "`nebridge connect --company acme`" in lines[0] and "[company=acme]" in lines[0]
    assert "`nebridge connect` " in lines[1]  # no company: unchanged
