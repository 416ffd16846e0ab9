"""Prometheus metrics: Next Engine calls counted as they happen, the rest read from the database.

Counts that live in the database (events in, actions by plugin and state, backlog, last good
run per warehouse and stage, attention, order changes) are read by :func:`read_store`, so they
are exact across restarts and reloads: at every scrape in a single-company installation; in
fleet mode from each company's cache (:mod:`daemon.fleet.metrics`), rendered by the same
:func:`store_families` with a ``company`` label. The HTTP endpoint binds to loopback unless
``metrics.host`` says otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import WSGIApplication

from prometheus_client import CollectorRegistry, Counter, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select

from daemon import attention, orderwatch
from daemon.httpserve import BoundedThreadingMixIn, bind
from daemon.pluginmanager import PluginHost
from daemon.store.engine import Bind, read_session
from daemon.store.models import InboxEvent, OutboxItem, RunRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family read from the database: its name, help, labels and type."""

    name: str
    help: str
    labels: tuple[str, ...]
    counter: bool = False


EVENTS_IN = Family(
    "nebridge_events_in", "WMS events accepted into the inbox", ("kind", "warehouse"), True
)
INBOX = Family("nebridge_inbox_events", "Inbox events by state", ("kind", "state"))
ACTIONS = Family(
    "nebridge_actions",
    "Next Engine actions by plugin, kind and outcome (state)",
    ("plugin", "kind", "state"),
)
BACKLOG = Family("nebridge_outbox_backlog", "Outbox items by state", ("state",))
LAST_SUCCESS = Family(
    "nebridge_last_success_timestamp_seconds",
    "End of the last successful run per warehouse and stage",
    ("warehouse", "stage"),
)
ATTENTION = Family(
    "nebridge_attention",
    "Things that wait for a person, by kind (`nebridge attention` lists them)",
    ("kind",),
)
ORDER_CHANGES = Family(
    "nebridge_order_changes",
    "Orders found cancelled, deleted or edited in Next Engine after import (order_watch)",
    ("warehouse", "kind"),
    True,
)
#: Every family :func:`read_store` fills, in the order they are exposed.
STORE_FAMILIES = (EVENTS_IN, INBOX, ACTIONS, BACKLOG, LAST_SUCCESS, ATTENTION, ORDER_CHANGES)

#: The samples of each family (by name): label values and the value.
Samples = dict[str, list[tuple[tuple[str, ...], float]]]


#: The statements of :func:`read_store`, built once (run on the session's connection: the
#: rows are plain tuples, no ORM work per row).
_INBOX = select(
    col(InboxEvent.kind), col(InboxEvent.warehouse), col(InboxEvent.state), func.count()
).group_by(col(InboxEvent.kind), col(InboxEvent.warehouse), col(InboxEvent.state))
_ACTIONS = select(
    col(OutboxItem.plugin), col(OutboxItem.kind), col(OutboxItem.state), func.count()
).group_by(col(OutboxItem.plugin), col(OutboxItem.kind), col(OutboxItem.state))
_LAST_SUCCESS = (
    select(col(RunRecord.warehouse), col(RunRecord.stage), func.max(RunRecord.finished_at))
    .where(col(RunRecord.outcome).in_(["ok", "held"]))
    .group_by(col(RunRecord.warehouse), col(RunRecord.stage))
)


def read_store(db: Bind, host: PluginHost | None = None) -> Samples:
    """Every :data:`STORE_FAMILIES` sample of one installation's (or company's) tables; the
    paused stages of ``host`` count as attention."""
    samples: Samples = {family.name: [] for family in STORE_FAMILIES}
    with read_session(db) as session:
        connection = session.connection()
        events: dict[tuple[str, str], int] = {}
        inbox: dict[tuple[str, str], int] = {}
        for kind, warehouse, state, n in connection.execute(_INBOX):
            key = (str(kind), str(warehouse))
            events[key] = events.get(key, 0) + int(n)
            key = (str(kind), str(state))
            inbox[key] = inbox.get(key, 0) + int(n)
        samples[EVENTS_IN.name] = [(key, float(n)) for key, n in sorted(events.items())]
        samples[INBOX.name] = [(key, float(n)) for key, n in sorted(inbox.items())]
        by_state: dict[str, int] = {}
        for plugin, kind, state, n in connection.execute(_ACTIONS):
            samples[ACTIONS.name].append(((str(plugin), str(kind), str(state)), float(n)))
            by_state[str(state)] = by_state.get(str(state), 0) + int(n)
        for state, n in sorted(by_state.items()):
            samples[BACKLOG.name].append(((state,), float(n)))
        for warehouse, stage, finished in connection.execute(_LAST_SUCCESS):
            if finished is not None:
                samples[LAST_SUCCESS.name].append(
                    ((str(warehouse), str(stage)), _timestamp(finished))
                )
    live = attention.paused_stage_items(host) if host is not None else []
    counts = attention.counts(db, live=live)
    for kind in attention.AttentionKind:  # every kind, 0 included: alert on > 0
        samples[ATTENTION.name].append(((kind.value,), float(counts.pop(kind.value, 0))))
    for other, n in sorted(counts.items()):  # kinds a connector reported
        samples[ATTENTION.name].append(((other,), float(n)))
    for warehouse, kinds in sorted(orderwatch.counts(db).items()):
        for kind, n in sorted(kinds.items()):
            samples[ORDER_CHANGES.name].append(((warehouse, kind), float(n)))
    return samples


