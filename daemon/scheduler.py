"""APScheduler 3 wiring: one job per warehouse pipeline, the intake and the dispatcher.

Schedules are rebuilt from ``daemon.yaml`` at every start and reload (in-memory job store);
progress lives in our own tables. In single-company mode separate executors keep the
dispatcher and the intake from being starved by busy warehouse pipelines, and a warehouse's
order import is a job of its own, on an executor of its own: an import that takes minutes
(hundreds of orders through a WMS's rate limit) never holds back that warehouse's shipments
and receipts. A fleet worker runs every company's jobs on one shared :class:`JobHost` (one
scheduler thread and ``fleet_job_slots`` threads, however many companies), each company
limited to its share of them. A job still running when its next run is due skips that run
quietly (APScheduler's warning about it is logged at debug).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from daemon.fleet.leases import LeaseLost
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
    """Drops APScheduler's own warnings about skipped and late runs: a long job skipping its
    next run is expected here, and late runs are reported by :class:`JobHost` itself, once a
    minute for all jobs, instead of once per job."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(
            words in message for words in ("maximum number of running instances", "was missed by")
        )


_QUIET_SKIPS = _QuietSkips()
#: Seconds between two reports of jobs that started late, and how late counts.
LATE_REPORT_SECONDS = 60.0
#: Seconds between two looks of a fleet worker's poll at its companies' intakes.
POLL_SECONDS = 1.0


