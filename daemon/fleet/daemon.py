"""``nebridge run`` in fleet mode: one worker serving the companies whose leases it holds.

Each held company runs as the single-company daemon runs: its :class:`Runtime`
(:func:`~daemon.fleet.runtime.company_runtime`, fenced by the lease) and its
:class:`~daemon.scheduler.Scheduler`. The main thread runs the
:class:`~daemon.fleet.worker.FleetWorker` rounds (leases, starting and stopping companies,
SIGHUP reloads); one more thread brings jobs forward when new work arrives (as the
supervisor's main loop does) and keeps systemd's watchdog fed.

SIGTERM/SIGINT: every company's running work finishes, then every lease is released (the
other workers take the companies over at once); exit 0. SIGHUP: daemon.yaml and the company
files are read again; changed and removed companies stop, added ones are taken by whichever
worker has room, a refused file is logged and its company keeps its last valid version.
No instance lock is taken: the leases replace it.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from daemon import systemd
from daemon.config import ConfigError, LoadedConfig, load_config
from daemon.fleet.companies import Companies, Company
from daemon.fleet.leases import Lease
from daemon.fleet.runtime import FleetDatabase, company_runtime
from daemon.fleet.worker import FleetWorker
from daemon.runtime import Runtime
from daemon.scheduler import Scheduler

log = logging.getLogger(__name__)

#: Seconds between two looks for jobs to bring forward (and watchdog pings).
WAKE_SECONDS = 1.0


class CompanyRun:
    """One company's engine on this worker: its runtime and its scheduled jobs."""

    def __init__(self, runtime: Runtime, wake: threading.Event, on_stop: Callable[[], None],
                 slots: threading.Semaphore | None = None, company: str | None = None) -> None:
        self.runtime = runtime
        self.on_stop = on_stop
        if runtime.connector is not None:
            runtime.connector.recover(runtime.connector_context())
        self.scheduler = Scheduler(runtime, wake=wake.set, slots=slots, company=company)
        self.scheduler.start()

    def __repr__(self) -> str:
        return f"CompanyRun({self.runtime.loaded.path})"

    def stop(self) -> None:
        """Stop starting work, let running jobs finish, close the runtime."""
        self.on_stop()
        self.runtime.stop_event.set()
        try:
            self.scheduler.shutdown()
        finally:
            self.runtime.close()


class FleetDaemon:
    """The process of ``nebridge run`` when daemon.yaml sets ``companies_dir``."""

    def __init__(self, config_path: Path, env: Mapping[str, str] | None = None,
                 worker_id: str | None = None) -> None:
        self.config_path = config_path
        self.env = dict(env) if env is not None else None
        self.worker_id = worker_id
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._runs: dict[str, CompanyRun] = {}
        self._guard = threading.Lock()
        self.loaded: LoadedConfig | None = None
        self.fleet: FleetDatabase | None = None
        self._slots = threading.BoundedSemaphore(1)

    def __repr__(self) -> str:
        return f"FleetDaemon({self.config_path}, serving {len(self._runs)})"

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain and release; SIGUSR1 writes every thread's stack to stderr
        (the journal), to see what a worker that seems stuck is waiting for; SIGHUP is
        installed by the worker's loop."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def _on_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stop.set()
        self._wake.set()

    def _start_company(self, company: Company, lease: Lease) -> CompanyRun:
        assert self.loaded is not None and self.fleet is not None
        runtime = company_runtime(self.loaded, company, lease=lease, fleet=self.fleet)
        try:
            run = CompanyRun(runtime, self._wake, on_stop=lambda: self._forget(company.code),
                             slots=self._slots, company=company.code)
        except BaseException:
            runtime.close()
            raise
        with self._guard:
            self._runs[company.code] = run
        return run

    def _reload_base(self) -> LoadedConfig:
        """daemon.yaml read again (SIGHUP); its fleet settings and database need a restart."""
        loaded = load_config(self.config_path)
        assert self.loaded is not None
        for key in ("database_url", "companies_dir"):
            if getattr(loaded.config, key) != getattr(self.loaded.config, key):
                log.error("daemon.yaml: `%s` changed; restart the worker to apply it "
                          "(`systemctl restart nebridge`) — until then it keeps serving with "
                          "the daemon.yaml it started with", key)
                return self.loaded
        for key in ("fleet_lease_seconds", "fleet_job_slots"):
            if getattr(loaded.config, key) != getattr(self.loaded.config, key):
                log.warning("daemon.yaml: `%s` changed; it takes effect when the worker "
                            "restarts (`systemctl restart nebridge`)", key)
        self.loaded = loaded
        return loaded

    def _forget(self, code: str) -> None:
        with self._guard:
            self._runs.pop(code, None)

    def _wake_loop(self) -> None:
        """Bring requested jobs forward; feed the watchdog while the worker loop lives."""
        interval = systemd.watchdog_interval(self.env)
        while not self.stop.is_set():
            self._wake.wait(min(WAKE_SECONDS, interval or WAKE_SECONDS))
            self._wake.clear()
            with self._guard:
                runs = list(self._runs.values())
            for run in runs:
                try:
                    run.scheduler.apply_run_requests()
                except Exception as exc:  # a company stopping meanwhile
                    log.debug("bringing jobs forward failed: %s", exc)
            if interval is not None:
                systemd.notify("WATCHDOG=1", self.env)

    def run(self) -> int:
        """Serve until SIGTERM; the process exit code."""
        try:
            self.loaded = load_config(self.config_path)
            companies = Companies(self.loaded)
            settings = self.loaded.config
            self.fleet = FleetDatabase(settings.resolved_database_url,
                                       lease_seconds=settings.fleet_lease_seconds,
                                       job_slots=settings.fleet_job_slots,
                                       credentials_dir=settings.credentials_dir)
            self._slots = threading.BoundedSemaphore(settings.fleet_job_slots)
        except ConfigError as exc:
            log.error("%s", exc)
            return 1
        except Exception as exc:
            log.error("cannot start the fleet worker: %s", exc)
            return 1
        try:
            self.fleet.vault  # noqa: B018 - no key: refuse now, not at the first call
            worker = FleetWorker(companies, self.fleet.control, self._start_company,
                                 lease_seconds=settings.fleet_lease_seconds,
                                 worker_id=self.worker_id, load_base=self._reload_base)
        except Exception as exc:
            self.fleet.close()
            log.error("cannot start the fleet worker: %s", exc)
            return 1
        for refusal in companies.refused:
            log.error("company file refused (fix it and send SIGHUP): %s", refusal)
        waker = threading.Thread(target=self._wake_loop, name="fleet-wake", daemon=True)
        waker.start()
        log.info("nebridge fleet worker %s running: %d companies in %s",
                 worker.keeper.worker_id, len(companies.companies), settings.companies_dir)
        systemd.notify(f"READY=1\nSTATUS=fleet worker: {len(companies.companies)} companies",
                       self.env)
        try:
            worker.serve(self.stop)
        finally:
            systemd.notify("STOPPING=1\nSTATUS=draining and releasing the companies", self.env)
            self.stop.set()
            self._wake.set()
            waker.join()
            self.fleet.close()
            log.info("stopped")
        return 0

