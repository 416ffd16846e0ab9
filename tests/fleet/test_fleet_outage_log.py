"""A database outage under a fleet worker is logged as the single-company daemon logs it
(attacker review F7): one ERROR when it starts, "still unavailable" every 5 minutes, one line
when it ends — not an ERROR every round (every third of the lease time)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.leases import fleet_engine
from daemon.fleet.worker import FleetWorker
from tests.conftest import ConfigFactory
from tests.fleet.test_worker import Recorder, company_file
from tests.pgproxy import TcpProxy

LEASE = 1.5  # a round every 0.5 s


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 90.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def test_an_outage_is_one_error_and_its_end_one_line(
    make_config: ConfigFactory,
    fleet_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker serving a company through a proxy that stops (the database away) for at least
    eight rounds: one ERROR in all, then "reachable again" once it is back, and the company
    served again."""
    folder = tmp_path / "companies"
    folder.mkdir()
    company_file(folder, "acme")
    target = make_url(fleet_url)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        config = make_config(migrate=False, database_url=url, companies_dir="companies")
        engine = fleet_engine(url, lease_seconds=LEASE)
        worker = FleetWorker(
            Companies(load_config(config)), engine, Recorder().start, lease_seconds=LEASE
        )
        rounds: list[bool] = []
        step = worker.step

        def counted_step() -> None:
            try:
                step()
            except Exception:
                rounds.append(False)
                raise
            rounds.append(True)

        monkeypatch.setattr(worker, "step", counted_step)
        stop = threading.Event()
        serving = threading.Thread(target=worker.serve, args=(stop,))
        serving.start()
        try:
            wait_for(lambda: worker.serving() == ["acme"], "acme served")
            caplog.clear()
            caplog.set_level(logging.WARNING)
            proxy.stop()
            failed_before = rounds.count(False)
            wait_for(lambda: rounds.count(False) >= failed_before + 8, "eight failed rounds")
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1, [r.getMessage() for r in errors]
            assert errors[0].getMessage().startswith("database unavailable")
            proxy.start()
            wait_for(lambda: "database reachable again" in caplog.text, "the outage's end")
            wait_for(lambda: worker.serving() == ["acme"], "acme served again")
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1, [r.getMessage() for r in errors]
        finally:
            stop.set()
            serving.join()
            engine.dispose()
