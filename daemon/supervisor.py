"""The daemon's main thread: signals, systemd notifications, watchdog, reload and shutdown.

SIGTERM/SIGINT: stop starting work, let running work finish (each loop checks the stop flag
between items, and everything done so far is committed), exit 0. SIGHUP: re-read
``daemon.yaml``; if the new configuration is invalid, keep running the old one and log why.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from daemon import systemd
from daemon.config import ConfigError
from daemon.instancelock import AlreadyRunning, instance_lock
from daemon.metrics import Metrics
from daemon.runtime import Runtime, build_runtime
from daemon.scheduler import Scheduler

log = logging.getLogger(__name__)


class Supervisor:
    """Owns the runtime and its scheduler for the life of the process."""

    def __init__(
        self,
        config_path: Path,
        runtime_factory: Callable[[Path], Runtime] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.runtime_factory = runtime_factory or (lambda p: build_runtime(p))
        self.env = dict(env) if env is not None else None
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self.runtime: Runtime | None = None
        self.scheduler: Scheduler | None = None
        self.metrics = Metrics()

    # -- signals ----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Route SIGTERM/SIGINT to a graceful stop and SIGHUP to a reload."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.request_stop()

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True
        self._wake.set()

    def request_stop(self) -> None:
        """Ask the main loop to drain and exit."""
        self._stop = True
        if self.runtime is not None:
            self.runtime.stop_event.set()
        self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------

    def _notify(self, message: str) -> None:
        systemd.notify(message, self.env)

    def _start(self, runtime: Runtime) -> None:
        runtime.metrics = self.metrics
        self.metrics.watch_store(runtime.db, runtime.host)
        settings = runtime.config.metrics
        if settings.port:
            self.metrics.serve(settings.host, settings.port)
        if runtime.connector is not None:
            runtime.connector.recover(runtime.connector_context())
        scheduler = Scheduler(runtime, wake=self._wake.set)
        scheduler.start()
        self.runtime, self.scheduler = runtime, scheduler

    def _status(self) -> str:
        assert self.runtime is not None
        cfg = self.runtime.config
        plugins = ", ".join(self.runtime.host.loaded_names()) or "none"
        return f"{len(cfg.warehouses)} warehouse(s); plugins: {plugins}"

    def run(self) -> int:
        """Start, supervise until SIGTERM, drain; returns the process exit code."""
        try:
            runtime = self.runtime_factory(self.config_path)
        except ConfigError as exc:
            log.error("%s", exc)
            return 1
        except Exception as exc:
            log.error("cannot start: %s", exc)
            return 1
        try:
            with instance_lock(runtime.config, runtime.engine):
                return self._supervise(runtime)
        except AlreadyRunning as exc:
            runtime.close()
            log.error("cannot start: %s", exc)
            return 1

    def _supervise(self, runtime: Runtime) -> int:
        self._start(runtime)
        self._notify(f"READY=1\nSTATUS=running: {self._status()}")
        log.info("nebridge running: %s", self._status())
        interval = systemd.watchdog_interval(self.env)
        tick = min(interval or 1.0, 1.0)
        while True:
            self._wake.wait(tick)
            self._wake.clear()
            if self._stop:
                break
            if self._reload:
                self._reload = False
                self.reload()
            if self.scheduler is not None:
                self.scheduler.apply_run_requests()
            if interval is not None and self.scheduler is not None and self.scheduler.healthy():
                self._notify("WATCHDOG=1")
        self._notify("STOPPING=1\nSTATUS=draining running work")
        log.info("stopping: letting running work finish")
        self._shutdown()
        self.metrics.stop()
        log.info("stopped")
        return 0

    def reload(self) -> bool:
        """Re-read the configuration; keep the old one if the new one is invalid."""
        self._notify("RELOADING=1\nSTATUS=reloading configuration")
        try:
            new_runtime = self.runtime_factory(self.config_path)
        except Exception as exc:
            log.error("reload failed; keeping the old configuration: %s", exc)
            self._notify(f"READY=1\nSTATUS=reload failed, old configuration kept: "
                         f"{str(exc).splitlines()[0]}")
            return False
        self._shutdown()
        self._start(new_runtime)
        log.info("configuration reloaded: %s", self._status())
        self._notify(f"READY=1\nSTATUS=running: {self._status()}")
        return True

    def _shutdown(self) -> None:
        if self.runtime is not None:
            self.runtime.stop_event.set()
        if self.scheduler is not None:
            self.scheduler.shutdown()
        if self.runtime is not None:
            self.runtime.close()
        self.scheduler = None
        self.runtime = None
