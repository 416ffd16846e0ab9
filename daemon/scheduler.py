"""APScheduler 3 wiring: one job per warehouse pipeline, the intake and the dispatcher.

Schedules are rebuilt from ``daemon.yaml`` at every start and reload (in-memory job store);
progress lives in our own tables. Separate executors keep the dispatcher and the intake from
being starved by busy warehouse pipelines. A warehouse's order import is a job of its own, on
an executor of its own: an import that takes minutes (hundreds of orders through a WMS's rate
limit) never holds back that warehouse's shipments and receipts. A job still running when its
next run is due skips that run quietly (APScheduler's warning about it is logged at debug).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from daemon.logsetup import push_log_context, reset_log_context
from daemon.notify import OutageAlarm
from daemon.pipeline import Stage, WarehousePipeline
from daemon.runtime import Runtime
from daemon.stock import check as stock_check
from daemon.stock import plugin_options
from daemon.store.engine import DatabaseUnavailable, database_health

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
DISPATCHER_JOB = "dispatcher"
INTAKE_JOB = "intake"
TOKEN_GUARD_JOB = "token_guard"
NOTIFY_JOB = "notify"
DATABASE_ALARM_JOB = "database_alarm"
#: The ``stock_reconcile`` comparison: after each snapshot, and every ``schedule_hours``.
STOCK_JOB = "stock_check"
EVENT_STAGES = (Stage.SHIPMENTS, Stage.RECEIPTS)


def warehouse_job(code: str) -> str:
    """The job id of a warehouse's shipments and receipts."""
    return f"warehouse:{code}"


def import_job(code: str) -> str:
    """The job id of a warehouse's order import."""
    return f"import:{code}"


