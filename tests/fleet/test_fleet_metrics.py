"""A fleet worker's ``/metrics`` on the CI PostgreSQL, scraped over HTTP: each company's series
under its code, read from a cache the refresher keeps (a scrape reads no table), a company no
longer served dropped, one whose tables cannot be read left out without hiding the others; and
a real worker (``FleetDaemon``, two companies each with its own Next Engine sandbox) whose
figures follow the work it does and the lease it loses."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.daemon import FleetDaemon
from daemon.fleet.leases import LeaseKeeper
from daemon.fleet.metrics import FleetMetrics, WorkerFigures
from daemon.fleet.runtime import FleetDatabase, company_runtime, upgrade_company
from daemon.fleet.vault import KEY_CREDENTIAL, load_keys
from daemon.nelink import connect
from daemon.runtime import Runtime
from daemon.sandbox import SandboxServer
from daemon.testing.installation import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEFAULT_PLUGINS,
    DEFAULT_WAREHOUSES,
    PRODUCTS_HEADER,
    RECEIPT_HEADER,
    Installation,
    drop_file,
    kit_sandbox_config,
    write_config,
)
from tests.conftest import PG_ENV, PG_SKIP, ConfigFactory, dump_yaml

ROOT = Path(__file__).resolve().parents[2]

#: (sample name, sorted label pairs) -> value
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Scrape:
    """One scrape of ``/metrics`` over HTTP, parsed."""
    answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    answer.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def of(figures: Scrape, name: str, **labels: str) -> float | None:
    return figures.get((name, tuple(sorted(labels.items()))))


def companies_in(figures: Scrape) -> set[str]:
    return {dict(labels)["company"] for _, labels in figures if "company" in dict(labels)}


def wait_for(
    what: str, port: int, condition: Callable[[Scrape], bool], timeout: float = 30
) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        try:
            figures = scrape(port)
        except requests.ConnectionError:  # the worker is not serving yet
            figures = {}
        if figures and condition(figures):
            return figures
        assert time.monotonic() < deadline, f"{what}: {sorted(figures)}"
        time.sleep(0.1)


def company_file(folder: Path, code: str, wms: Path) -> None:
    (folder / f"{code}.yaml").write_text(
        dump_yaml(
            {
                "wms": {
                    "connector": "csv",
                    "csv": {
                        "inbox": str(wms / "in"),
                        "outbox": str(wms / "out"),
                        "stable_seconds": 0.0,
                    },
                },
                "warehouses": [{"code": "MAIN", "ne_linked": True}],
            }
        ),
        encoding="utf-8",
    )


@pytest.fixture
def two_companies(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> Iterator[tuple[FleetDatabase, dict[str, Runtime]]]:
    """Companies acme and bolt, migrated, leased and each with its fenced runtime."""
    folder = tmp_path / "companies"
    folder.mkdir()
    for code in ("acme", "bolt"):
        company_file(folder, code, tmp_path / code)
    loaded = load_config(
        make_config(migrate=False, database_url=fleet_url, companies_dir="companies")
    )
    companies = Companies(loaded)
    fleet = FleetDatabase(fleet_url, lease_seconds=30.0)
    keeper = LeaseKeeper(fleet.engine, companies.companies, lease_seconds=30.0, worker_id="w1")
    runtimes: dict[str, Runtime] = {}
    try:
        for code in ("acme", "bolt"):
            upgrade_company(fleet_url, code)
        keeper.tick()
        for code in ("acme", "bolt"):
            runtimes[code] = company_runtime(
                loaded, companies.companies[code], lease=keeper.lease(code), fleet=fleet
            )
        yield fleet, runtimes
    finally:
        for runtime in runtimes.values():
            runtime.close()
        keeper.stop()
        fleet.close()


def test_each_company_is_reported_under_its_code_from_a_cache_read_by_the_refresher(
    two_companies: tuple[FleetDatabase, dict[str, Runtime]], tmp_path: Path
) -> None:
    _, runtimes = two_companies
    now = [1000.0]
    metrics = FleetMetrics(refresh_seconds=60.0, clock=lambda: now[0])
    calls = {code: metrics.calls(code) for code in runtimes}
    for code, runtime in runtimes.items():
        metrics.watch(code, runtime.db, runtime.host)
        runtime.metrics = calls[code]
    metrics.watch_worker(
        lambda: WorkerFigures(
            worker_id="host-1:42",
            held=3,
            serving=2,
            starting=0,
            failed=1,
            job_slots=8,
            jobs_running=2,
            jobs_waiting=5,
            lease_renewals=17,
            leases_lost=1,
        )
    )
    metrics.serve("127.0.0.1", 0)
    port = metrics.port
    assert port is not None
    try:
        first = wait_for(
            "both companies read at the first pass",
            port,
            lambda f: {"acme", "bolt"} <= companies_in(f),
        )
        for code in ("acme", "bolt"):  # every attention kind, 0 included, per company
            assert of(first, "nebridge_attention", company=code, kind="in_doubt_action") == 0
            assert of(first, "nebridge_fleet_company_figures_age_seconds", company=code) == 0
        assert not any(name == "nebridge_events_in_total" for name, _ in first)
        assert of(first, "nebridge_fleet_worker_info", worker="host-1:42") == 1
        assert of(first, "nebridge_fleet_companies", state="held") == 3
        assert of(first, "nebridge_fleet_companies", state="failed") == 1
        assert of(first, "nebridge_fleet_jobs_running") == 2
        assert of(first, "nebridge_fleet_jobs_waiting") == 5
        assert of(first, "nebridge_fleet_lease_renewals_total") == 17
        assert of(first, "nebridge_fleet_leases_lost_total") == 1

        drop_file(tmp_path / "acme" / "in", "products.csv", PRODUCTS_HEADER, ["P-1,G-1", "P-2,G-2"])
        drop_file(
            tmp_path / "acme" / "in",
            "receipts-1.csv",
            RECEIPT_HEADER,
            ["R-1,MAIN,2026-11-27 10:00:00,P-1,3", "R-2,MAIN,2026-11-27 10:00:00,P-2,1"],
        )
        intake = runtimes["acme"].intake()
        assert intake is not None
        intake.run_once()
        now[0] += 30.0  # half the refresh time: the scrape serves the cache, reads no table
        cached = scrape(port)
        assert not any(name == "nebridge_events_in_total" for name, _ in cached)
        assert of(cached, "nebridge_fleet_company_figures_age_seconds", company="acme") == 30

        now[0] += 30.0  # due: the refresher's next pass reads acme's tables again
        fresh = wait_for(
            "acme's events read again",
            port,
            lambda f: (
                of(f, "nebridge_events_in_total", company="acme", kind="receipt", warehouse="MAIN")
                == 2
            ),
        )
        assert (
            of(fresh, "nebridge_events_in_total", company="bolt", kind="receipt", warehouse="MAIN")
            is None
        )
        assert (
            of(fresh, "nebridge_inbox_events", company="acme", kind="receipt", state="pending") == 2
        )

        calls["acme"].observe_call("/api_v1_login_user/info", "success")
        counted = scrape(port)
        assert (
            of(
                counted,
                "nebridge_nextengine_calls_total",
                company="acme",
                endpoint="/api_v1_login_user/info",
                result="success",
            )
            == 1
        )

        metrics.forget("acme")  # moved to another worker: its holder reports it now
        gone = scrape(port)
        assert companies_in(gone) == {"acme", "bolt"}  # acme's call counter stays
        assert {
            dict(labels)["company"]
            for name, labels in gone
            if "company" in dict(labels) and not name.startswith("nebridge_nextengine_calls")
        } == {"bolt"}
    finally:
        metrics.stop()


def test_a_company_whose_tables_cannot_be_read_is_left_out_and_the_others_are_served(
    two_companies: tuple[FleetDatabase, dict[str, Runtime]], caplog: pytest.LogCaptureFixture
) -> None:
    fleet, runtimes = two_companies
    metrics = FleetMetrics(refresh_seconds=60.0)
    metrics.watch("acme", runtimes["acme"].db, runtimes["acme"].host)
    metrics.watch("ghost", fleet.company_engine("ghost"))  # no schema: never migrated
    with caplog.at_level(logging.WARNING, logger="daemon.fleet.metrics"):
        assert metrics.refresh() == 1
        assert metrics.refresh() == 0  # ghost tried again only when due
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "company ghost: its metrics could not be read" in warnings[0]
    metrics.serve("127.0.0.1", 0)
    assert metrics.port is not None
    try:
        figures = scrape(metrics.port)
        assert companies_in(figures) == {"acme"}
    finally:
        metrics.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_running_worker_serves_its_companies_figures_as_they_work_and_drops_a_lost_one(
    fleet_url: str, tmp_path: Path
) -> None:
    """``nebridge run`` in fleet mode with ``metrics.port``: acme and bolt, each linked to a
    Next Engine sandbox of its own, import their orders; acme's WMS ships one; then another
    worker takes bolt's lease."""
    port = free_port()
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    key = credentials / KEY_CREDENTIAL
    key.write_text("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", encoding="utf-8")
    key.chmod(0o600)
    folder = tmp_path / "companies"
    folder.mkdir()
    with (
        SandboxServer(kit_sandbox_config()) as acme_ne,
        SandboxServer(kit_sandbox_config()) as bolt_ne,
    ):
        wms = {
            code: Installation(
                sandbox, tmp_path / "daemon.yaml", tmp_path / code / "in", tmp_path / code / "out"
            )
            for code, sandbox in (("acme", acme_ne), ("bolt", bolt_ne))
        }
        for code, installation in wms.items():
            base = installation.sandbox.base_url
            (folder / f"{code}.yaml").write_text(
                dump_yaml(
                    {
                        "wms": {
                            "connector": "csv",
                            "csv": {
                                "inbox": str(installation.inbox),
                                "outbox": str(installation.outbox),
                                "stable_seconds": 0.0,
                            },
                        },
                        "warehouses": DEFAULT_WAREHOUSES,
                        "plugins": DEFAULT_PLUGINS,
                        "nextengine": {"api_base": base, "login_base": base},
                    }
                ),
                encoding="utf-8",
            )
        config = write_config(
            tmp_path,
            migrate=False,
            database_url=fleet_url,
            companies_dir="companies",
            credentials_dir=str(credentials),
            fleet_lease_seconds=4.0,
            metrics={"port": port},
            nextengine={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            dispatch={"queue_poll_seconds": 0.1, "queue_timeout_seconds": 30},
            schedule={
                "interval_seconds": 2,
                "jitter_seconds": 0,
                "dispatch_interval_seconds": 1,
                "intake_poll_seconds": 0.5,
            },
        )
        loaded = load_config(config)
        companies = Companies(loaded)
        fleet = FleetDatabase(fleet_url, keys=load_keys(credentials))
        orders: dict[str, int] = {}
        for code, installation in wms.items():
            upgrade_company(fleet_url, code)
            connect(
                companies.companies[code].config,
                fleet.company_engine(code),
                *installation.sandbox.state.issue_login(),
                store=fleet.vault.store(code),
            )
            installation.sandbox.state.create_goods("A-1", quantity=10)
            orders[code] = installation.sandbox.state.create_order([("A-1", 1)], shop_id=1)
            installation.products([("P-A", "A-1")])
        worker = FleetDaemon(config, worker_id="metrics-worker")
        worker.metrics = FleetMetrics(refresh_seconds=0.5)  # the test's pace, not a minute
        code_of: list[int] = []
        running = threading.Thread(target=lambda: code_of.append(worker.run()), daemon=True)
        running.start()
        try:
            imported = wait_for(
                "both companies served, their orders imported",
                port,
                lambda f: (
                    of(f, "nebridge_fleet_companies", state="serving") == 2
                    and all(
                        of(
                            f,
                            "nebridge_last_success_timestamp_seconds",
                            company=code,
                            warehouse="ITAKU",
                            stage="import_orders",
                        )
                        is not None
                        and any(
                            name == "nebridge_nextengine_calls_total"
                            and ("company", code) in labels
                            for name, labels in f
                        )
                        and [int(r["ne_order_id"]) for r in wms[code].instructed()]
                        == [orders[code]]
                        for code in ("acme", "bolt")
                    )
                ),
                timeout=120,
            )
            assert of(imported, "nebridge_fleet_worker_info", worker="metrics-worker") == 1
            assert of(imported, "nebridge_fleet_companies", state="held") == 2
            assert of(imported, "nebridge_fleet_companies", state="failed") == 0
            assert of(imported, "nebridge_fleet_job_slots") == 8
            assert (of(imported, "nebridge_fleet_lease_renewals_total") or 0) >= 1
            assert of(imported, "nebridge_fleet_leases_lost_total") == 0
            for code in ("acme", "bolt"):
                assert (
                    of(
                        imported,
                        "nebridge_events_in_total",
                        company=code,
                        kind="shipment",
                        warehouse="ITAKU",
                    )
                    is None
                )

            wms["acme"].ship(orders["acme"], [("P-A", 1)], tracking="T-acme")
            shipped = wait_for(
                "acme's shipment taken in and its actions done in Next Engine",
                port,
                lambda f: (
                    of(
                        f,
                        "nebridge_events_in_total",
                        company="acme",
                        kind="shipment",
                        warehouse="ITAKU",
                    )
                    == 1
                    and of(f, "nebridge_outbox_backlog", company="acme", state="done") is not None
                ),
                timeout=60,
            )
            assert (
                of(
                    shipped,
                    "nebridge_events_in_total",
                    company="bolt",
                    kind="shipment",
                    warehouse="ITAKU",
                )
                is None
            )
            assert of(shipped, "nebridge_attention", company="acme", kind="in_doubt_action") == 0

            with fleet.engine.begin() as connection:  # another worker takes bolt over
                connection.execute(
                    text(
                        "UPDATE fleet_lease SET holder = 'other-worker', epoch = epoch + 1, "
                        "expires_at = clock_timestamp() + interval '1 hour' WHERE company = 'bolt'"
                    )
                )
            lost = wait_for(
                "bolt's lease lost, its figures no longer served here",
                port,
                lambda f: (
                    of(f, "nebridge_fleet_leases_lost_total") == 1
                    and of(f, "nebridge_fleet_companies", state="serving") == 1
                    # held comes from the keeper, which may drop the lease a moment after the count
                    and of(f, "nebridge_fleet_companies", state="held") == 1
                    and of(f, "nebridge_fleet_company_figures_age_seconds", company="bolt") is None
                ),
                timeout=60,
            )
            assert of(lost, "nebridge_fleet_companies", state="held") == 1
            assert of(lost, "nebridge_attention", company="bolt", kind="in_doubt_action") is None
            assert of(lost, "nebridge_attention", company="acme", kind="in_doubt_action") == 0
        finally:
            worker.stop.set()
            running.join(60)
            fleet.close()
        assert code_of == [0]
        with pytest.raises(requests.ConnectionError):  # the endpoint ends with the worker
            requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_worker_whose_metrics_port_is_taken_does_not_start_and_says_what_to_change(
    fleet_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    key = credentials / KEY_CREDENTIAL
    key.write_text("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", encoding="utf-8")
    key.chmod(0o600)
    (tmp_path / "companies").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        config = write_config(
            tmp_path,
            migrate=False,
            database_url=fleet_url,
            companies_dir="companies",
            credentials_dir=str(credentials),
            metrics={"port": port},
        )
        with caplog.at_level(logging.ERROR):
            assert FleetDaemon(config).run() == 1
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert any(
        f"port {port} on 127.0.0.1 is already in use" in error and "metrics.port" in error
        for error in errors
    ), errors


def test_the_metrics_benchmark_runs_and_drops_every_schema_it_made() -> None:
    """benchmarks.fleet_metrics at a small size keeps working (no figure is asserted: they
    belong to docs/fleet.md)."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    engine = create_engine(base)

    def bench_schemas() -> set[str]:
        with engine.connect() as connection:
            return set(
                connection.execute(
                    text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'nbmetrics%'")
                ).scalars()
            )

    try:
        before = bench_schemas()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.fleet_metrics",
                "--database-url",
                base,
                "--companies",
                "5",
                "--schemas",
                "2",
                "--events",
                "20",
                "--scrapes",
                "2",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert "refresh pass, 5 companies" in done.stdout
        assert "scrape of 5 companies from the cache" in done.stdout
        assert bench_schemas() == before
    finally:
        engine.dispose()
