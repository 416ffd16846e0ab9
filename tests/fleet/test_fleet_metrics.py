"""A fleet worker's ``/metrics`` on the CI PostgreSQL, scraped over HTTP: each company's series
under its code, read from a cache the refresher keeps (a scrape reads no table), a company no
longer served dropped, one whose tables cannot be read left out without hiding the others."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.leases import LeaseKeeper
from daemon.fleet.metrics import FleetMetrics, WorkerFigures
from daemon.fleet.runtime import FleetDatabase, company_runtime, upgrade_company
from daemon.runtime import Runtime
from daemon.testing.installation import PRODUCTS_HEADER, RECEIPT_HEADER, drop_file
from tests.conftest import ConfigFactory, dump_yaml

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


def wait_for(what: str, port: int, condition: Callable[[Scrape], bool]) -> Scrape:
    deadline = time.monotonic() + 30
    while True:
        figures = scrape(port)
        if condition(figures):
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
            slots_in_use=2,
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
        assert of(first, "nebridge_fleet_job_slots_in_use") == 2
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
