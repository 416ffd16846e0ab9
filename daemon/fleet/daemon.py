"""``nebridge run`` in fleet mode: one worker serving the companies whose leases it holds.

Each held company runs as the single-company daemon runs: its :class:`Runtime`
(:func:`~daemon.fleet.runtime.company_runtime`, fenced by the lease) and its
:class:`~daemon.scheduler.Scheduler`. The main thread runs the
:class:`~daemon.fleet.worker.FleetWorker` rounds (leases, starting and stopping companies,
SIGHUP reloads); one more thread brings jobs forward when new work arrives (as the
supervisor's main loop does) and keeps systemd's watchdog fed.

SIGTERM/SIGINT: every company's running work finishes, then every lease is released (the
other workers take the companies over at once); exit 0. A job still running after
:data:`DRAIN_SECONDS` (a plugin hook that never returns) is named in the log, the leases are
released all the same and the process exits 1 at once.

Every company's jobs run on one :class:`~daemon.scheduler.JobHost`: one scheduler thread and
``fleet_job_slots`` threads for the whole worker, however many companies it serves. One
company never runs more than :func:`company_share` of them at once (a hook that never returns
in one company cannot starve the others), and a job running longer than
:data:`OVERDUE_INTERVALS` intervals is logged with its company and job (warehouse). The
watchdog is fed only while the shared scheduler's heartbeat fires.

SIGHUP: daemon.yaml and the company
files are read again; changed and removed companies stop, added ones are taken by whichever
worker has room, a refused file is logged and its company keeps its last valid version.
No instance lock is taken: the leases replace it.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from daemon import attention, stackdump, systemd
from daemon.attention import AttentionKind
from daemon.config import ConfigError, LoadedConfig, load_config
from daemon.fleet.companies import Companies, Company
from daemon.fleet.leases import Lease
from daemon.fleet.metrics import FleetMetrics, WorkerFigures
from daemon.fleet.runtime import FleetDatabase, company_runtime
from daemon.fleet.worker import FleetWorker
from daemon.pluginmanager import discover_entry_points
from daemon.runtime import Runtime
from daemon.scheduler import JobHost, Scheduler
from hooks.records import Problem

log = logging.getLogger(__name__)

#: Seconds between two looks for jobs to bring forward (and watchdog pings).
WAKE_SECONDS = 1.0
#: Seconds running jobs get to finish after SIGTERM before the worker exits without them.
DRAIN_SECONDS = 60.0
#: A job running longer than this many of its company's intervals is logged as overdue.
OVERDUE_INTERVALS = 5


def company_share(job_slots: int) -> int:
    """How many of a worker's ``job_slots`` one company's jobs may hold at once: ⌈slots/2⌉."""
    return math.ceil(job_slots / 2)


class CompanyRun:
    """One company's engine on this worker: its runtime and its jobs on the worker's shared
    :class:`~daemon.scheduler.JobHost`."""

    def __init__(
        self,
        runtime: Runtime,
        wake: threading.Event,
        on_stop: Callable[[], None],
        host: JobHost,
        company: str,
        share: int,
        drain_until: Callable[[], float] = lambda: time.monotonic() + DRAIN_SECONDS,
        on_stuck: Callable[[], None] = lambda: None,
    ) -> None:
        self.runtime = runtime
        self.on_stop = on_stop
        self.company = company
        self.drain_until = drain_until
        self.on_stuck = on_stuck
        #: Jobs that had not finished when :meth:`stop` gave up waiting.
        self.stuck: list[str] = []
        runtime.start_connector()
        self.scheduler = Scheduler(runtime, wake=wake.set, host=host, company=company, share=share)
        self.scheduler.start()

    def __repr__(self) -> str:
        return f"CompanyRun({self.runtime.loaded.path})"

    def stop(self) -> None:
        """Stop starting work, let running jobs finish (until the drain deadline), close the
        runtime; a job still running then is logged and left in :attr:`stuck`."""
        self.on_stop()
        self.runtime.stop_event.set()
        try:
            self.stuck = self.scheduler.shutdown(max(0.0, self.drain_until() - time.monotonic()))
            if self.stuck:
                self.on_stuck()
                log.error(
                    "company %s: job(s) %s did not finish within the drain time; "
                    "nothing more they do is committed or sent (the lease fences them) "
                    "— find the plugin hook that never returns (SIGUSR1 dumps every "
                    "thread's stack)",
                    self.company,
                    ", ".join(self.stuck),
                )
        finally:
            self.runtime.close()


class FleetDaemon:
    """The process of ``nebridge run`` when daemon.yaml sets ``companies_dir``."""

    def __init__(
        self,
        config_path: Path,
        env: Mapping[str, str] | None = None,
        worker_id: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.config_path = config_path
        #: ``nebridge run --metrics-port`` / NEBRIDGE_METRICS_PORT: this worker's own port,
        #: overriding daemon.yaml's ``metrics.port`` (several workers on one host).
        self.metrics_port = metrics_port
        self.env = dict(env) if env is not None else None
        self.worker_id = worker_id
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._runs: dict[str, CompanyRun] = {}
        self._guard = threading.Lock()
        self.loaded: LoadedConfig | None = None
        self.fleet: FleetDatabase | None = None
        self.jobs: JobHost | None = None
        #: The installed plugins, looked up once for every company this worker starts (the
        #: lookup reads every installed package's metadata: ~90 ms a time).
        self._entry_points: dict[str, md.EntryPoint] | None = None
        self._job_slots = 1
        self._share = 1
        #: ``/metrics`` on daemon.yaml's ``metrics.port``: every company served, the worker.
        self.metrics = FleetMetrics()
        self._drain_until: float | None = None
        self._stuck = False
        self.drain_seconds = DRAIN_SECONDS

    def __repr__(self) -> str:
        return f"FleetDaemon({self.config_path}, serving {len(self._runs)})"

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain and release; SIGUSR1 writes every thread's stack to stderr
        (the journal), to see what a worker that seems stuck is waiting for; SIGHUP is
        installed by the worker's loop."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        stackdump.install()

    def _on_stop(self, _signum: int, _frame: FrameType | None) -> None:
        if self._drain_until is None:
            self._drain_until = time.monotonic() + self.drain_seconds
        self.stop.set()
        self._wake.set()

    def _start_company(self, company: Company, lease: Lease) -> CompanyRun:
        assert self.loaded is not None and self.fleet is not None and self.jobs is not None
        runtime = company_runtime(
            self.loaded, company, lease=lease, fleet=self.fleet, entry_points=self._entry_points
        )
        runtime.metrics = self.metrics.calls(company.code)
        try:
            run = CompanyRun(
                runtime,
                self._wake,
                on_stop=lambda: self._forget(company.code),
                host=self.jobs,
                company=company.code,
                share=self._share,
                drain_until=self._drain_deadline,
                on_stuck=self._mark_stuck,
            )
        except BaseException:
            runtime.close()
            raise
        with self._guard:
            self._runs[company.code] = run
        self.metrics.watch(company.code, runtime.db, runtime.host)
        return run

    def _report_not_started(self, company: Company, reason: str) -> None:
        """An attention item in the company's own tables: `attention --company`, `companies
        list` and its notifications show that it is held but not served, and why."""
        assert self.fleet is not None
        attention.report(
            self.fleet.company_engine(company.code),
            Problem(
                key=f"{AttentionKind.SERVICE_NOT_STARTED}:{company.code}",
                kind=AttentionKind.SERVICE_NOT_STARTED,
                subject=company.code,
                reason=f"the worker holding company {company.code} does not serve it: {reason}",
                fix=f"fix its file ({company.path}) or the plugin named in the worker's log "
                "(`journalctl -u nebridge`), then `systemctl reload nebridge` (SIGHUP)",
            ),
            source="fleet",
        )

    def _resolve_not_started(self, company: Company) -> None:
        assert self.fleet is not None
        attention.resolve(
            self.fleet.company_engine(company.code),
            [f"{AttentionKind.SERVICE_NOT_STARTED}:{company.code}"],
        )

    def _reload_base(self) -> LoadedConfig:
        """daemon.yaml read again (SIGHUP); its fleet settings and database need a restart.
        The installed plugins are looked up again too (one just installed is found)."""
        loaded = load_config(self.config_path)
        self._entry_points = discover_entry_points()
        assert self.loaded is not None
        for key in ("database_url", "companies_dir"):
            if getattr(loaded.config, key) != getattr(self.loaded.config, key):
                log.error(
                    "daemon.yaml: `%s` changed; restart the worker to apply it "
                    "(`systemctl restart nebridge`) — until then it keeps serving with "
                    "the daemon.yaml it started with",
                    key,
                )
                return self.loaded
        for key in ("fleet_lease_seconds", "fleet_job_slots"):
            if getattr(loaded.config, key) != getattr(self.loaded.config, key):
                log.warning(
                    "daemon.yaml: `%s` changed; it takes effect when the worker "
                    "restarts (`systemctl restart nebridge`)",
                    key,
                )
        self.loaded = loaded
        return loaded

    def _drain_deadline(self) -> float:
        """Until when a stopping company's jobs may run: the SIGTERM's deadline, or (a company
        moved or reloaded) the drain time from now."""
        return self._drain_until or time.monotonic() + self.drain_seconds

    def _forget(self, code: str) -> None:
        with self._guard:
            self._runs.pop(code, None)
        self.metrics.forget(code)

    def _figures(self, worker: FleetWorker) -> WorkerFigures:
        """The worker's own metrics, read from its live objects at a scrape (no query)."""
        assert self.jobs is not None
        return WorkerFigures(
            worker_id=worker.keeper.worker_id,
            held=len(worker.keeper.held()),
            serving=len(worker.serving()),
            starting=len(worker.starting()),
            failed=len(worker.failures()),
            job_slots=self._job_slots,
            jobs_running=self.jobs.busy(),
            jobs_waiting=self.jobs.waiting(),
            lease_renewals=worker.keeper.renewals,
            leases_lost=worker.keeper.losses,
        )

    def _mark_stuck(self) -> None:
        self._stuck = True

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
                limit = OVERDUE_INTERVALS * run.scheduler.interval
                for job_id, seconds in run.scheduler.overdue(limit):
                    log.warning(
                        "company %s: job %s has run for %d s (over %d intervals), "
                        "holding one of this worker's job slots — a plugin hook that "
                        "does not return? (SIGUSR1 dumps every thread's stack)",
                        run.company,
                        job_id,
                        seconds,
                        OVERDUE_INTERVALS,
                    )
            if interval is not None and self.jobs is not None and self.jobs.healthy():
                systemd.notify("WATCHDOG=1", self.env)

    def run(self) -> int:
        """Serve until SIGTERM; the process exit code."""
        try:
            self.loaded = load_config(self.config_path)
            self._entry_points = discover_entry_points()
            companies = Companies(self.loaded)
            settings = self.loaded.config
            self.fleet = FleetDatabase(
                settings.resolved_database_url,
                lease_seconds=settings.fleet_lease_seconds,
                job_slots=settings.fleet_job_slots,
                credentials_dir=settings.credentials_dir,
            )
            self.jobs = JobHost.for_worker(settings.fleet_job_slots)
            self._job_slots = settings.fleet_job_slots
            self._share = company_share(settings.fleet_job_slots)
        except ConfigError as exc:
            log.error("%s", exc)
            return 1
        except Exception as exc:
            log.error("cannot start the fleet worker: %s", exc)
            return 1
        try:
            self.fleet.vault  # noqa: B018 - no key: refuse now, not at the first call
            worker = FleetWorker(
                companies,
                self.fleet.control,
                self._start_company,
                lease_seconds=settings.fleet_lease_seconds,
                worker_id=self.worker_id,
                load_base=self._reload_base,
                on_failed=self._report_not_started,
                on_started=self._resolve_not_started,
            )
            self.metrics.watch_worker(lambda: self._figures(worker))
            port = settings.metrics.port if self.metrics_port is None else self.metrics_port
            if port:  # a taken port: refused now, as the single daemon does
                self.metrics.serve(settings.metrics.host, port)
        except Exception as exc:
            self.fleet.close()
            log.error("cannot start the fleet worker: %s", exc)
            return 1
        for refusal in companies.refused:
            log.error("company file refused (fix it and send SIGHUP): %s", refusal)
        self.jobs.start()
        waker = threading.Thread(target=self._wake_loop, name="fleet-wake", daemon=True)
        waker.start()
        log.info(
            "nebridge fleet worker %s running: %d companies in %s",
            worker.keeper.worker_id,
            len(companies.companies),
            settings.companies_dir,
        )
        systemd.notify(
            f"READY=1\nSTATUS=fleet worker: {len(companies.companies)} companies", self.env
        )
        try:
            worker.serve(self.stop)
        finally:
            systemd.notify("STOPPING=1\nSTATUS=draining and releasing the companies", self.env)
            self.stop.set()
            self._wake.set()
            waker.join()
            self.metrics.stop()
            self.jobs.shutdown(wait=not self._stuck)
            self.fleet.close()
            log.info("stopped")
        if self._stuck:
            log.error(
                "exiting with job(s) still running past the drain time (named above); "
                "every lease was released"
            )
            logging.shutdown()
            os._exit(1)  # a stuck job thread would keep the interpreter from exiting
        return 0
