"""SIGTERM ends a fleet worker whose company has a job that never returns (a plugin hook
stuck): after the drain time the job is named in the log, every lease is released and the
process exits 1 — it does not hang forever (#19)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from daemon.cli import app
from daemon.fleet.runtime import FleetDatabase
from tests.fleet.test_fleet_run import ROOT, fleet_config, held, wait_for

STUCK_WORKER = """
import logging, sys, threading
from datetime import datetime
from pathlib import Path
from daemon.fleet.daemon import FleetDaemon

def never_returns():
    print("job stuck", flush=True)
    threading.Event().wait()

class Daemon(FleetDaemon):
    def _start_company(self, company, lease):
        run = super()._start_company(company, lease)
        # a job of this company that never returns, on the worker's shared threads
        # (an interval job: a run due while the company's share of the threads is busy
        # is deferred to its next turn)
        run.scheduler.scheduler.add_job(run.scheduler._guarded(never_returns, "stuck"),
                                        "interval", seconds=0.5, executor="work",
                                        id="alpha/stuck",
                                        next_run_time=datetime.now().astimezone())
        return run

logging.basicConfig(level=logging.INFO, stream=sys.stdout)
daemon = Daemon(Path(sys.argv[1]))
daemon.drain_seconds = 1.0
daemon.install_signal_handlers()
sys.exit(daemon.run())
"""


def test_sigterm_ends_a_worker_with_a_stuck_job_after_the_drain_time(
    fleet_url: str, tmp_path: Path
) -> None:
    config = fleet_config(tmp_path, fleet_url, ["alpha"])
    upgraded = CliRunner().invoke(app, ["--config", str(config), "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    fleet = FleetDatabase(fleet_url)
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-c", STUCK_WORKER, str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
    try:
        wait_for("the stuck job", lambda: "job stuck" in log.read_text(), log)
        assert held(fleet) != {}
        began = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 1, log.read_text()
        assert time.monotonic() - began < 20
        text_now = log.read_text()
        assert "company alpha: job(s) stuck did not finish within the drain time" in text_now
        assert held(fleet) == {}  # released, not left to expire
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        with fleet.engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{fleet.schema("alpha")}" CASCADE'))
        fleet.close()
