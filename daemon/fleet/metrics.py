"""Prometheus metrics of a fleet worker: one ``/metrics`` for every company it serves.

Every per-company series is the single-company one (:data:`daemon.metrics.STORE_FAMILIES`,
``nebridge_nextengine_calls_total``) with a ``company`` label first; the worker's own series
(``nebridge_fleet_*``) say what it holds, serves, starts and failed to start, its job slots
and waiting jobs, its lease renewals and losses, and its id (``nebridge_fleet_worker_info``).

A scrape reads no database: each company's figures are a cache that one refresher thread
reads again once they are :data:`REFRESH_SECONDS` old (a company just served at its next
pass, about a second later), through the worker's shared pool — one read (5 statements,
about 6–7 ms of CPU) per company per minute, not one per company per scrape. The cache holds
each company's lines of the exposition, rendered once per read, so a scrape only joins them
(benchmarks/fleet_metrics.py).
``nebridge_fleet_company_figures_age_seconds{company}`` says how old each company's figures
are (a company whose tables cannot be read keeps its last figures, its age growing, and a
warning is logged).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.metrics import STORE_FAMILIES, Endpoint, Samples, read_store, store_families
from daemon.pluginmanager import PluginHost
from daemon.store.engine import Bind

log = logging.getLogger(__name__)

#: Seconds a company's cached figures may be old before the refresher reads them again.
REFRESH_SECONDS = 60.0
#: Seconds between two passes of the refresher over the companies due.
PASS_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """What the worker itself reports at a scrape (read from its live objects, no query)."""

    worker_id: str
    #: Companies whose lease this worker holds, serves, is starting, failed to start.
    held: int
    serving: int
    starting: int
    failed: int
    #: ``fleet_job_slots``, the jobs running now (notifications included), and the runs due
    #: that wait for a free thread.
    job_slots: int
    jobs_running: int
    jobs_waiting: int
    #: Lease renewals done and leases found taken over since the worker started.
    lease_renewals: int
    leases_lost: int


class CompanyCalls:
    """One company's Next Engine client observer: its calls counted under its code."""

    def __init__(self, counter: Counter, company: str) -> None:
        self.counter = counter
        self.company = company

    def __repr__(self) -> str:
        return f"CompanyCalls({self.company!r})"

    def observe_call(self, endpoint: str, outcome: str) -> None:
        """Count one Next Engine exchange of the company."""
        self.counter.labels(self.company, endpoint, outcome).inc()


class _Fixed(Collector):
    """Metrics already made, for rendering them once."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def _render(metrics: Iterable[Metric]) -> list[tuple[str, str]]:
    """Each family of ``metrics`` in the text exposition: (its HELP and TYPE lines, its
    sample lines)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(metrics))
    blocks: list[tuple[list[str], list[str]]] = []
    for line in generate_latest(registry).decode().splitlines(keepends=True):
        if line.startswith("# HELP "):
            blocks.append(([], []))
        blocks[-1][0 if line.startswith("#") else 1].append(line)
    return [("".join(header), "".join(lines)) for header, lines in blocks]


#: The HELP and TYPE lines of each of :data:`STORE_FAMILIES` with the ``company`` label.
_HEADERS = [header for header, _ in _render(store_families([], ("company",)))]


def company_lines(company: str, samples: Samples) -> list[str]:
    """``company``'s sample lines of each of :data:`STORE_FAMILIES` (in that order)."""
    rendered = _render(store_families([((company,), samples)], ("company",)))
    assert len(rendered) == len(STORE_FAMILIES)
    return [lines for _, lines in rendered]


@dataclass
class _Watched:
    """A served company: where its figures are read, and the lines last rendered of them."""

    db: Bind
    host: PluginHost | None
    lines: list[str] | None = None
    #: When (the metrics' clock) its figures were last read, and last tried.
    read_at: float | None = None
    tried_at: float | None = None
    error: str | None = None


