"""The daemon's main thread: signals, systemd notifications, watchdog, reload and shutdown.

SIGTERM/SIGINT: stop starting work, let running work finish (each loop checks the stop flag
between items, and everything done so far is committed), exit 0. SIGHUP: re-read
``daemon.yaml``; if the new configuration is invalid, keep running the old one and log why.
SIGUSR1: write every thread's stack to stderr (the journal) and go on, as a fleet worker does.

Nothing runs before the instance lock is held. On PostgreSQL a second daemon (another host)
waits as a standby — READY for systemd, touching no shared state — and takes over when the
lock is free. A lock lost while working (its connection dropped: a database restart or
outage) stops all work at once: Next Engine calls are fenced at once, the scheduler drains,
and the daemon waits (with backoff while the database is away) to take the lock again, then
starts afresh; nothing is lost, since all progress lives in the database. While it waits, it
keeps the scheduler's database alarm going (when notify sinks are set): an outage longer than
``notify.database_down_minutes`` is told to the sinks, and "reachable again" once it answers.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from daemon import stackdump, systemd
from daemon.config import ConfigError
from daemon.httpserve import PortInUse
from daemon.instancelock import AlreadyRunning, InstanceLock
from daemon.metrics import Metrics
from daemon.notify import OutageAlarm
from daemon.runtime import Runtime, build_runtime
from daemon.scheduler import Scheduler
from daemon.statedir import StateFolderMismatch
from daemon.store.engine import (
    DatabaseHealth,
    DatabaseUnavailable,
    database_health,
    human_duration,
    make_engine,
)

log = logging.getLogger(__name__)

#: Seconds between two tries of a standby for the instance lock.
STANDBY_POLL_SECONDS = 5.0
#: While the database is away: first retry, doubling up to the cap; "still down" this often.
OUTAGE_FIRST_RETRY, OUTAGE_MAX_RETRY, OUTAGE_REPORT_EVERY = 1.0, 30.0, 300.0


class Supervisor:
    """Owns the runtime and its scheduler for the life of the process."""

    def __init__(
        self,
        config_path: Path,
        runtime_factory: Callable[[Path], Runtime] | None = None,
        env: Mapping[str, str] | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.config_path = config_path
        #: ``nebridge run --metrics-port`` / NEBRIDGE_METRICS_PORT: overrides metrics.port.
        self.metrics_port = metrics_port
        self.runtime_factory = runtime_factory or (lambda p: build_runtime(p))
        self.env = dict(env) if env is not None else None
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self.runtime: Runtime | None = None
        self.scheduler: Scheduler | None = None
        self.metrics = Metrics()
        self.lock: InstanceLock | None = None
        self._waited = False  # the last _take_lock waited (standby or database away)
        #: The database alarm of the last scheduler (what it told the sinks), carried to the
        #: next one, and checked by the supervisor itself while it waits for a lost lock.
        self._alarm: OutageAlarm | None = None

    # -- signals ----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Route SIGTERM/SIGINT to a graceful stop and SIGHUP to a reload; SIGUSR1 writes
        every thread's stack to stderr (what a daemon that seems stuck waits for) instead of
        ending the process at once, as Python's default did."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        stackdump.install()

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
        lock = self.lock
        runtime.fence = (lambda: None) if lock is None else lock.lost
        self.metrics.watch_store(runtime.db, runtime.host)
        settings = runtime.config.metrics
        port = settings.port if self.metrics_port is None else self.metrics_port
        if port:
            self.metrics.serve(settings.host, port)
        runtime.start_connector()
        scheduler = Scheduler(runtime, wake=self._wake.set)
        if self._alarm is not None:
            scheduler.outage.take_over(self._alarm)
            self._alarm = None
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
        lock_engine = make_engine(runtime.config.resolved_database_url)
        self.lock = InstanceLock(runtime.config, lock_engine, on_lost=self._on_lock_lost)
        try:
            if not self._take_lock():
                runtime.close()
                return 0
            if self._waited:  # stood by: the schema or daemon.yaml may have changed meanwhile
                runtime.close()
                try:
                    runtime = self.runtime_factory(self.config_path)
                except Exception as exc:
                    log.error("cannot start after taking the instance lock: %s", exc)
                    return 1
            return self._supervise(runtime)
        except (AlreadyRunning, PortInUse, StateFolderMismatch) as exc:
            runtime.close()
            log.error("cannot start: %s", exc)
            return 1
        finally:
            self.lock.release()
            lock_engine.dispose()

    # -- the instance lock ------------------------------------------------------------------

    def _on_lock_lost(self, _reason: str) -> None:
        """Watcher thread: stop every loop now; the main loop drains and waits for the lock."""
        if self.runtime is not None:
            self.runtime.stop_event.set()
        self._wake.set()

    def _take_lock(
        self, alarm: OutageAlarm | None = None, health: DatabaseHealth | None = None
    ) -> bool:
        """Take the instance lock, waiting as a standby or for the database; False if stopped.

        With ``alarm`` (after a loss, when notify sinks are set) the database alarm goes on
        meanwhile, every ``notify.interval_seconds``: the outage as ``health`` (the stopped
        runtime's) counts it — from its first failed connection, or else from the first
        failed try here — and "reachable again" as soon as the database answers.

        Raises :class:`AlreadyRunning` where waiting makes no sense (SQLite: same host).
        """
        lock = self.lock
        assert lock is not None
        interval = systemd.watchdog_interval(self.env)
        next_alarm = 0.0
        standby_since: float | None = None
        down_since: float | None = None
        retry, reported = OUTAGE_FIRST_RETRY, 0.0
        next_try = 0.0
        self._waited = False
        while not self._stop:
            now = time.monotonic()
            if now >= next_try:
                try:
                    got = lock.try_acquire()
                except DatabaseUnavailable as exc:
                    self._waited = True
                    if health is not None:
                        health.failed(str(exc))  # (keeps an earlier start of the outage)
                    if down_since is None:
                        down_since, reported = now, now
                        log.error(
                            "database unavailable: %s — waiting for it (retrying with "
                            "backoff up to every %s)",
                            exc,
                            human_duration(OUTAGE_MAX_RETRY),
                        )
                        self._notify(f"READY=1\nSTATUS=waiting for the database: {exc}")
                    elif now - reported >= OUTAGE_REPORT_EVERY:
                        reported = now
                        log.warning(
                            "database still unavailable after %s: %s",
                            human_duration(now - down_since),
                            exc,
                        )
                    next_try, retry = now + retry, min(retry * 2, OUTAGE_MAX_RETRY)
                else:
                    if down_since is not None:
                        log.warning(
                            "database reachable again after %s",
                            human_duration(time.monotonic() - down_since),
                        )
                        down_since, retry = None, OUTAGE_FIRST_RETRY
                    if alarm is not None:
                        self._check_alarm(alarm, None, "")
                    if got:
                        if standby_since is not None:
                            log.warning(
                                "took over the instance lock after %s as a standby",
                                human_duration(time.monotonic() - standby_since),
                            )
                        return True
                    if not lock.can_wait():
                        raise AlreadyRunning(lock.refusal())
                    self._waited = True
                    if standby_since is None:
                        standby_since = now
                        holder = lock.refusal()
                        log.warning(
                            "standby: %s; this process waits without touching shared "
                            "state and takes over when the lock is free (checked "
                            "every %.0f s)",
                            holder,
                            STANDBY_POLL_SECONDS,
                        )
                        self._notify(
                            "READY=1\nSTATUS=standby: another nebridge process "
                            "holds the instance lock"
                        )
                    next_try = now + STANDBY_POLL_SECONDS
            if alarm is not None and down_since is not None and time.monotonic() >= next_alarm:
                next_alarm = time.monotonic() + alarm.settings.interval_seconds
                if health is not None and health.down_since is not None:
                    down = health.monotonic() - health.down_since
                    self._check_alarm(alarm, down, health.reason)
                else:
                    self._check_alarm(alarm, time.monotonic() - down_since, "")
            self._wake.wait(min(interval or 1.0, 1.0, max(0.05, next_try - time.monotonic())))
            self._wake.clear()
            if interval is not None:
                self._notify("WATCHDOG=1")
        return False

    @staticmethod
    def _check_alarm(alarm: OutageAlarm, down: float | None, reason: str) -> None:
        try:
            for error in alarm.check(down, reason):
                log.warning("could not tell %s that the database is unreachable", error)
        except Exception:
            log.exception("the database alarm failed; it runs again at its next interval")

    def _regain_lock(self) -> bool:
        """After a loss: drain everything, take the lock again, start afresh; False to exit.

        A runtime with notify sinks stays open (its work stopped) while the lock is awaited:
        its database alarm goes on telling the sinks about the outage meanwhile.
        """
        self._notify("STATUS=instance lock lost: work stopped, taking it again")
        stopped = self.runtime
        self._shutdown(close=False)
        alarm = self._alarm if stopped is not None and stopped.host.notify_sinks() else None
        if alarm is None and stopped is not None:
            stopped.close()
            stopped = None
        try:
            health = None if stopped is None else database_health(stopped.engine)
            if not self._take_lock(alarm, health):
                return False
        finally:
            if stopped is not None:  # (the alarm has told "reachable again" by now)
                stopped.close()
        try:
            runtime = self.runtime_factory(self.config_path)
        except Exception as exc:
            log.error("cannot start again after taking the instance lock: %s", exc)
            return False
        self._start(runtime)
        log.warning("instance lock held again; work resumes: %s", self._status())
        self._notify(f"READY=1\nSTATUS=running: {self._status()}")
        return True

    def _supervise(self, runtime: Runtime) -> int:
        self._start(runtime)
        self._notify(f"READY=1\nSTATUS=running: {self._status()}")
        log.info("nebridge running: %s", self._status())
        interval = systemd.watchdog_interval(self.env)
        tick = min(interval or 1.0, 1.0)
        code = 0
        while True:
            self._wake.wait(tick)
            self._wake.clear()
            if self._stop:
                break
            if self.lock is not None and self.lock.lost() is not None:
                if not self._regain_lock():
                    code = 0 if self._stop else 1
                    break
                continue
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
        return code

    def reload(self) -> bool:
        """Re-read the configuration; keep the old one if the new one is invalid."""
        self._notify("RELOADING=1\nSTATUS=reloading configuration")
        try:
            new_runtime = self.runtime_factory(self.config_path)
        except Exception as exc:
            log.error("reload failed; keeping the old configuration: %s", exc)
            self._notify(
                f"READY=1\nSTATUS=reload failed, old configuration kept: {str(exc).splitlines()[0]}"
            )
            return False
        self._shutdown()
        self._start(new_runtime)
        log.info("configuration reloaded: %s", self._status())
        self._notify(f"READY=1\nSTATUS=running: {self._status()}")
        return True

    def _shutdown(self, close: bool = True) -> None:
        """Stop the scheduler (keeping its database alarm for the next) and close the
        runtime (unless ``close`` is False: then the caller closes it)."""
        if self.runtime is not None:
            self.runtime.stop_event.set()
        if self.scheduler is not None:
            self.scheduler.shutdown()
            self._alarm = self.scheduler.outage
        if self.runtime is not None and close:
            self.runtime.close()
        self.scheduler = None
        self.runtime = None
