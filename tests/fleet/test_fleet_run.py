"""`nebridge run` in fleet mode as a real process on the CI PostgreSQL: companies added and
removed on SIGHUP, a bad company file refused alone, a company without its schema refused
until `nebridge db upgrade`, SIGTERM releasing every lease; `run --once` refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from daemon.cli import app
from daemon.fleet.runtime import FleetDatabase
from daemon.fleet.vault import KEY_CREDENTIAL
from daemon.testing.installation import DEFAULT_WAREHOUSES, dump_yaml, write_config

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 2.0


def company_file(folder: Path, code: str, tmp_path: Path) -> None:
    wms = tmp_path / code
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
                "warehouses": DEFAULT_WAREHOUSES,
            }
        ),
        encoding="utf-8",
    )


def fleet_config(tmp_path: Path, fleet_url: str, codes: list[str]) -> Path:
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    key = credentials / KEY_CREDENTIAL
    key.write_text("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", encoding="utf-8")
    key.chmod(0o600)
    folder = tmp_path / "companies"
    folder.mkdir()
    for code in codes:
        company_file(folder, code, tmp_path)
    return write_config(
        tmp_path,
        migrate=False,
        database_url=fleet_url,
        companies_dir="companies",
        credentials_dir=str(credentials),
        fleet_lease_seconds=LEASE_SECONDS,
        companies_watch_seconds=0,  # SIGHUP only: the tests of SIGHUP send it
    )


def fleet_config_again(tmp_path: Path, fleet_url: str) -> Path:
    """daemon.yaml rewritten with another schedule (the companies and key kept)."""
    return write_config(
        tmp_path,
        migrate=False,
        database_url=fleet_url,
        companies_dir="companies",
        credentials_dir=str(tmp_path / "credentials"),
        fleet_lease_seconds=LEASE_SECONDS,
        companies_watch_seconds=0,
        schedule={"interval_seconds": 45, "jitter_seconds": 0},
    )


def held(fleet: FleetDatabase) -> dict[str, str]:
    """Live leases: company -> holder."""
    with fleet.engine.connect() as connection:
        return dict(
            connection.execute(
                text(
                    "SELECT company, holder FROM fleet_lease WHERE holder IS NOT NULL "
                    "AND expires_at > clock_timestamp()"
                )
            )
            .tuples()
            .all()
        )


def wait_for(what: str, condition: Callable[[], bool], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}\n{log.read_text(errors='replace')}"
        time.sleep(0.2)


def test_companies_come_and_go_on_sighup_and_a_bad_file_is_refused_alone(
    fleet_url: str, tmp_path: Path
) -> None:
    config = fleet_config(tmp_path, fleet_url, ["alpha", "beta"])
    runner = CliRunner()
    upgraded = runner.invoke(app, ["--config", str(config), "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    once = runner.invoke(app, ["--config", str(config), "run", "--once"])
    assert once.exit_code == 2 and "pass --company CODE" in once.output
    fleet = FleetDatabase(fleet_url)
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(config), "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
    try:
        wait_for(
            "both companies served",
            lambda: (
                sorted(held(fleet)) == ["alpha", "beta"]
                and "company beta: served" in log.read_text()
            ),
            log,
        )

        worker.send_signal(signal.SIGUSR1)  # every thread's stack, and it keeps running
        wait_for("a thread dump", lambda: "(most recent call first)" in log.read_text(), log)
        assert worker.poll() is None

        folder = tmp_path / "companies"
        company_file(folder, "gamma", tmp_path)  # added, but its schema does not exist yet
        (folder / "delta.yaml").write_text("warehouses: 3\n", encoding="utf-8")  # refused
        os.remove(folder / "alpha.yaml")  # removed
        worker.send_signal(signal.SIGHUP)
        wait_for(
            "alpha released, gamma leased", lambda: sorted(held(fleet)) == ["beta", "gamma"], log
        )
        wait_for(
            "gamma refused until migrated",
            lambda: (
                "nebridge db upgrade" in log.read_text()
                and "company gamma: its service did not start" in log.read_text()
            ),
            log,
        )
        text_now = log.read_text()
        assert "company alpha: no longer served" in text_now
        assert "delta.yaml" in text_now and "company file refused" in text_now
        assert "company beta: no longer served" not in text_now  # untouched by the reload

        upgraded = runner.invoke(
            app, ["--config", str(config), "--company", "gamma", "db", "upgrade"]
        )
        assert upgraded.exit_code == 0 and "company gamma: migrated" in upgraded.output
        with fleet.engine.connect() as connection:  # the fleet tables stay shared
            assert (
                connection.execute(
                    text("SELECT to_regclass(:t)"), {"t": f'"{fleet.schema("gamma")}".fleet_lease'}
                ).scalar()
                is None
            )
        wait_for(
            "gamma served once migrated",
            lambda: "company gamma: served" in log.read_text(),
            log,
            timeout=LEASE_SECONDS * 5,
        )

        fleet_config_again(tmp_path, fleet_url)  # a shared setting changed in daemon.yaml
        worker.send_signal(signal.SIGHUP)
        wait_for(
            "every company restarted with it",
            lambda: "0 added, 2 changed, 0 removed" in log.read_text(),
            log,
        )

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert held(fleet) == {}  # released at once, not left to expire
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        with fleet.engine.begin() as connection:
            for code in ("alpha", "beta", "gamma"):
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{fleet.schema(code)}" CASCADE'))
        fleet.close()


def test_a_running_worker_picks_up_company_files_without_sighup(
    fleet_url: str, tmp_path: Path
) -> None:
    """The file watch (`companies_watch_seconds`): a company file added, changed and removed
    on disk is applied by a real `nebridge run` worker, no signal sent (#19)."""
    fleet_config(tmp_path, fleet_url, ["alpha", "beta", "gamma"])
    config = write_config(
        tmp_path,
        migrate=False,
        database_url=fleet_url,
        companies_dir="companies",
        credentials_dir=str(tmp_path / "credentials"),
        fleet_lease_seconds=LEASE_SECONDS,
        companies_watch_seconds=0.5,
    )
    upgraded = CliRunner().invoke(app, ["--config", str(config), "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    folder = tmp_path / "companies"
    os.replace(folder / "gamma.yaml", tmp_path / "gamma.yaml")  # migrated, not in the fleet yet
    fleet = FleetDatabase(fleet_url)
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(config), "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
    try:
        wait_for(
            "alpha and beta served",
            lambda: (
                "company alpha: served" in log.read_text()
                and "company beta: served" in log.read_text()
            ),
            log,
        )
        os.replace(tmp_path / "gamma.yaml", folder / "gamma.yaml")  # added
        wait_for("gamma served", lambda: "company gamma: served" in log.read_text(), log)

        settings = (folder / "beta.yaml").read_text(encoding="utf-8")
        (folder / "beta.yaml").write_text(
            settings + "nextengine: {page_size: 500}\n", encoding="utf-8"
        )  # changed
        wait_for(
            "beta restarted with its new file",
            lambda: log.read_text().count("company beta: served") == 2,
            log,
        )
        assert "company beta: no longer served" in log.read_text()

        os.remove(folder / "alpha.yaml")  # removed
        wait_for("alpha released", lambda: sorted(held(fleet)) == ["beta", "gamma"], log)
        text_now = log.read_text()
        assert "company alpha: no longer served" in text_now
        assert "company gamma: no longer served" not in text_now  # untouched by the reloads
        assert "company file refused" not in text_now

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        with fleet.engine.begin() as connection:
            for code in ("alpha", "beta", "gamma"):
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{fleet.schema(code)}" CASCADE'))
        fleet.close()


def test_a_worker_without_the_vault_key_refuses_to_start_saying_what_to_do(
    fleet_url: str, tmp_path: Path
) -> None:
    config = fleet_config(tmp_path, fleet_url, ["alpha"])
    (tmp_path / "credentials" / KEY_CREDENTIAL).unlink()
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no vault key" in done.stderr and KEY_CREDENTIAL in done.stderr
    fleet = FleetDatabase(fleet_url)
    try:
        assert held(fleet) == {}  # it took no company
    finally:
        fleet.close()
