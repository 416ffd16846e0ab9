"""One fleet worker: a service per company it holds, started and stopped with the leases.

:class:`FleetWorker` joins :class:`~daemon.fleet.companies.Companies` (what the fleet serves)
and a :class:`~daemon.fleet.leases.LeaseKeeper` (what this worker holds): each round it ticks
the leases, stops the service of every company it no longer holds — before the lease is given
up, so two workers never serve one company — and starts one for every company it took. A
reload (SIGHUP) stops the services of changed and removed companies; changed ones start again
with their new configuration, removed ones' leases are released, added ones are taken by
whichever worker has room.

What a "service" is stays the caller's: ``start_service(company, lease)`` returns an object
with ``stop()`` that returns once the company's work has ended (for ``nebridge run``: the
company's engine runtime, whose transactions and Next Engine calls are fenced by ``lease``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine

from daemon.config import ConfigError, LoadedConfig
from daemon.fleet.companies import Changes, Companies, Company
from daemon.fleet.leases import DEFAULT_LEASE_SECONDS, RENEWALS_PER_LEASE, Lease, LeaseKeeper

log = logging.getLogger(__name__)


class CompanyService(Protocol):
    """The work of one company on this worker."""

    def stop(self) -> None:
        """End the company's work; return only when nothing more is done for it."""
        ...


ServiceFactory = Callable[[Company, Lease], CompanyService]


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
    ) -> None:
        self.companies = companies
        self.start_service = start_service
        #: Reads daemon.yaml again on a requested reload (None: only the company files).
        self.load_base = load_base
        self._services: dict[str, CompanyService] = {}
        self._guard = threading.RLock()
        self._reload_requested = threading.Event()
        self.keeper = LeaseKeeper(engine, companies.companies, lease_seconds=lease_seconds,
                                  worker_id=worker_id, before_release=self._stop_service,
                                  on_lost=lambda company, reason: self._stop_service(company))

    def __repr__(self) -> str:
        return f"FleetWorker({self.keeper.worker_id!r}, serving {len(self._services)})"

    def serving(self) -> list[str]:
        """The companies whose service runs on this worker."""
        with self._guard:
            return sorted(self._services)

    def step(self) -> None:
        """One round: reload if asked, tick the leases, then start and stop services."""
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            base = None
            if self.load_base is not None:
                try:
                    base = self.load_base()
                except ConfigError as exc:
                    log.error("daemon.yaml refused on reload; every company keeps its shared "
                              "settings: %s", exc)
            self.reload(base)
        self.keeper.tick()
        self._sync()

    def reload(self, base: LoadedConfig | None = None) -> Changes:
        """Read the companies again (and ``base``); stop what changed or went away."""
        changes = self.companies.reload(base)
        for refusal in changes.refused:
            log.error("company file refused (the company keeps its last valid version, if "
                      "any): %s", refusal)
        for code in (*changes.changed, *changes.removed):
            self._stop_service(code)
        self.keeper.set_companies(self.companies.companies)
        log.info("companies reloaded: %d added, %d changed, %d removed, %d refused",
                 len(changes.added), len(changes.changed), len(changes.removed),
                 len(changes.refused))
        return changes

    def request_reload(self) -> None:
        """Reload at the start of the next round (safe from a signal handler)."""
        self._reload_requested.set()

    def _sync(self) -> None:
        held = self.keeper.held()
        with self._guard:
            for code in [c for c in self._services if c not in held]:
                self._stop_service(code)
            for code, epoch in sorted(held.items()):
                company = self.companies.companies.get(code)
                if code in self._services or company is None:
                    continue
                self.keeper.keep_renewed()  # starting many companies outlasts no lease
                try:
                    self._services[code] = self.start_service(company, Lease(code, epoch))
                except Exception as exc:  # one company's failure never holds up the others
                    log.error("company %s: its service did not start (%s); trying again next "
                              "round — fix its file (%s) and send SIGHUP", code,
                              (str(exc).splitlines() or [type(exc).__name__])[0], company.path)
                    continue
                log.info("company %s: served by this worker (epoch %d)", code, epoch)

    def _stop_service(self, code: str) -> None:
        with self._guard:
            service = self._services.pop(code, None)
        if service is not None:
            service.stop()
            log.info("company %s: no longer served by this worker", code)

    def serve(self, stop: threading.Event) -> None:
        """Run rounds every third of the lease time until ``stop`` is set, reloading on
        SIGHUP (when called on the main thread); then stop every service and release every
        lease, so the other workers take the companies over at once."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())
        try:
            while True:
                try:
                    self.step()
                except Exception as exc:  # the database away: the leases run out and fence
                    log.error("fleet round failed (%s); trying again",
                              (str(exc).splitlines() or [type(exc).__name__])[0])
                if stop.wait(self.keeper.lease_seconds / RENEWALS_PER_LEASE):
                    break
        finally:
            for code in self.serving():
                self._stop_service(code)
            self.keeper.stop()
