"""One fleet worker: a service per company it holds, started and stopped with the leases.

:class:`FleetWorker` joins :class:`~daemon.fleet.companies.Companies` (what the fleet serves)
and a :class:`~daemon.fleet.leases.LeaseKeeper` (what this worker holds): each round it ticks
the leases, stops the service of every company it no longer holds — before the lease is given
up, so two workers never serve one company — and starts one for every company it took. A
reload (SIGHUP, or the file watch: company files and daemon.yaml looked at every
``companies_watch_seconds``, a change applied once it stood still for one look) stops the
services of changed and removed companies; changed ones start again with their new
configuration, removed ones' leases are released, added ones are taken by whichever worker
has room.

What a "service" is stays the caller's: ``start_service(company, lease)`` returns an object
with ``stop()`` that returns once the company's work has ended (for ``nebridge run``: the
company's engine runtime, whose transactions and Next Engine calls are fenced by ``lease``).

Services start off the round thread (daemon threads, at most :data:`START_THREADS` at once):
a company whose plugin hangs at import or whose start is slow never holds up the renewal of
the other leases, and a hung start never keeps the process from exiting. A start that has not
returned within ``start_seconds`` is given up: the company is reported failed (log and
:meth:`FleetWorker.failures`) and its lease is kept but not served — no other worker takes it
and hangs too — and it is tried again (after the hung start returned) with a growing pause,
or at the next reload (SIGHUP after fixing its plugin) at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy import Engine

from daemon.config import ConfigError, LoadedConfig
from daemon.fleet.companies import Changes, Companies, Company, FileWatch
from daemon.fleet.leases import (
    DEFAULT_LEASE_SECONDS,
    RENEWALS_PER_LEASE,
    Lease,
    LeaseKeeper,
    log_round_failure,
)
from daemon.fleet.runtime import CompanyNotMigrated
from daemon.store.engine import database_health

log = logging.getLogger(__name__)

#: Companies whose service starts at once on one worker.
START_THREADS = 4
#: Seconds a service has to start before its company is given up as failed.
DEFAULT_START_SECONDS = 120.0
#: Longest wait between two looks at ``stop`` and a reload request (seconds).
WAKE_SECONDS = 0.5
#: First and longest pause before a hung company's service is tried again (seconds).
RETRY_FIRST_SECONDS = 30.0
RETRY_MAX_SECONDS = 1800.0
#: A company failing to start the same way again is logged at most this often (seconds).
REPEAT_LOG_SECONDS = 300.0


class CompanyService(Protocol):
    """The work of one company on this worker."""

    def stop(self) -> None:
        """End the company's work; return only when nothing more is done for it."""
        ...


ServiceFactory = Callable[[Company, Lease], CompanyService]


@dataclass
class _Start:
    """A service being started on its own thread."""

    lease: Lease
    deadline: float
    thread: threading.Thread
    given_up: bool = False


@dataclass(frozen=True, slots=True)
class StartFailure:
    """Why a company is not served by the worker that holds it, and when it tries again."""

    company: str
    reason: str
    failures: int
    retry_at: float
    #: When this failure was last logged (``time.monotonic``).
    logged_at: float = 0.0


