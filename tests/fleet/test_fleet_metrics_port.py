"""Several workers on one host share one daemon.yaml with ``metrics.port`` set: each takes its
own port from ``nebridge run --metrics-port`` / NEBRIDGE_METRICS_PORT; without it the second is
refused naming that override (review fleet F1). Real processes on the CI PostgreSQL."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from daemon.cli import app
from daemon.supervisor import Supervisor
from daemon.testing.installation import write_config
from tests.conftest import ConfigFactory
from tests.fleet.test_fleet_run import ROOT, fleet_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port another program holds (listening)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])


def scrape(port: int, log: Path, timeout: float = 30) -> str:
    """``/metrics`` on ``port`` once the worker serves it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except requests.ConnectionError:
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)


def test_two_workers_with_one_daemon_yaml_each_serve_metrics_on_their_own_port(
    fleet_url: str, tmp_path: Path
) -> None:
    shared, own = free_port(), free_port()
    fleet_config(tmp_path, fleet_url, ["alpha"])
    config = write_config(
        tmp_path,
        migrate=False,
        database_url=fleet_url,
        companies_dir="companies",
        credentials_dir=str(tmp_path / "credentials"),
        fleet_lease_seconds=2.0,
        companies_watch_seconds=0,
        metrics={"port": shared, "host": "127.0.0.1"},
    )
    upgraded = CliRunner().invoke(app, ["--config", str(config), "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CREDENTIALS_DIRECTORY", "NEBRIDGE_METRICS_PORT")
    }
    command = [sys.executable, "-m", "daemon", "--config", str(config), "run"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        first_log = tmp_path / "w1.log"
        with first_log.open("ab") as out:
            workers.append(
                subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
            )
        assert "nebridge_fleet" in scrape(shared, first_log)

        refused = subprocess.run(
            command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
        )
        assert refused.returncode == 1
        assert f"port {shared} on 127.0.0.1 is already in use" in refused.stderr
        assert "--metrics-port" in refused.stderr and "NEBRIDGE_METRICS_PORT" in refused.stderr

        second_log = tmp_path / "w2.log"
        with second_log.open("ab") as out:
            workers.append(
                subprocess.Popen(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env={**env, "NEBRIDGE_METRICS_PORT": str(own)},
                )
            )
        assert "nebridge_fleet" in scrape(own, second_log)
        assert workers[1].poll() is None, second_log.read_text(errors="replace")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)


def test_a_single_company_daemon_takes_the_override_too(
    make_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_config(metrics={"port": free_port(), "host": "127.0.0.1"})
    with taken_port() as port, caplog.at_level(logging.ERROR):
        assert Supervisor(path, metrics_port=port).run() == 1  # daemon.yaml's port is free
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"port {port} on 127.0.0.1 is already in use" in e for e in errors), errors
