"""Fleet mode's operator commands beside running workers, on the CI PostgreSQL through the
real CLI (#19): ``run --once --company`` holds the company's lease (refused, naming the
worker, while one serves it); ``--company`` on a command that covers every company is a
usage error; two ``db upgrade`` of one new company at once both succeed; ``companies list``
shows each worker's last heartbeat and a footer for companies to reconnect."""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from daemon.cli import app
from daemon.fleet.hold import LeaseHeld, hold_company
from daemon.fleet.leases import LeaseKeeper
from daemon.fleet.runtime import FleetDatabase, company_schema
from daemon.testing.installation import write_config
from tests.fleet.test_fleet_cli import CODES, Fleet, company_file, connect, fleet

__all__ = ["fleet"]  # the fixture, used by name

ROOT = Path(__file__).resolve().parents[2]

#: Two processes run this at the same moment (argv: start time, database URL, code).
UPGRADE_AT_ONCE = (
    "import sys, time\n"
    "from daemon.fleet.runtime import upgrade_company\n"
    "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
    "print(upgrade_company(sys.argv[2], sys.argv[3]))\n"
)


def test_two_upgrades_of_one_new_company_at_once_both_succeed(fleet: Fleet) -> None:
    """Both processes create and migrate the same new schema at the same moment: the second
    waits for the first's advisory lock and finds it done (one failed before, on the
    schema's or alembic_version's creation)."""
    fleet_db = FleetDatabase(fleet.url)
    try:
        for code in ("cove", "dune"):
            company_file(fleet.companies, code, fleet.config.parent)
            start = str(time.time() + 4.0)  # both imported by then, even on a busy machine
            runs = [
                subprocess.Popen(
                    [sys.executable, "-c", UPGRADE_AT_ONCE, start, fleet.url, code],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            outcomes = [run.communicate(timeout=180) for run in runs]
            assert [run.returncode for run in runs] == [0, 0], outcomes
            # (before, after): one created the schema, the other found it at the head
            first, second = sorted(
                (ast.literal_eval(out.strip()) for out, _err in outcomes),
                key=lambda revisions: revisions[0] is not None,
            )
            assert first[0] is None and first[1] == second[0] == second[1], outcomes
            listed = json.loads(fleet.cli("companies", "list", "--json").stdout)
            row = next(r for r in listed["companies"] if r["code"] == code)
            assert row["error"] is None, row
    finally:
        with fleet_db.engine.begin() as connection:
            for code in ("cove", "dune"):
                schema = company_schema(code, fleet_db.base_schema)
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        fleet_db.close()


def lease_row(fleet: Fleet, code: str) -> tuple[str | None, int]:
    """The holder and epoch of ``code``'s lease (holder None when free)."""
    engine = FleetDatabase(fleet.url).engine
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT holder, epoch FROM fleet_lease WHERE company = :c"), {"c": code}
            ).one()
    finally:
        engine.dispose()
    return row.holder, int(row.epoch)


def test_run_once_for_a_company_holds_its_lease_and_is_refused_while_a_worker_serves_it(
    fleet: Fleet,
) -> None:
    assert connect(fleet, "acme").exit_code == 0
    engine = FleetDatabase(fleet.url).engine
    keeper = LeaseKeeper(engine, CODES, lease_seconds=30.0, worker_id="host-a:1:w")
    try:
        keeper.tick()  # the worker holds both companies
        holder, epoch = lease_row(fleet, "acme")
        assert holder == "host-a:1:w"
        for args in (["--once"], ["--once", "--dry-run"]):
            refused = fleet.cli("run", *args, "--company", "acme", "--json")
            assert refused.exit_code == 1, refused.output
            error = json.loads(refused.stdout)["error"]
            assert f"served by worker host-a:1:w on host {socket.gethostname()}" in error
            assert "systemctl stop nebridge" in error and "companies list" in error
            assert lease_row(fleet, "acme") == ("host-a:1:w", epoch)  # untouched
        keeper.stop()  # the worker stops: the company is free
        for args in (["--once"], ["--once", "--dry-run"]):  # the pass makes the folders
            done = fleet.cli("run", *args, "--company", "acme", "--json")
            report = json.loads(done.stdout)  # exit 1: sandbox orders held, for a person
            assert done.exit_code == (0 if report["ok"] else 1), done.output
            assert report["dry_run"] == ("--dry-run" in args) and report["problems"] == []
            assert report["stages"] and report["attention"]["total"], report  # it ran
            epoch += 1  # it took the lease (a new epoch fencing its work) and released it
            assert lease_row(fleet, "acme") == (None, epoch)
        # the other company was never touched, and a worker takes both again
        assert lease_row(fleet, "bolt")[0] is None
        keeper.tick()
        assert lease_row(fleet, "acme") == ("host-a:1:w", epoch + 1)
    finally:
        keeper.stop()
        engine.dispose()


def test_run_once_in_fleet_mode_needs_a_company_and_run_takes_none(fleet: Fleet) -> None:
    once = fleet.cli("run", "--once")
    assert once.exit_code == 2 and "pass --company CODE" in once.stderr
    serve = fleet.cli("run", "--company", "acme")
    assert serve.exit_code == 2 and "drop --company acme" in serve.stderr


def test_a_commands_hold_is_renewed_and_released_on_ctrl_c(fleet: Fleet) -> None:
    """The hold of a command keeps workers off the company while it runs (renewed past its
    lease time), fences with a new epoch, and is released when the command is interrupted."""
    fleet_db = FleetDatabase(fleet.url)
    keeper = LeaseKeeper(fleet_db.engine, CODES, lease_seconds=30.0, worker_id="host-b:2:w")
    try:
        with (
            pytest.raises(KeyboardInterrupt),
            hold_company(fleet_db.control, "acme", lease_seconds=1.5, what="x") as lease,
        ):
            holder, epoch = lease_row(fleet, "acme")
            assert holder is not None and ":cli-" in holder and epoch == lease.epoch
            time.sleep(2.5)  # past its lease time: renewed meanwhile
            assert keeper.tick().held == ("bolt",)  # the worker cannot take acme
            with (
                pytest.raises(LeaseHeld, match=r"held by another command, .*:cli-"),
                hold_company(fleet_db.control, "acme", lease_seconds=5, what="y"),
            ):
                pass
            raise KeyboardInterrupt
        assert lease_row(fleet, "acme") == (None, lease.epoch)
        assert "acme" in keeper.tick().held
    finally:
        keeper.stop()
        fleet_db.close()


def test_company_on_a_command_covering_every_company_is_a_usage_error(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Nothing takes --company and ignores it (#19): these read or write daemon.yaml and the
    fleet as a whole."""
    for command in (
        ["companies", "list"],
        ["companies", "rotate-key"],
        ["config", "check"],
        ["config", "example"],
        ["systemd", "unit"],
        ["demo", "--dir", str(tmp_path / "demo")],
        ["plugins", "new", "shiny", "--dir", str(tmp_path / "shiny")],
    ):
        refused = fleet.cli(*command, "--company", "acme")
        assert refused.exit_code == 2, (command, refused.output)
        assert "covers every company" in refused.stderr and "drop --company acme" in refused.stderr
    assert not (tmp_path / "demo").exists() and not (tmp_path / "shiny").exists()
    as_json = fleet.cli("companies", "list", "--json", "--company", "acme")
    assert as_json.exit_code == 2 and "drop --company" in json.loads(as_json.stdout)["error"]
    from_env = fleet.cli("config", "check", env={"NEBRIDGE_COMPANY": "bolt"})
    assert from_env.exit_code == 2 and "unset NEBRIDGE_COMPANY (set to bolt)" in from_env.stderr
    # the commands with a per-company form still take it
    assert fleet.cli("db", "upgrade", "--company", "acme").exit_code == 0
    assert fleet.cli("status", "--company", "acme", "--json").exit_code == 0
    assert fleet.cli("plugins", "list", "--company", "acme", "--json").exit_code == 0


def test_company_other_than_default_without_companies_dir_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "single")
    for command in (["status"], ["run", "--once"], ["stock", "diff"], ["orders", "list"]):
        result = CliRunner().invoke(app, ["--config", str(config), "--company", "acme", *command])
        assert result.exit_code == 1, (command, result.output)
        assert "sets no `companies_dir`" in result.stderr and "drop --company" in result.stderr
    whole = CliRunner().invoke(app, ["--config", str(config), "--company", "acme", "db", "current"])
    assert whole.exit_code == 1 and "sets no `companies_dir`" in whole.stderr


def test_companies_list_shows_each_workers_last_heartbeat_and_sets_long_gone_ones_apart(
    fleet: Fleet,
) -> None:
    with fleet.config.open("a", encoding="utf-8") as config:
        config.write("timezone: Asia/Tokyo\n")
    engine = FleetDatabase(fleet.url).engine
    keeper = LeaseKeeper(engine, CODES, lease_seconds=30.0, worker_id="host-a:1:w")
    try:
        keeper.tick()
        with engine.begin() as connection:  # one stopped 10 min ago, one 2 days ago
            for worker, stopped in (("host-b:2:w", "10 minutes"), ("host-c:3:w", "2 days")):
                connection.execute(
                    text(
                        "INSERT INTO fleet_worker (worker_id, host, pid, started_at, "
                        "heartbeat_at, expires_at) VALUES (:w, :h, 7, now() - interval '3 days',"
                        f" now() - interval '{stopped}' - interval '30 seconds', "
                        f"now() - interval '{stopped}')"
                    ),
                    {"w": worker, "h": worker.split(":")[0]},
                )
        data = json.loads(fleet.cli("companies", "list", "--json").stdout)
        workers = {w["worker_id"]: w for w in data["workers"]}
        assert sorted(workers) == ["host-a:1:w", "host-b:2:w"]
        assert workers["host-a:1:w"]["live"] and workers["host-a:1:w"]["companies"] == 2
        assert workers["host-a:1:w"]["seconds_since_heartbeat"] < 60
        assert not workers["host-b:2:w"]["live"]
        assert 600 <= workers["host-b:2:w"]["seconds_since_heartbeat"] < 700
        assert [w["worker_id"] for w in data["workers_gone"]] == ["host-c:3:w"]
        assert data["workers_gone"][0]["heartbeat_at"] and data["totals"]["workers_gone"] == 1
        for command in (["companies", "list"], ["status"]):
            shown = fleet.cli(*command)
            assert shown.exit_code == 0, shown.output
            table = shown.stdout
            assert "host-a:1:w" in table and "host-b:2:w" in table and "host-c:3:w" not in table
            assert "DEAD" in table and "10 min ago" in table
            assert "+09:00" in table  # daemon.yaml's time zone, as `status` shows times
            assert "1 worker(s) stopped more than an hour ago are not shown" in table
    finally:
        keeper.stop()
        engine.dispose()


def test_companies_needing_a_reconnect_end_companies_list_and_status(fleet: Fleet) -> None:
    from daemon.nelink import mark_needs_reconnect

    for code in CODES:
        assert connect(fleet, code).exit_code == 0
    fleet_db = FleetDatabase(fleet.url)
    try:
        mark_needs_reconnect(fleet_db.company_engine("bolt"), "the refresh token was refused")
    finally:
        fleet_db.close()
    data = json.loads(fleet.cli("companies", "list", "--json").stdout)
    states = {row["code"]: row["link"]["state"] for row in data["companies"]}
    assert states == {"acme": "connected", "bolt": "needs_reconnect"}
    assert data["totals"]["needs_reconnect"] == 1
    for command in (["companies", "list"], ["status"]):
        lines = fleet.cli(*command).stdout.rstrip("\n").splitlines()
        assert "1 company(ies) need a reconnect to Next Engine" in lines[-2], lines
        assert lines[-1].strip().startswith("nebridge connect --company bolt  (")
        assert "refresh token was refused" in lines[-1]
        assert "--company acme" not in "\n".join(lines[-2:])


def test_a_lease_left_by_a_worker_without_heartbeat_says_when_it_runs_out(fleet: Fleet) -> None:
    engine = FleetDatabase(fleet.url).engine
    keeper = LeaseKeeper(engine, CODES, lease_seconds=30.0, worker_id="host-d:4:w")
    try:
        keeper.tick()
        with engine.begin() as connection:  # its heartbeat ran out, its leases not yet
            connection.execute(
                text("UPDATE fleet_worker SET expires_at = now() - interval '1 second'")
            )
        refused = fleet.cli("run", "--once", "--company", "bolt")
        assert refused.exit_code == 1
        assert "still held by worker host-d:4:w" in refused.stderr
        assert "stopped renewing (no heartbeat): its lease runs out in" in refused.stderr
        assert lease_row(fleet, "bolt")[0] == "host-d:4:w"
    finally:
        keeper.stop()
        engine.dispose()