class FleetWorker:
    """Serves the companies this worker holds the leases of."""

    def __init__(
        self,
        companies: Companies,
        engine: Engine,
        start_service: ServiceFactory,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        worker_id: str | None = None,
        load_base: Callable[[], LoadedConfig] | None = None,
        start_seconds: float = DEFAULT_START_SECONDS,
        on_failed: Callable[[Company, str], None] = lambda company, reason: None,
        on_started: Callable[[Company], None] = lambda company: None,
    ) -> None:
        self.companies = companies
        self.start_service = start_service
        #: Reads daemon.yaml again on a requested reload (None: only the company files).
        self.load_base = load_base
        self.start_seconds = start_seconds
        #: Told when a held company is not served (to show it), and when it is served again.
        self.on_failed = on_failed
        self.on_started = on_started
        self._services: dict[str, CompanyService] = {}
        self._starting: dict[str, _Start] = {}
        self._failures: dict[str, StartFailure] = {}
        self._guard = threading.RLock()
        self._reload_requested = threading.Event()
        self._closing = False
        self._watch = FileWatch(companies)
        self._next_look = 0.0
        self.keeper = LeaseKeeper(
            engine,
            companies.companies,
            lease_seconds=lease_seconds,
            worker_id=worker_id,
            before_release=self._stop_service,
            on_lost=lambda company, reason: self._stop_service(company),
        )

    def __repr__(self) -> str:
        return f"FleetWorker({self.keeper.worker_id!r}, serving {len(self._services)})"

    def serving(self) -> list[str]:
        """The companies whose service runs on this worker."""
        with self._guard:
            return sorted(self._services)

    def starting(self) -> list[str]:
        """The companies whose service is starting (given-up starts not included)."""
        with self._guard:
            return sorted(c for c, s in self._starting.items() if not s.given_up)

    def failures(self) -> dict[str, StartFailure]:
        """The held companies whose service failed to start or was given up, by code."""
        with self._guard:
            return dict(self._failures)

    def step(self) -> None:
        """One round: reload if asked, tick the leases, then start and stop services."""
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self._watch.mark()  # what changes from here on is noticed by the next look
            base = None
            if self.load_base is not None:
                try:
                    base = self.load_base()
                except ConfigError as exc:
                    log.error(
                        "daemon.yaml refused on reload; every company keeps its shared "
                        "settings: %s",
                        exc,
                    )
            try:
                self.reload(base)
            except ConfigError as exc:  # the folder unreadable or emptied: nothing applied
                log.error("company files not applied; every company keeps running: %s", exc)
        self.keeper.tick()
        self._sync()

    def reload(self, base: LoadedConfig | None = None) -> Changes:
        """Read the companies again (and ``base``); stop what changed or went away, and try
        every held company whose service failed to start again at once (its plugin may be
        the fix, which no file shows)."""
        changes = self.companies.reload(base)
        for refusal in changes.refused:
            log.error(
                "company file refused (the company keeps its last valid version, if any): %s",
                refusal,
            )
        for code in (*changes.changed, *changes.removed):
            self._stop_service(code)
        with self._guard:
            for code in changes.removed:
                self._failures.pop(code, None)
            # a fixed file or plugin is tried again at once (the failure is kept, so that
            # a start that now succeeds tells on_started and clears what on_failed showed)
            for code, failure in list(self._failures.items()):
                self._failures[code] = replace(failure, retry_at=0.0)
        self.keeper.set_companies(self.companies.companies)
        log.info(
            "companies reloaded: %d added, %d changed, %d removed, %d refused",
            len(changes.added),
            len(changes.changed),
            len(changes.removed),
            len(changes.refused),
        )
        return changes

    def request_reload(self) -> None:
        """Reload at once, in a round of its own (safe from a signal handler)."""
        self._reload_requested.set()

    def _wait(self, stop: threading.Event) -> bool:
        """Wait for the next round, looking at the files every ``companies_watch_seconds``
        meanwhile; return early when a reload is due (asked for, or files changed and stood
        still), True once ``stop`` is set."""
        deadline = time.monotonic() + self.keeper.lease_seconds / RENEWALS_PER_LEASE
        while True:
            watch = self.companies.base.config.companies_watch_seconds
            left = deadline - time.monotonic()
            if left <= 0 or self._reload_requested.is_set():
                return stop.is_set()
            if stop.wait(min(left, watch or left, WAKE_SECONDS)):
                return True
            if watch and time.monotonic() >= self._next_look:
                self._next_look = time.monotonic() + watch
                try:
                    if self._watch.poll():
                        log.info("company files or daemon.yaml changed on disk; reloading")
                        self.request_reload()
                except Exception as exc:  # never let a look at the files end the worker
                    log.warning("could not look at the company files: %s", exc)

    def _sync(self) -> None:
        held = self.keeper.held()
        now = time.monotonic()
        with self._guard:
            for code in [c for c in self._services if c not in held]:
                self._stop_service(code)
            for code in [c for c in self._failures if c not in held]:
                del self._failures[code]
            for code, start in self._starting.items():
                if not start.given_up and now >= start.deadline:
                    start.given_up = True
                    self._fail(
                        code,
                        f"its service did not start within "
                        f"{self.start_seconds:g} s (a plugin hanging at import, "
                        "or a slow start)",
                        now,
                        hung=True,
                    )
            self._launch_starts(held, now, retry_failed=True)

    def _launch_starts(self, held: dict[str, int], now: float, *, retry_failed: bool) -> None:
        """Start services for held companies not served yet, up to :data:`START_THREADS`
        starts at once (caller holds ``_guard``). Called by each round and whenever a start
        ends, so a worker taking many companies starts them back to back instead of
        :data:`START_THREADS` a round; a failed company is tried again only by a round."""
        if self._closing:
            return
        for code, epoch in sorted(held.items()):
            company = self.companies.companies.get(code)
            failure = self._failures.get(code)
            if (
                code in self._services
                or code in self._starting
                or company is None
                or (failure is not None and (not retry_failed or now < failure.retry_at))
            ):
                continue
            if sum(not s.given_up for s in self._starting.values()) >= START_THREADS:
                break  # the rest start when a start ends, or in a later round
            lease = Lease(code, epoch)
            thread = threading.Thread(
                target=self._start,
                args=(company, lease),
                name=f"fleet-start-{code}",
                daemon=True,
            )
            self._starting[code] = _Start(lease, now + self.start_seconds, thread)
            thread.start()

    def _start(self, company: Company, lease: Lease) -> None:
        """Start ``company``'s service (on its own thread); keep it only if its lease is still
        this worker's, else stop it at once."""
        code = company.code
        try:
            service = self.start_service(company, lease)
        except Exception as exc:  # one company's failure never holds up the others
            unmigrated = isinstance(exc, CompanyNotMigrated)
            with self._guard:
                late = self._starting.pop(code, None)
                self._fail(
                    code,
                    f"its service did not start: "
                    f"{(str(exc).splitlines() or [type(exc).__name__])[0]}",
                    time.monotonic(),
                    hung=late is not None and late.given_up,
                    fix="run `nebridge db upgrade` (the next round starts it)"
                    if unmigrated
                    else None,
                    tell=not unmigrated,  # its attention item would go into missing tables
                )
                self._launch_starts(self.keeper.held(), time.monotonic(), retry_failed=False)
            return
        with self._guard:
            self._starting.pop(code, None)
            held = self.keeper.held()
            keep = held.get(code) == lease.epoch and not self._closing
            if keep:
                self._services[code] = service
                recovered = self._failures.pop(code, None) is not None
            self._launch_starts(held, time.monotonic(), retry_failed=False)
        if keep:
            log.info("company %s: served by this worker (epoch %d)", code, lease.epoch)
            if recovered:
                self._tell(self.on_started, company)
        else:
            service.stop()

    def _fail(
        self,
        code: str,
        reason: str,
        now: float,
        *,
        hung: bool = False,
        fix: str | None = None,
        tell: bool = True,
    ) -> None:
        """Record that ``code`` is held but not served. A start that raised is tried again
        next round (cheap); one that hung, after a pause doubled per such failure. Logged
        with ``fix`` (default: fix the file or plugin, then SIGHUP); the same failure again
        at most every :data:`REPEAT_LOG_SECONDS`. ``tell``: report it to ``on_failed``."""
        previous = self._failures.get(code)
        failures = previous.failures + 1 if previous is not None else 1
        pause = min(RETRY_FIRST_SECONDS * 2 ** (failures - 1), RETRY_MAX_SECONDS) if hung else 0
        same = previous is not None and previous.reason == reason
        log_now = previous is None or not same or now - previous.logged_at >= REPEAT_LOG_SECONDS
        logged_at = now if log_now or previous is None else previous.logged_at
        self._failures[code] = StartFailure(code, reason, failures, now + pause, logged_at)
        company = self.companies.companies.get(code)
        if company is not None and tell and not same:
            threading.Thread(
                target=self._tell,
                args=(self.on_failed, company, reason),
                name=f"fleet-failed-{code}",
                daemon=True,
            ).start()
        if not log_now:
            return
        log.error(
            "company %s: %s%s; not served: this worker keeps its lease (no other worker "
            "takes it) and tries again %s; this is logged again at most every %d min while "
            "it fails so — %s",
            code,
            reason,
            f" (still, {failures} tries)" if same else "",
            f"in {round(pause)} s" if pause else "each round",
            REPEAT_LOG_SECONDS // 60,
            fix
            or f"fix its file ({company.path if company else '?'}: applied once saved) or its "
            "plugin and send SIGHUP",
        )

    @staticmethod
    def _tell(callback: Callable[..., None], *args: object) -> None:
        """Run a report callback; its failure (the database away) is logged, never raised."""
        try:
            callback(*args)
        except Exception as exc:
            log.warning("could not record a company's start outcome: %s", exc)

    def _stop_service(self, code: str) -> None:
        with self._guard:
            service = self._services.pop(code, None)
        if service is not None:
            service.stop()
            log.info("company %s: no longer served by this worker", code)

    def _renew_while_busy(self, done: threading.Event) -> None:
        """Renew the leases whenever a round is overdue: while the round thread waits for a
        company's work to stop (a job finishing, up to the drain time), the other companies'
        leases must not run out."""
        while not done.wait(self.keeper.lease_seconds / RENEWALS_PER_LEASE / 2):
            try:
                self.keeper.keep_renewed()
            except Exception as exc:  # the database away: the round thread says so too
                log.debug("lease renewal between rounds failed: %s", exc)

    def serve(self, stop: threading.Event) -> None:
        """Run rounds every third of the lease time until ``stop`` is set, reloading on
        SIGHUP (when called on the main thread) and when the file watch sees a change; then
        stop every service and release every lease, so the other workers take the companies
        over at once."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())
        done = threading.Event()
        threading.Thread(
            target=self._renew_while_busy, args=(done,), name="fleet-renew", daemon=True
        ).start()
        try:
            while True:
                try:
                    self.step()
                except Exception as exc:  # the database away: the leases run out and fence
                    log_round_failure(
                        self.keeper.engine, exc, "fleet round failed (%s); trying again"
                    )
                else:
                    health = database_health(self.keeper.engine)
                    if health.down_since is not None:
                        health.available()  # a round went through: say the outage ended
                if self._wait(stop):
                    break
        finally:
            with self._guard:
                self._closing = True  # a start that ends now stops its service at once
            for code in self.serving():
                self._stop_service(code)
            done.set()
            self.keeper.stop()
