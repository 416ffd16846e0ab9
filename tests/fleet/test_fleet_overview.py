"""The fleet overview and a worker's start failures as the operator sees them (fleet review F3,
F4, F6), on the CI PostgreSQL: a company held but not started is not counted as served; a
company added before ``db upgrade`` is logged once with that fix and writes nothing into its
missing tables; footers give each company's own command; a refused file is not "taken within
one lease time"."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.fleet.companies import Companies, Company
from daemon.fleet.leases import Lease, LeaseKeeper, fleet_engine
from daemon.fleet.runtime import FleetDatabase, company_runtime
from daemon.fleet.worker import FleetWorker
from tests.conftest import ConfigFactory
from tests.fleet import test_fleet_cli as fleet_cli
from tests.fleet.test_fleet_exclusive import company
from tests.fleet.test_worker import step

fleet = fleet_cli.fleet  # the fixture: an installation in fleet mode with two companies


def test_a_company_without_tables_is_logged_once_with_the_db_upgrade_fix(
    make_config: ConfigFactory,
    fleet_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real runtime refuses a company with no schema yet: one ERROR saying `nebridge db
    upgrade` (not "fix its file … SIGHUP"), not one per round, and no attention item written
    into tables that do not exist (no raw-SQL warning)."""
    folder = tmp_path / "companies"
    folder.mkdir()
    company(folder, "zeta", tmp_path / "zeta" / "in", tmp_path / "zeta" / "out")
    loaded = load_config(make_config(database_url=fleet_url, companies_dir="companies"))
    shared = FleetDatabase(fleet_url)
    engine = fleet_engine(fleet_url, lease_seconds=10.0)
    told: list[str] = []

    def start(item: Company, lease: Lease) -> object:
        return company_runtime(loaded, item, lease=lease, fleet=shared)

    worker = FleetWorker(
        Companies(loaded),
        engine,
        start,  # type: ignore[arg-type]
        lease_seconds=10.0,
        on_failed=lambda item, reason: told.append(item.code),
    )
    caplog.set_level(logging.INFO, logger="daemon.fleet")
    try:
        for _ in range(3):
            step(worker)
        assert worker.keeper.held().keys() == {"zeta"} and worker.serving() == []
    finally:
        worker.keeper.stop()
        engine.dispose()
        shared.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, errors
    assert "company zeta: its service did not start: company 'zeta' has no tables" in errors[0]
    assert "run `nebridge db upgrade` (the next round starts it)" in errors[0]
    assert "fix its file" not in errors[0] and "tries again each round" in errors[0]
    assert told == []  # its attention item cannot exist before its tables


def test_status_and_companies_list_tell_held_from_served_and_name_each_company(
    fleet: fleet_cli.Fleet,
) -> None:
    """zeta (no tables yet) is held but not started: `status` does not count it as served and
    `companies list` says so; the not-connected footer gives one pasteable command per
    company; a refused file is not "taken within one lease time" and has no `<root>`."""
    root = fleet.companies.parent
    company(fleet.companies, "zeta", root / "zeta" / "in", root / "zeta" / "out")
    engine = FleetDatabase(fleet.url).engine
    try:
        gone = LeaseKeeper(engine, ["delta"], lease_seconds=30.0, worker_id="host-b:2:w")
        gone.tick()
        gone.stop()  # delta's lease row stays, held by nobody
        keeper = LeaseKeeper(
            engine, [*fleet_cli.CODES, "zeta"], lease_seconds=30.0, worker_id="host-a:1:w"
        )
        keeper.tick()
        (fleet.companies / "delta.yaml").write_text("- a list\n", encoding="utf-8")

        listed = fleet.cli("companies", "list", "--json")
        data = json.loads(listed.stdout)
        rows = {row["code"]: row for row in data["companies"]}
        assert rows["zeta"]["served_by"] == "host-a:1:w"
        assert "no tables yet" in rows["zeta"]["not_started"]
        assert rows["acme"]["not_started"] is None
        assert data["not_started"] == ["zeta"] and data["unserved"] == ["delta"]
        assert data["totals"]["served"] == 2 and data["totals"]["not_started"] == 1

        status = fleet.cli("status")
        assert "companies: 4 (2 served, 1 held but not started, 1 unserved" in status.stdout
        assert "zeta: no tables yet" in status.stdout
        human = fleet.cli("companies", "list")
        assert "host-a:1:w (not started)" in human.stdout
        for code in ("acme", "bolt", "zeta"):
            assert f"  nebridge connect --company {code}\n" in human.stdout
        assert "--company CODE" not in human.stdout
        assert "not served because their file is refused" in human.stdout
        assert "within one lease time" not in human.stdout  # delta is the only unserved
        assert "<root>" not in human.output
        assert "the top level must be a mapping" in human.output
        keeper.stop()
    finally:
        engine.dispose()
