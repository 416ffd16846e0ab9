"""Fleet operator leftovers (issue #19): a reload retries every failed company at once, a
pipeline run whose database went away is not logged as a failure of its own."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import make_url

from daemon.config import load_config
from daemon.fleet.companies import Companies, Company
from daemon.fleet.leases import Lease, fleet_engine
from daemon.fleet.worker import FleetWorker
from daemon.pipeline import Stage
from daemon.runtime import build_runtime
from daemon.store.engine import DatabaseUnavailable
from tests.conftest import ConfigFactory
from tests.fleet.test_worker import Recorder, company_file
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
