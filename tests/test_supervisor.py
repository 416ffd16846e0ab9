"""The daemon process: systemd notifications, SIGHUP reload, SIGTERM drain (real subprocess)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.config import load_config
from daemon.store.engine import make_engine, read_session
from daemon.store.models import InboxEvent
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory

SHIP_HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"


class NotifySocket:
    """A fake systemd notification socket collecting what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages):
                return
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        raise AssertionError(f"no {text!r} from the daemon; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


def start(config: Path, notify: NotifySocket, log: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000", PYTHONUNBUFFERED="1"
    )
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "daemon", "--config", str(config), "run"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_ready_watchdog_reload_keeps_old_config_and_sigterm_exits_zero(
    make_config: ConfigFactory, notify: NotifySocket, tmp_path: Path
) -> None:
    config = make_config()
    good = config.read_text(encoding="utf-8")
    log = tmp_path / "daemon.log"
    proc = start(config, notify, log)
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1")
        config.write_text(
            good.replace("interval_seconds: 60", "interval_seconds: -1"), encoding="utf-8"
        )
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("reload failed, old configuration kept")
        assert proc.poll() is None
        assert "keeping the old configuration" in log.read_text()
        assert "schedule.interval_seconds" in log.read_text()
        config.write_text(
            good.replace("stock_minus:\n    enabled: true", "stock_minus:\n    enabled: false"),
            encoding="utf-8",
        )
        notify.messages.clear()
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        assert "configuration reloaded" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc) == 0
        notify.wait_for("STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_lets_running_work_finish(
    make_config: ConfigFactory, notify: NotifySocket, tmp_path: Path, fake_site: Path
) -> None:
    started = tmp_path / "started.txt"
    config = make_config(
        plugins={
            **DEFAULT_PLUGINS,
            "fake_slow": {"enabled": True, "seconds": 1.5, "started_marker": str(started)},
        }
    )
    inbox = tmp_path / "wms" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "products.csv").write_text("product_code,link_code\nP-A,a\n", encoding="utf-8")
    log = tmp_path / "daemon.log"
    proc = start(config, notify, log)
    try:
        notify.wait_for("READY=1")
        time.sleep(1.0)  # the product master is taken first
        (inbox / ".s.part").write_text(
            f"{SHIP_HEADER}\nS-1,ITAKU,,,2026-11-27 10:00:00,P-A,1\n", encoding="utf-8"
        )
        (inbox / ".s.part").rename(inbox / "shipments-1.csv")
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    engine = make_engine(load_config(config).config.resolved_database_url)
    with read_session(engine) as session:
        states = list(session.execute(select(InboxEvent.external_id, InboxEvent.state)).all())
    engine.dispose()
    assert states == [("S-1", "processed")]
    assert "stopped" in log.read_text()


def test_watchdog_pings_stop_while_the_scheduler_is_unhealthy(
    make_config: ConfigFactory, notify: NotifySocket
) -> None:
    import threading

    from daemon.supervisor import Supervisor

    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    supervisor = Supervisor(make_config(), env=env)
    thread = threading.Thread(target=supervisor.run)
    thread.start()
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1")
        assert supervisor.scheduler is not None
        supervisor.scheduler.host.stale_after = 0.5
        supervisor.scheduler.scheduler.pause_job("heartbeat")  # the scheduler is wedged
        time.sleep(1.0)
        notify.messages.clear()
        time.sleep(1.5)
        while True:  # drain what arrived
            try:
                notify.messages.append(notify.sock.recv(4096).decode())
            except TimeoutError:
                break
        assert not any("WATCHDOG=1" in m for m in notify.messages)
        supervisor.scheduler.scheduler.resume_job("heartbeat")
        notify.wait_for("WATCHDOG=1", timeout=10)
    finally:
        supervisor.request_stop()
        thread.join(30)
    assert not thread.is_alive()
    notify.wait_for("STOPPING=1")


def test_a_second_working_process_is_refused(make_config: ConfigFactory, database_url: str) -> None:
    from daemon.instancelock import AlreadyRunning, instance_lock

    config = load_config(make_config(database_url=database_url)).config
    engine = make_engine(config.resolved_database_url)
    try:
        with (
            instance_lock(config, engine),
            pytest.raises(AlreadyRunning, match="stop it first"),
            instance_lock(config, engine),
        ):
            pass
        with instance_lock(config, engine):  # released again
            pass
    finally:
        engine.dispose()


def test_run_once_is_refused_while_the_daemon_runs(
    make_config: ConfigFactory, notify: NotifySocket, tmp_path: Path
) -> None:
    config = make_config()
    proc = start(config, notify, tmp_path / "daemon.log")
    try:
        notify.wait_for("READY=1")
        once = subprocess.run(
            [sys.executable, "-m", "daemon", "--config", str(config), "run", "--once"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert once.returncode == 1
        assert f"another nebridge process (pid {proc.pid})" in once.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc) == 0