class _Collector(Collector):
    def __init__(self, metrics: FleetMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.collect()


class FleetMetrics(Endpoint):
    """A fleet worker's metrics: its companies' cached figures, their calls, the worker's."""

    def __init__(
        self,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.ne_calls = Counter(
            "nebridge_nextengine_calls",
            "Next Engine API calls by company, endpoint and result code",
            ["company", "endpoint", "result"],
            registry=self.registry,
        )
        self._companies: dict[str, _Watched] = {}
        self._worker: Callable[[], WorkerFigures] | None = None
        self._guard = threading.Lock()
        self._stopping = threading.Event()
        self._refresher: threading.Thread | None = None
        self.registry.register(_Collector(self))

    def __repr__(self) -> str:
        return f"FleetMetrics({len(self._companies)} companies, port {self.port})"

    # -- what is reported -------------------------------------------------------------------

    def calls(self, company: str) -> CompanyCalls:
        """The observer for ``company``'s Next Engine client (``Runtime.metrics``)."""
        return CompanyCalls(self.ne_calls, company)

    def watch(self, company: str, db: Bind, host: PluginHost | None = None) -> None:
        """Report ``company`` (served from now on): its figures from ``db``, its paused
        stages from ``host``; read at the refresher's next pass."""
        with self._guard:
            self._companies[company] = _Watched(db, host)

    def forget(self, company: str) -> None:
        """Stop reporting ``company``'s figures (no longer served here: its new holder
        reports them). Its call counters stay, as counters do until the process ends."""
        with self._guard:
            self._companies.pop(company, None)

    def watch_worker(self, figures: Callable[[], WorkerFigures]) -> None:
        """Report the worker's own figures, asked of ``figures`` at every scrape."""
        self._worker = figures

    # -- reading ----------------------------------------------------------------------------

    def refresh(self) -> int:
        """Read the figures of every company due (never read, or read
        :attr:`refresh_seconds` ago; the oldest first); how many were read."""
        now = self.clock()
        with self._guard:
            due = sorted(
                (
                    (watched.tried_at if watched.tried_at is not None else -math.inf, code)
                    for code, watched in self._companies.items()
                    if watched.tried_at is None or now - watched.tried_at >= self.refresh_seconds
                ),
            )
        read = 0
        for _, code in due:
            if self._stopping.is_set():
                break
            with self._guard:
                watched = self._companies.get(code)
            if watched is None:  # forgotten meanwhile
                continue
            watched.tried_at = self.clock()
            try:
                samples = read_store(watched.db, watched.host)
            except Exception as exc:  # the database away, a schema dropped: keep the last
                error = (str(exc).splitlines() or [type(exc).__name__])[0]
                if watched.error != error:
                    log.warning(
                        "company %s: its metrics could not be read (%s); its last figures "
                        "are served, nebridge_fleet_company_figures_age_seconds grows",
                        code,
                        error,
                    )
                watched.error = error
                continue
            watched.lines = company_lines(code, samples)
            watched.read_at, watched.error = self.clock(), None
            read += 1
        return read

    def _refresh_loop(self) -> None:
        """The refresher thread: a pass at once, then every :data:`PASS_SECONDS`."""
        while True:
            try:
                self.refresh()
            except Exception:  # never let the metrics thread die silently
                log.exception("fleet metrics refresh failed; trying again")
            if self._stopping.wait(PASS_SECONDS):
                return

    def exposition(self) -> bytes:
        """A scrape's answer: each store family's header and every company's cached lines,
        then the registry (calls, ages, the worker's figures). No query."""
        with self._guard:
            lines = [w.lines for _, w in sorted(self._companies.items()) if w.lines is not None]
        parts: list[str] = []
        for n, header in enumerate(_HEADERS):
            parts.append(header)
            parts.extend(company[n] for company in lines)
        return "".join(parts).encode() + generate_latest(self.registry)

    def wsgi_app(self) -> WSGIApplication:
        """Answer every scrape with :meth:`exposition` (text format 0.0.4)."""

        def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
            body = self.exposition()
            start_response(
                "200 OK",
                [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))],
            )
            return [body]

        return app

    def collect(self) -> Iterator[Metric]:
        """The registry's families besides the calls: each company's figures' age and the
        worker's live figures (no query)."""
        now = self.clock()
        with self._guard:
            watched = sorted(self._companies.items())
        age = GaugeMetricFamily(
            "nebridge_fleet_company_figures_age_seconds",
            "Seconds since the company's figures were read from its tables",
            labels=["company"],
        )
        for code, w in watched:
            if w.read_at is not None:
                age.add_metric([code], max(0.0, now - w.read_at))
        yield age
        if self._worker is not None:
            yield from _worker_families(self._worker())

    # -- serving ----------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` (see :meth:`Endpoint.serve`) and start the refresher."""
        super().serve(host, port)
        if self._refresher is None:
            self._stopping.clear()
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="fleet-metrics", daemon=True
            )
            self._refresher.start()

    def stop(self) -> None:
        """Stop the refresher (after the read in progress) and serving."""
        self._stopping.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None
        super().stop()


def _worker_families(figures: WorkerFigures) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "nebridge_fleet_worker_info", "This fleet worker's id (value 1)", labels=["worker"]
    )
    info.add_metric([figures.worker_id], 1.0)
    companies = GaugeMetricFamily(
        "nebridge_fleet_companies",
        "Companies of this worker: leases held, served, starting, failed to start",
        labels=["state"],
    )
    for state, n in (
        ("held", figures.held),
        ("serving", figures.serving),
        ("starting", figures.starting),
        ("failed", figures.failed),
    ):
        companies.add_metric([state], float(n))
    yield info
    yield companies
    yield GaugeMetricFamily(
        "nebridge_fleet_job_slots",
        "fleet_job_slots: jobs this worker runs at once",
        figures.job_slots,
    )
    yield GaugeMetricFamily(
        "nebridge_fleet_jobs_running",
        "Jobs of this worker's companies running now (notifications included)",
        figures.jobs_running,
    )
    yield GaugeMetricFamily(
        "nebridge_fleet_jobs_waiting",
        "Runs due and waiting for a free thread",
        figures.jobs_waiting,
    )
    yield CounterMetricFamily(
        "nebridge_fleet_lease_renewals",
        "Rounds that renewed this worker's leases",
        figures.lease_renewals,
    )
    yield CounterMetricFamily(
        "nebridge_fleet_leases_lost",
        "Leases this worker found taken over by another worker",
        figures.leases_lost,
    )