class _QuietSkips(logging.Filter):
    """Drops APScheduler's "maximum number of running instances reached" warnings: a long
    job skipping its next run is expected here (the scheduler logs it at debug itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in record.getMessage()


_QUIET_SKIPS = _QuietSkips()


class Scheduler:
    """Runs the runtime's work on a background scheduler; the main thread supervises it."""

    def __init__(
        self,
        runtime: Runtime,
        wake: Callable[[], None] = lambda: None,
        slots: AbstractContextManager[object] | None = None,
        company: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.wake = wake
        #: Shared by the companies of a fleet worker: how many of their jobs run at once.
        self.slots = slots
        #: A fleet company's code: every log line of its jobs says ``company=…``.
        self.log_values = {} if company is None else {"company": company}
        self._run_requests: set[str] = set()
        self._running: set[str] = set()
        #: When each running job started (monotonic), and the runs already reported overdue.
        self._started: dict[str, float] = {}
        self._reported: set[tuple[str, float]] = set()
        self._again: set[str] = set()
        schedule = runtime.config.schedule
        self.interval = schedule.interval_seconds
        self._last_heartbeat = time.monotonic()
        self.stale_after = 5 * HEARTBEAT_SECONDS
        self._last_full_intake = 0.0
        self._lock = threading.Lock()
        self._notifier_recovered = False
        self._snapshot_arrived = False
        self._outage = OutageAlarm(
            runtime.host,
            runtime.config.notify,
            runtime.notify_context,
            runtime.clock,
            company=runtime.company,
        )
        self.scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(max(2, min(8, len(runtime.config.warehouses)))),
                "imports": ThreadPoolExecutor(
                    max(1, min(4, sum(1 for w in runtime.config.warehouses if w.import_orders)))
                ),
                "outbox": ThreadPoolExecutor(1),
                "intake": ThreadPoolExecutor(1),
                "heartbeat": ThreadPoolExecutor(1),
                "notify": ThreadPoolExecutor(1),  # a slow sink never holds back other work
            },
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self.scheduler.add_listener(
            self._on_problem, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        apscheduler_log = logging.getLogger("apscheduler.scheduler")
        if _QUIET_SKIPS not in apscheduler_log.filters:
            apscheduler_log.addFilter(_QUIET_SKIPS)

    def start(self) -> None:
        """Create the jobs from the configuration and start the scheduler thread."""
        schedule = self.runtime.config.schedule
        grace = max(1, int(self.interval / 2))
        for pipeline in self.runtime.pipelines():
            code = pipeline.warehouse.code
            self.scheduler.add_job(
                self._guarded(self._pipeline_job(pipeline, EVENT_STAGES), warehouse_job(code)),
                "interval",
                seconds=self.interval,
                jitter=schedule.jitter_seconds,
                id=warehouse_job(code),
                replace_existing=True,
                misfire_grace_time=grace,
                next_run_time=datetime.now().astimezone(),
            )
            if pipeline.warehouse.import_orders:
                self.scheduler.add_job(
                    self._guarded(
                        self._pipeline_job(pipeline, (Stage.IMPORT_ORDERS,)), import_job(code)
                    ),
                    "interval",
                    seconds=self.interval,
                    jitter=schedule.jitter_seconds,
                    id=import_job(code),
                    executor="imports",
                    replace_existing=True,
                    misfire_grace_time=grace,
                    next_run_time=datetime.now().astimezone(),
                )
        self.scheduler.add_job(
            self._guarded(self._dispatch, DISPATCHER_JOB),
            "interval",
            seconds=schedule.dispatch_interval_seconds,
            id=DISPATCHER_JOB,
            executor="outbox",
            replace_existing=True,
            misfire_grace_time=grace,
        )
        if self.runtime.connector is not None:
            self.scheduler.add_job(
                self._guarded(self._intake, INTAKE_JOB),
                "interval",
                seconds=schedule.intake_poll_seconds,
                id=INTAKE_JOB,
                executor="intake",
                replace_existing=True,
                misfire_grace_time=grace,
                next_run_time=datetime.now().astimezone(),
            )
        self.scheduler.add_job(
            self._guarded(self._guard_tokens, TOKEN_GUARD_JOB),
            "interval",
            minutes=schedule.token_guard_minutes,
            id=TOKEN_GUARD_JOB,
            executor="outbox",
            replace_existing=True,
            misfire_grace_time=grace,
            next_run_time=datetime.now().astimezone(),
        )
        self.scheduler.add_job(
            self._guarded(self._notify, NOTIFY_JOB),
            "interval",
            seconds=self.runtime.config.notify.interval_seconds,
            id=NOTIFY_JOB,
            executor="notify",
            replace_existing=True,
            misfire_grace_time=grace,
            next_run_time=datetime.now().astimezone(),
        )
        self.scheduler.add_job(  # not guarded: it is about the database being down
            self._database_alarm,
            "interval",
            seconds=self.runtime.config.notify.interval_seconds,
            id=DATABASE_ALARM_JOB,
            executor="notify",
            replace_existing=True,
            misfire_grace_time=grace,
        )
        stock_options = plugin_options(self.runtime)
        if stock_options is not None and self.runtime.connector is not None:
            self.scheduler.add_job(
                self._guarded(self._stock_check, STOCK_JOB),
                "interval",
                seconds=stock_options.schedule_hours * 3600,
                id=STOCK_JOB,
                replace_existing=True,
                misfire_grace_time=grace,
            )
        self.scheduler.add_job(
            self._beat,
            "interval",
            seconds=HEARTBEAT_SECONDS,
            id="heartbeat",
            executor="heartbeat",
            replace_existing=True,
        )
        self.scheduler.start()

    def run_now(self, job_id: str) -> None:
        """Ask for a job to run as soon as possible (new work arrived).

        Called from job threads, so it only records the request and wakes the main thread,
        which applies it (:meth:`apply_run_requests`). Scheduler calls from job threads could
        deadlock with a shutdown in progress, which holds the scheduler's locks while it
        waits for running jobs.
        """
        with self._lock:
            self._run_requests.add(job_id)
            if job_id in self._running:  # APScheduler would skip it (max_instances=1)
                self._again.add(job_id)
        self.wake()

    def apply_run_requests(self) -> None:
        """Bring requested jobs forward to now (main thread only)."""
        with self._lock:
            requests, self._run_requests = self._run_requests, set()
        if self._should_stop() or not self.scheduler.running:
            return
        now = datetime.now().astimezone()
        with self._lock:
            running = set(self._running)  # they run again when they end (``_again``)
        for job_id in sorted(requests - running):
            job = self.scheduler.get_job(job_id)
            if job is not None:
                job.modify(next_run_time=now)

    def healthy(self) -> bool:
        """True while the scheduler thread runs and its heartbeat job fires on time."""
        return bool(self.scheduler.running) and (
            time.monotonic() - self._last_heartbeat < self.stale_after
        )

    def shutdown(self, wait_seconds: float | None = None) -> list[str]:
        """Stop starting work, let running jobs finish (for at most ``wait_seconds``; None:
        however long they take), stop the thread; the jobs still running when it returns."""
        if self.scheduler.running:
            self.scheduler.pause()
            self.scheduler.shutdown(wait=wait_seconds is None)
        deadline = time.monotonic() + (wait_seconds or 0.0)
        while True:
            with self._lock:
                running = sorted(self._started)
            if not running or time.monotonic() >= deadline:
                return running
            time.sleep(0.05)

    def overdue(self, after_seconds: float) -> list[tuple[str, float]]:
        """Jobs running for longer than ``after_seconds``, each run reported once: (job id,
        seconds it has run)."""
        now = time.monotonic()
        found = []
        with self._lock:
            for job_id, began in sorted(self._started.items()):
                if now - began > after_seconds and (job_id, began) not in self._reported:
                    self._reported.add((job_id, began))
                    found.append((job_id, now - began))
        return found

    # -- jobs -------------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        return self.runtime.stop_event.is_set()

    def _beat(self) -> None:
        self._last_heartbeat = time.monotonic()

    def _intake(self) -> None:
        connector = self.runtime.connector
        intake = self.runtime.intake()
        if connector is None or intake is None:
            return
        now = time.monotonic()
        if not connector.has_new_input() and now - self._last_full_intake < self.interval:
            return
        self._last_full_intake = now
        report = intake.run_once()
        if report.stock_snapshots:
            self._snapshot_arrived = True
            self.run_now(STOCK_JOB)
        for code in sorted(report.warehouses):
            self.run_now(warehouse_job(code))

    def _stock_check(self) -> None:
        """Compare stock: the snapshot that just arrived, or (on the schedule) a fresh one
        read from an API WMS."""
        take, self._snapshot_arrived = not self._snapshot_arrived, False
        stock_check(self.runtime, take=take)

    def _pipeline_job(
        self, pipeline: WarehousePipeline, stages: tuple[Stage, ...]
    ) -> Callable[[], None]:
        def job() -> None:
            results = pipeline.run_once(should_stop=self._should_stop, stages=stages)
            if any(r.items_out for r in results):
                self.run_now(DISPATCHER_JOB)

        return job

    def _guard_tokens(self) -> None:
        self.runtime.token_guard().check()

    def _notify(self) -> None:
        notifier = self.runtime.notifier()
        if not self._notifier_recovered:  # this process sends nothing before this
            notifier.recover()
            self._notifier_recovered = True
        notifier.run_once(self._should_stop)

    def _database_alarm(self) -> None:
        """Tell the sinks directly when the database has been down for long (and back)."""
        health = database_health(self.runtime.engine)
        since = health.down_since
        down = None if since is None else health.monotonic() - since
        try:
            for error in self._outage.check(down, health.reason):
                log.warning("could not tell %s that the database is unreachable", error)
        except Exception:
            log.exception("the database alarm failed; it runs again at its next interval")

    def _dispatch(self) -> None:
        report = self.runtime.dispatcher().run_once(self._should_stop)
        for error in report.errors:
            log.error("dispatcher: %s", error)

    def _guarded(self, fn: Callable[[], None], job_id: str) -> Callable[[], None]:
        """``fn`` with errors logged; asked for again while it ran, it runs again at once.

        While the database is unavailable no job runs: :class:`DatabaseHealth` probes it with
        backoff and logs the outage once (down, still down, back), blaming the database.
        """
        health = database_health(self.runtime.engine)

        def run() -> None:
            if self._should_stop() or not health.available():
                return
            with self._lock:
                self._running.add(job_id)
                self._started[job_id] = time.monotonic()
                self._again.discard(job_id)
            token = push_log_context(**self.log_values)
            try:
                if self.slots is None:
                    fn()
                else:
                    with self.slots:
                        if not self._should_stop():
                            fn()
            except DatabaseUnavailable:
                pass  # logged once by the health check above, which now holds the jobs back
            except Exception:
                log.exception("scheduled job failed; it will run again at its next interval")
            finally:
                reset_log_context(token)
                with self._lock:
                    self._running.discard(job_id)
                    began = self._started.pop(job_id, None)
                    self._reported.discard((job_id, began or 0.0))
                    again = job_id in self._again
                    self._again.discard(job_id)
                if again:
                    self.run_now(job_id)

        return run

    def _on_problem(self, event: object) -> None:
        code = getattr(event, "code", 0)
        job_id = getattr(event, "job_id", "?")
        if code == EVENT_JOB_MAX_INSTANCES:
            log.debug("job %s still running; skipped one run", job_id)
        elif code == EVENT_JOB_MISSED:
            log.warning("job %s missed its run time (machine busy?)", job_id)