def store_families(
    figures: Iterable[tuple[tuple[str, ...], Samples]], labels: tuple[str, ...] = ()
) -> Iterator[Metric]:
    """The :data:`STORE_FAMILIES` of several read stores, each sample's label values prefixed
    by its store's (``labels`` names them: ``("company",)`` in fleet mode)."""
    figures = list(figures)
    for family in STORE_FAMILIES:
        make = CounterMetricFamily if family.counter else GaugeMetricFamily
        metric = make(family.name, family.help, labels=[*labels, *family.labels])
        for prefix, samples in figures:
            for values, value in samples.get(family.name, ()):
                metric.add_metric([*prefix, *values], value)
        yield metric


class _StoreCollector(Collector):
    """Figures read from the database at every scrape."""

    def __init__(self, db: Bind, host: PluginHost | None = None) -> None:
        self.db = db
        self.host = host

    def collect(self) -> Iterator[Metric]:
        yield from store_families([((), read_store(self.db, self.host))])


def _timestamp(value: object) -> float:
    """Seconds since the epoch of a stored timestamp (aggregates may bypass the column type)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.timestamp()


class CallObserver(Protocol):
    """What a runtime's Next Engine client reports each exchange to."""

    def observe_call(self, endpoint: str, outcome: str) -> None:
        """Count one Next Engine exchange."""
        ...


class _MetricsServer(BoundedThreadingMixIn, WSGIServer):
    """A scraper or two at a time; a stalled or flooding client cannot pin threads."""

    max_connections = 8
    connection_seconds = 30.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class Endpoint:
    """A registry served over HTTP at ``/metrics`` when configured (both modes)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: _MetricsServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` on ``host:port`` in a background thread (once); a taken port
        raises :class:`~daemon.httpserve.PortInUse`."""
        if self._server is not None:
            return
        server = bind(
            _MetricsServer,
            host,
            port,
            _QuietHandler,
            change=(
                "stop that program; if it is another nebridge worker of this host, give each "
                "worker its own port with `nebridge run --metrics-port N` (or the environment "
                "variable NEBRIDGE_METRICS_PORT=N); or change metrics.port in daemon.yaml "
                "(0 turns metrics off)"
            ),
        )
        server.set_app(self.wsgi_app())
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics", daemon=True
        )
        self._thread.start()
        self._server = server
        log.info("metrics on http://%s:%d/metrics", host, self._server.server_port)

    def wsgi_app(self) -> WSGIApplication:
        """What answers a scrape: the registry, rendered by prometheus_client."""
        return make_wsgi_app(self.registry)

    @property
    def port(self) -> int | None:
        """The port metrics are served on, or None when not serving."""
        return None if self._server is None else int(self._server.server_port)

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class Metrics(Endpoint):
    """A single-company process's metrics: its Next Engine calls and its database."""

    def __init__(self) -> None:
        super().__init__()
        self.ne_calls = Counter(
            "nebridge_nextengine_calls",
            "Next Engine API calls by endpoint and result code",
            ["endpoint", "result"],
            registry=self.registry,
        )
        self._store: _StoreCollector | None = None

    def observe_call(self, endpoint: str, outcome: str) -> None:
        """Client observer: count one Next Engine exchange."""
        self.ne_calls.labels(endpoint, outcome).inc()

    def watch_store(self, db: Bind, host: PluginHost | None = None) -> None:
        """Read database figures from ``db`` and paused stages from ``host`` (replaces the
        previous store on reload)."""
        if self._store is not None:
            self.registry.unregister(self._store)
        self._store = _StoreCollector(db, host)
        self.registry.register(self._store)