def notify_threads(job_slots: int) -> int:
    """The notification pool of a fleet worker: a slow sink of one company holds at most one
    of them (its notification job never runs twice at once)."""
    return max(2, job_slots // 2 + 1)


class JobHost:
    """The APScheduler thread, its thread pools and one heartbeat job.

    A single-company daemon's :class:`Scheduler` owns one, with a pool per kind of work so the
    dispatcher and the intake are never starved by busy warehouse pipelines. A fleet worker
    shares one among every company it serves: every company's work runs on one pool of
    ``fleet_job_slots`` threads (notifications on a small pool of their own), so a worker's
    threads do not grow with its companies. A run that waits for a free thread is not dropped:
    it runs late (a job never queues twice: ``max_instances`` is 1), and how late is reported
    (:meth:`late_runs`, logged at most once a minute) — the sign that a worker needs more job
    slots or another worker beside it.
    """

    def __init__(
        self, pools: dict[str, int], lanes: dict[str, str] | None = None, *, shared: bool = False
    ) -> None:
        #: Which pool runs each kind of work (``lane``); identity when not given.
        self.lanes = lanes or {}
        #: Shared by the companies of a fleet worker: their intakes are polled by one job.
        self.shared = shared
        self._polls: dict[str, Callable[[], None]] = {}
        self.stale_after = 5 * HEARTBEAT_SECONDS
        self._last_heartbeat = time.monotonic()
        #: Runs handed to a pool and not started yet (when), and runs that started before
        #: the scheduler thread noted their submission (a job runs once at a time).
        self._submitted: dict[str, float] = {}
        self._begun: set[str] = set()
        self._late: list[tuple[str, float]] = []
        self._late_reported = time.monotonic()
        self._busy = 0
        self._guard = threading.Lock()
        self.scheduler = BackgroundScheduler(
            executors={name: ThreadPoolExecutor(size) for name, size in pools.items()}
            | {"heartbeat": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self.scheduler.add_listener(
            self._on_problem, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        self.scheduler.add_listener(self._on_submitted, EVENT_JOB_SUBMITTED)
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            logger = logging.getLogger(name)
            if _QUIET_SKIPS not in logger.filters:
                logger.addFilter(_QUIET_SKIPS)

    @classmethod
    def for_company(cls, runtime: Runtime) -> JobHost:
        """The pools of a single-company daemon, sized by its warehouses."""
        warehouses = runtime.config.warehouses
        return cls(
            {
                "default": max(2, min(8, len(warehouses))),
                "imports": max(1, min(4, sum(1 for w in warehouses if w.import_orders))),
                "outbox": 1,
                "intake": 1,
                "notify": 1,  # a slow sink never holds back other work
            }
        )

    @classmethod
    def for_worker(cls, job_slots: int) -> JobHost:
        """The pools a fleet worker shares among its companies: ``job_slots`` threads for
        their work, :func:`notify_threads` for their notifications, one for the poll of
        their intakes (:meth:`add_poll`)."""
        lanes = dict.fromkeys(("default", "imports", "outbox", "intake"), "work")
        return cls(
            {"work": job_slots, "notify": notify_threads(job_slots), "poll": 1},
            lanes | {"notify": "notify"},
            shared=True,
        )

    def executor(self, lane: str) -> str:
        """The pool that runs work of kind ``lane``."""
        return self.lanes.get(lane, lane)

    def start(self) -> None:
        """Start the scheduler thread, its heartbeat and (shared) the poll of the intakes."""
        if self.shared:
            self.scheduler.add_job(
                self._poll,
                "interval",
                seconds=POLL_SECONDS,
                id="poll",
                executor="poll",
                replace_existing=True,
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

    def shutdown(self, wait: bool) -> None:
        """Stop starting jobs and stop the thread (waiting for running jobs if ``wait``)."""
        if self.scheduler.running:
            self.scheduler.pause()
            self.scheduler.shutdown(wait=wait)

    def healthy(self) -> bool:
        """True while the scheduler thread runs and its heartbeat job fires on time."""
        return bool(self.scheduler.running) and (
            time.monotonic() - self._last_heartbeat < self.stale_after
        )

    def add_poll(self, key: str, poll: Callable[[], None]) -> None:
        """Run ``poll`` every :data:`POLL_SECONDS` on the one poll thread (until
        :meth:`remove_poll`): a fleet worker asks each company's connector whether input is
        waiting there, instead of running an intake job per company every second — a
        thousand companies would be a thousand jobs a second through the scheduler."""
        with self._guard:
            self._polls[key] = poll

    def remove_poll(self, key: str) -> None:
        """Stop polling for ``key``."""
        with self._guard:
            self._polls.pop(key, None)

    def _poll(self) -> None:
        with self._guard:
            polls = list(self._polls.values())
        for poll in polls:
            poll()

    def busy(self) -> int:
        """How many jobs run now (in every pool but the heartbeat's)."""
        with self._guard:
            return self._busy

    def waiting(self) -> int:
        """How many runs are due and wait for a free thread."""
        with self._guard:
            return len(self._submitted)

    def began(self, job_id: str) -> None:
        """A job starts running: note how long it waited for a thread since it was due."""
        now = time.monotonic()
        with self._guard:
            self._busy += 1
            submitted = self._submitted.pop(job_id, None)
            if submitted is None:  # it started before its submission was noted
                self._begun.add(job_id)
            elif now - submitted >= 1.0:
                self._late.append((job_id, now - submitted))

    def ended(self) -> None:
        """A job that :meth:`began` has ended."""
        with self._guard:
            self._busy -= 1

    def forget(self, job_ids: list[str]) -> None:
        """Drop what is noted about jobs that were removed."""
        with self._guard:
            for job_id in job_ids:
                self._submitted.pop(job_id, None)
                self._begun.discard(job_id)

    def late_runs(self) -> tuple[int, float, list[str]]:
        """Runs that waited a second or more for a thread since the last call: their number,
        the longest wait (seconds) and up to three of their job ids."""
        with self._guard:
            late, self._late = self._late, []
        longest = max((seconds for _, seconds in late), default=0.0)
        worst = [job for job, _ in sorted(late, key=lambda item: -item[1])[:3]]
        return len(late), longest, worst

    def _beat(self) -> None:
        self._last_heartbeat = time.monotonic()
        if self._last_heartbeat - self._late_reported < LATE_REPORT_SECONDS:
            return
        self._late_reported = self._last_heartbeat
        count, longest, worst = self.late_runs()
        if count:
            log.warning(
                "%d job run(s) in the last minute waited up to %.0f s for a free thread "
                "(e.g. %s): this process is not keeping up with its schedule — in fleet "
                "mode raise `fleet_job_slots` or start another worker; otherwise look for "
                "a slow warehouse or WMS (`nebridge doctor`)",
                count,
                longest,
                ", ".join(worst),
            )

    def _on_submitted(self, event: object) -> None:
        job_id = getattr(event, "job_id", None)
        if job_id is not None and job_id not in ("heartbeat", "poll"):  # the host's own
            with self._guard:
                if job_id in self._begun:
                    self._begun.discard(job_id)
                else:
                    self._submitted[job_id] = time.monotonic()

    def _on_problem(self, event: object) -> None:
        code = getattr(event, "code", 0)
        job_id = getattr(event, "job_id", "?")
        if code == EVENT_JOB_MAX_INSTANCES:
            log.debug("job %s still running; skipped one run", job_id)
        elif code == EVENT_JOB_MISSED:
            log.warning("job %s missed its run time (machine busy?)", job_id)


class Scheduler:
    """Schedules one runtime's work — on a :class:`JobHost` of its own (single-company
    mode), or on the fleet worker's shared one, its job ids prefixed by its company."""

    def __init__(
        self,
        runtime: Runtime,
        wake: Callable[[], None] = lambda: None,
        *,
        host: JobHost | None = None,
        company: str | None = None,
        share: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.wake = wake
        self._owns_host = host is None
        self.host = host if host is not None else JobHost.for_company(runtime)
        self.scheduler = self.host.scheduler
        #: At most this many of this runtime's jobs run at once (a fleet company's share of
        #: the worker's job slots); a job due while they are busy runs when one ends.
        self._share = None if share is None else threading.BoundedSemaphore(share)
        #: A fleet company's code: every log line of its jobs says ``company=…``.
        self.log_values = {} if company is None else {"company": company}
        self._prefix = "" if company is None or self._owns_host else f"{company}/"
        self._job_ids: list[str] = []
        #: Jobs asked to run sooner: at once (None) or at a time (a retry coming due).
        self._run_requests: dict[str, datetime | None] = {}
        self._running: set[str] = set()
        #: When each running job started (monotonic), and the runs already reported overdue.
        self._started: dict[str, float] = {}
        self._reported: set[tuple[str, float]] = set()
        self._again: set[str] = set()
        self._deferred: set[str] = set()
        self.interval = runtime.config.schedule.interval_seconds
        self._last_full_intake = 0.0
        self._last_poll = 0.0
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

    def _add(
        self,
        fn: Callable[[], None],
        name: str,
        lane: str,
        *,
        at_once: bool = True,
        **trigger: float | None,
    ) -> None:
        """Add job ``name``: an interval job (``trigger``) on the pool of ``lane``; ``at_once``:
        first run now. On a shared host a run that waits for a thread runs late, never
        dropped (its lateness is reported by the host)."""
        job_id = self._prefix + name
        grace = max(1, int(self.interval / 2)) if self._owns_host else None
        first = {"next_run_time": datetime.now().astimezone()} if at_once else {}
        self.scheduler.add_job(
            fn,
            "interval",
            id=job_id,
            executor=self.host.executor(lane),
            replace_existing=True,
            misfire_grace_time=grace,
            **first,
            **trigger,
        )
        self._job_ids.append(job_id)

    def start(self) -> None:
        """Create the jobs from the configuration (and start the scheduler thread, unless the
        host is the fleet worker's shared one)."""
        schedule = self.runtime.config.schedule
        every = {"seconds": self.interval, "jitter": schedule.jitter_seconds}
        for pipeline in self.runtime.pipelines():
            code = pipeline.warehouse.code
            job = warehouse_job(code)
            work = self._pipeline_job(pipeline, EVENT_STAGES)
            self._add(self._guarded(work, job), job, "default", **every)
            if pipeline.warehouse.import_orders:
                job = import_job(code)
                work = self._pipeline_job(pipeline, (Stage.IMPORT_ORDERS,))
                self._add(self._guarded(work, job), job, "imports", **every)
        self._add(  # at once: items a crash left in flight are settled first, not an interval on
            self._guarded(self._dispatch, DISPATCHER_JOB),
            DISPATCHER_JOB,
            "outbox",
            seconds=schedule.dispatch_interval_seconds,
        )
        if self.runtime.connector is not None:
            # alone, the intake job looks for input itself every intake_poll_seconds; on a
            # shared host the worker's poll looks (and brings it forward), and it runs on its
            # own once an interval
            self._add(
                self._guarded(self._intake, INTAKE_JOB),
                INTAKE_JOB,
                "intake",
                seconds=schedule.intake_poll_seconds if self._owns_host else self.interval,
            )
            if not self._owns_host:
                self.host.add_poll(self._prefix, self._poll_intake)
        self._add(
            self._guarded(self._guard_tokens, TOKEN_GUARD_JOB),
            TOKEN_GUARD_JOB,
            "outbox",
            minutes=schedule.token_guard_minutes,
        )
        if self.runtime.host.notify_sinks():  # (a reload builds the jobs again)
            every_notify = self.runtime.config.notify.interval_seconds
            self._add(
                self._guarded(self._notify, NOTIFY_JOB), NOTIFY_JOB, "notify", seconds=every_notify
            )
            self._add(  # not guarded: it is about the database being down
                self._counted(self._database_alarm, DATABASE_ALARM_JOB),
                DATABASE_ALARM_JOB,
                "notify",
                at_once=False,
                seconds=every_notify,
            )
        stock_options = plugin_options(self.runtime)
        if stock_options is not None and self.runtime.connector is not None:
            self._add(
                self._guarded(self._stock_check, STOCK_JOB),
                STOCK_JOB,
                "default",
                at_once=False,
                seconds=stock_options.schedule_hours * 3600,
            )
        if self._owns_host:
            self.host.start()

    def run_now(self, job_id: str) -> None:
        """Ask for a job to run as soon as possible (new work arrived).

        Called from job threads, so it only records the request and wakes the main thread,
        which applies it (:meth:`apply_run_requests`). Scheduler calls from job threads could
        deadlock with a shutdown in progress, which holds the scheduler's locks while it
        waits for running jobs.
        """
        with self._lock:
            self._run_requests[job_id] = None
            if job_id in self._running:  # APScheduler would skip it (max_instances=1)
                self._again.add(job_id)
        self.wake()

    def run_at(self, job_id: str, when: datetime) -> None:
        """Ask for a job to run at ``when`` if its schedule would run it later (the
        dispatcher's next retry coming due); like :meth:`run_now`, applied by the main
        thread. A job whose schedule runs it sooner keeps its schedule."""
        with self._lock:
            if self._run_requests.get(job_id, when) is not None:  # "at once" wins
                self._run_requests[job_id] = min(when, self._run_requests.get(job_id) or when)
        self.wake()

    def apply_run_requests(self) -> None:
        """Bring requested jobs forward (main thread only)."""
        with self._lock:
            requests, self._run_requests = self._run_requests, {}
        if self._should_stop() or not self.scheduler.running:
            return
        now = datetime.now().astimezone()
        with self._lock:
            running = set(self._running)  # they run again when they end (``_again``)
        for job_id, when in sorted(requests.items()):
            if when is None and job_id in running:
                continue
            job = self.scheduler.get_job(self._prefix + job_id)
            if job is None:
                continue
            at = now if when is None else max(now, when)
            if job.next_run_time is None or at < job.next_run_time:
                job.modify(next_run_time=at)

    def healthy(self) -> bool:
        """True while the scheduler thread runs and its heartbeat job fires on time."""
        return self.host.healthy()

    def shutdown(self, wait_seconds: float | None = None) -> list[str]:
        """Stop starting work, let running jobs finish (for at most ``wait_seconds``; None:
        however long they take), stop the thread (on a shared host: remove this runtime's
        jobs); the jobs still running when it returns.

        The caller sets the runtime's ``stop_event`` first: a run handed to a thread after
        that returns at once, and one that started before is waited for here.
        """
        if self._owns_host:
            self.host.shutdown(wait=wait_seconds is None)
        else:
            for job_id in self._job_ids:
                with suppress(JobLookupError):  # removed already (a second shutdown)
                    self.scheduler.remove_job(job_id)
            self.host.remove_poll(self._prefix)
            self.host.forget(self._job_ids)
            self._job_ids.clear()
        deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
        while True:
            with self._lock:
                running = sorted(self._started)
            if not running or (deadline is not None and time.monotonic() >= deadline):
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

    def _poll_intake(self) -> None:
        """On the worker's poll thread: every ``intake_poll_seconds``, ask the connector
        whether input is waiting and bring the intake forward if so. A failing look is left
        to the intake itself (it runs once an interval and reports what fails)."""
        connector = self.runtime.connector
        now = time.monotonic()
        poll_every = self.runtime.config.schedule.intake_poll_seconds
        if connector is None or self._should_stop() or now - self._last_poll < poll_every:
            return
        self._last_poll = now
        try:
            waiting = connector.has_new_input()
        except Exception as exc:
            log.debug("%s: looking for WMS input failed: %s", self._prefix, exc)
            return
        if waiting:
            self.run_now(INTAKE_JOB)

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

    @property
    def outage(self) -> OutageAlarm:
        """The database alarm and what it told: the supervisor carries it over a restart of
        the scheduler (a reload, or the wait for a lost instance lock, which checks it too)."""
        return self._outage

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
        if report.next_due is not None:  # a retry comes due before the next look
            self.run_at(DISPATCHER_JOB, report.next_due)

    def _counted(self, fn: Callable[[], None], job_id: str) -> Callable[[], None]:
        """``fn`` counted by the host as running while it runs (:meth:`JobHost.busy`)."""

        def run() -> None:
            self.host.began(self._prefix + job_id)
            try:
                fn()
            finally:
                self.host.ended()

        return run

    def _guarded(self, fn: Callable[[], None], job_id: str) -> Callable[[], None]:
        """``fn`` with errors logged; asked for again while it ran, it runs again at once.

        While the database is unavailable no job runs: :class:`DatabaseHealth` probes it with
        backoff and logs the outage once (down, still down, back), blaming the database.
        With a share (fleet mode), a job due while the company's share of the job slots is in
        use runs as soon as one of its jobs ends — it never holds a thread waiting.
        """
        health = database_health(self.runtime.engine)

        def run() -> None:
            if health.available() and self._enter(job_id):
                self._run(fn, job_id)

        return self._counted(run, job_id)

    def _enter(self, job_id: str) -> bool:
        """Register ``job_id`` as running, unless stopping (checked under the lock that
        :meth:`shutdown` relies on) or the company's share is in use (then deferred)."""
        with self._lock:
            if self._should_stop():
                return False
            if self._share is not None and not self._share.acquire(blocking=False):
                self._deferred.add(job_id)
                return False
            self._running.add(job_id)
            self._started[job_id] = time.monotonic()
            self._again.discard(job_id)
            return True

    def _run(self, fn: Callable[[], None], job_id: str) -> None:
        token = push_log_context(**self.log_values)
        try:
            fn()
        except DatabaseUnavailable:
            pass  # logged once by the health check above, which now holds the jobs back
        except LeaseLost as exc:  # another worker took the company over: expected
            exc.warn(log)
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
                deferred, self._deferred = self._deferred, set()
                if self._share is not None:
                    self._share.release()
            for wanted in sorted(deferred | ({job_id} if again else set())):
                self.run_now(wanted)
