"""One campaign world: a Next Engine sandbox in this process, a daemon.yaml pointing at it, the
WMS folders, and every daemon or CLI process started against it (output kept for the
security scan).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, text

from daemon.config import load_config
from daemon.runtime import Runtime, build_runtime
from daemon.sandbox import SandboxConfig, SandboxServer
from daemon.store.engine import make_engine
from tests.conftest import dump_yaml

CLIENT_ID = "nebridge-campaign"
CLIENT_SECRET = "campaign-client-secret-7f3a9c"
REPO = Path(__file__).resolve().parents[2]
WAREHOUSES: list[dict[str, Any]] = [
    {"code": "ITAKU", "name": "委託販売在庫", "ne_linked": True, "import_orders": True},
    {"code": "ASAKUSA", "name": "浅草拠点", "ne_linked": True, "import_orders": False},
    {"code": "SHINJUKU", "name": "新宿拠点", "ne_linked": False, "import_orders": False},
]
PLUGINS: dict[str, Any] = {
    "status_update": {"enabled": True},
    "tracking_update": {"enabled": True},
    "stock_minus": {"enabled": True},
    "stock_plus": {"enabled": True},
    "tag_filter": {"enabled": False},
    "case_insensitive_match": {"enabled": True},
}


@dataclass
class Proc:
    """A daemon or CLI process of the campaign; its output goes to ``log``."""

    popen: subprocess.Popen[bytes]
    log: Path
    args: tuple[str, ...]
    handle: IO[bytes]

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Still running."""
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL (only this process, by its id)."""
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.alive():
            os.kill(self.popen.pid, signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        """Wait for the exit code and close the log."""
        code = self.popen.wait(timeout)
        self.handle.close()
        return code


@dataclass
class World:
    """The sandbox, the configuration and the folders of one campaign phase."""

    root: Path
    sandbox: SandboxServer
    config: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    runs: int = 0
    _seq: int = 0

    @property
    def inbox(self) -> Path:
        """The WMS inbox folder."""
        return self.root / "wms" / "inbox"

    @property
    def outbox(self) -> Path:
        """The WMS outbox folder (order files)."""
        return self.root / "wms" / "outbox"

    @property
    def logs(self) -> Path:
        """Where every process's output is kept."""
        path = self.root / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def state_dir(self) -> Path:
        """The daemon's state folder (database, token file)."""
        return self.root / "state"

    def env(self) -> dict[str, str]:
        """Environment of the processes: the repository importable, nothing else changed."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env.pop("JOURNAL_STREAM", None)
        env.update(self.extra_env)
        return env

    def _log(self, label: str) -> Path:
        self._seq += 1
        return self.logs / f"{self._seq:04d}-{label}.log"

    def start(self, *args: str, label: str = "daemon") -> Proc:
        """Start ``python -m daemon --config X <args>`` in the background."""
        argv = (sys.executable, "-m", "daemon", "--config", str(self.config), *args)
        log = self._log(label)
        handle = log.open("wb")
        popen = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, env=self.env(), cwd=self.root
        )
        if args and args[0] == "run":
            self.runs += 1
        return Proc(popen, log, tuple(args), handle)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a CLI command to completion; its output is kept like every other."""
        proc = self.start(*args, label="cli-" + "-".join(a for a in args[:2] if a[0] != "-"))
        code = proc.wait(timeout)
        output = proc.log.read_text(encoding="utf-8", errors="replace")
        return subprocess.CompletedProcess(proc.args, code, output, "")

    def engine(self) -> Engine:
        """A database engine on the daemon's store (for the campaign's checks)."""
        return make_engine(load_config(self.config).config.resolved_database_url)

    def runtime(self) -> Runtime:
        """A runtime in this process (for checks that look inside one pass)."""
        return build_runtime(self.config)

    def link_reason(self) -> str:
        """Why the link needs re-connection ("" when it does not)."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT reason FROM ne_link")).first()
        finally:
            engine.dispose()
        return str(row[0] or "") if row else ""

    def link_state(self) -> str:
        """``connected``, ``needs_reconnect`` or ``none`` (read from the store)."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT state FROM ne_link")).first()
        finally:
            engine.dispose()
        return str(row[0]) if row else "none"

    def connect(self, attempts: int = 20) -> int:
        """Sign in through the sandbox like an admin and run ``nebridge connect``; returns how
        many attempts it took (sign-in calls meet injected faults too)."""
        for attempt in range(1, attempts + 1):
            uid, state = self.sandbox.state.issue_login()
            done = self.cli("connect", "--uid", uid, "--state", state)
            if done.returncode == 0:
                return attempt
            time.sleep(0.2)
        raise RuntimeError(f"could not connect after {attempts} attempts: {done.stdout}")

    def drop(self, name: str, data: bytes) -> None:
        """Deliver a file to the WMS inbox the way the contract says (temp name, rename)."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        tmp = self.inbox / f".{name}.part"
        tmp.write_bytes(data)
        tmp.rename(self.inbox / name)


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_world(
    root: Path,
    *,
    sandbox_options: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    connect: bool = True,
) -> World:
    """Start a sandbox, write daemon.yaml, migrate the store and (by default) connect."""
    root.mkdir(parents=True, exist_ok=True)
    options = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "seed_size": 0,
        "que_processing_delay_s": 0.3,
        **(sandbox_options or {}),
    }
    sandbox = SandboxServer(SandboxConfig.from_mapping(options)).start()
    config = root / "daemon.yaml"
    config.write_text(dump_yaml(base_config(root, sandbox.base_url, overrides)), encoding="utf-8")
    world = World(root, sandbox, config)
    done = world.cli("db", "upgrade")
    if done.returncode != 0:
        raise RuntimeError(f"db upgrade failed: {done.stdout}")
    if connect:
        world.connect()
    return world


def base_config(
    root: Path, ne_url: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The campaign's daemon.yaml: short intervals and retry delays, DEBUG logging."""
    data: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "log_level": "DEBUG",
        "nextengine": {
            "api_base": ne_url,
            "login_base": ne_url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "read_timeout_seconds": 5,
            "retry_delays_seconds": [0.02, 0.05, 0.1],
            "maintenance_pause_seconds": 0.3,
            "timeout_grace_seconds": 0.5,
        },
        "schedule": {
            "interval_seconds": 1,
            "jitter_seconds": 0,
            "dispatch_interval_seconds": 0.5,
            "intake_poll_seconds": 0.2,
        },
        "dispatch": {
            "queue_poll_seconds": 0.1,
            "queue_timeout_seconds": 20,
            "retry_seconds": 0.3,
            "not_ready_retry_seconds": 1,
            "upload_settle_seconds": 2.0,
        },
        "wms": {
            "connector": "csv",
            "csv": {
                "inbox": str(root / "wms" / "inbox"),
                "outbox": str(root / "wms" / "outbox"),
                "stable_seconds": 0.0,
            },
        },
        "warehouses": WAREHOUSES,
        "plugins": PLUGINS,
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def wait_until(condition: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition()`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def output_of(paths: Sequence[Path]) -> str:
    """The text of several log files."""
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in paths)
