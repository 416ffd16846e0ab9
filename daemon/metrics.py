"""Prometheus metrics: Next Engine calls counted as they happen, the rest read at scrape time.

Counts that live in the database (events in, actions by plugin and state, backlog, last good
run per warehouse and stage) are read when Prometheus scrapes, so they are exact across
restarts and reloads. The HTTP endpoint binds to loopback unless ``metrics.host`` says
otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

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


class _StoreCollector(Collector):
    """Figures read from the database at every scrape."""

    def __init__(self, db: Bind, host: PluginHost | None = None) -> None:
        self.db = db
        self.host = host

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "nebridge_events_in", "WMS events accepted into the inbox", labels=["kind", "warehouse"]
        )
        inbox = GaugeMetricFamily(
            "nebridge_inbox_events", "Inbox events by state", labels=["kind", "state"]
        )
        actions = GaugeMetricFamily(
            "nebridge_actions",
            "Next Engine actions by plugin, kind and outcome (state)",
            labels=["plugin", "kind", "state"],
        )
        backlog = GaugeMetricFamily(
            "nebridge_outbox_backlog", "Outbox items by state", labels=["state"]
        )
        last_ok = GaugeMetricFamily(
            "nebridge_last_success_timestamp_seconds",
            "End of the last successful run per warehouse and stage",
            labels=["warehouse", "stage"],
        )
        with read_session(self.db) as session:
            for kind, warehouse, n in session.execute(
                select(col(InboxEvent.kind), col(InboxEvent.warehouse), func.count()).group_by(
                    col(InboxEvent.kind), col(InboxEvent.warehouse)
                )
            ):
                events.add_metric([str(kind), str(warehouse)], float(n))
            for kind, state, n in session.execute(
                select(col(InboxEvent.kind), col(InboxEvent.state), func.count()).group_by(
                    col(InboxEvent.kind), col(InboxEvent.state)
                )
            ):
                inbox.add_metric([str(kind), str(state)], float(n))
            by_state: dict[str, int] = {}
            for plugin, kind, state, n in session.execute(
                select(
                    col(OutboxItem.plugin),
                    col(OutboxItem.kind),
                    col(OutboxItem.state),
                    func.count(),
                ).group_by(col(OutboxItem.plugin), col(OutboxItem.kind), col(OutboxItem.state))
            ):
                actions.add_metric([str(plugin), str(kind), str(state)], float(n))
                by_state[str(state)] = by_state.get(str(state), 0) + int(n)
            for state, n in sorted(by_state.items()):
                backlog.add_metric([state], float(n))
            for warehouse, stage, finished in session.execute(
                select(
                    col(RunRecord.warehouse), col(RunRecord.stage), func.max(RunRecord.finished_at)
                )
                .where(col(RunRecord.outcome).in_(["ok", "held"]))
                .group_by(col(RunRecord.warehouse), col(RunRecord.stage))
            ):
                if finished is not None:
                    last_ok.add_metric([str(warehouse), str(stage)], _timestamp(finished))
        yield from (
            events,
            inbox,
            actions,
            backlog,
            last_ok,
            self._attention(),
            self._order_changes(),
        )

    def _order_changes(self) -> Metric:
        """``nebridge_order_changes{warehouse,kind}``: orders ``order_watch`` found cancelled,
        deleted or edited in Next Engine after import."""
        changes = CounterMetricFamily(
            "nebridge_order_changes",
            "Orders found cancelled, deleted or edited in Next Engine after import (order_watch)",
            labels=["warehouse", "kind"],
        )
        for warehouse, kinds in sorted(orderwatch.counts(self.db).items()):
            for kind, n in sorted(kinds.items()):
                changes.add_metric([warehouse, kind], float(n))
        return changes

    def _attention(self) -> Metric:
        """``nebridge_attention{kind}``: what waits for a person, every kind (0 included)."""
        gauge = GaugeMetricFamily(
            "nebridge_attention",
            "Things that wait for a person, by kind (`nebridge attention` lists them)",
            labels=["kind"],
        )
        live = attention.paused_stage_items(self.host) if self.host is not None else []
        counts = attention.collect(self.db, live=live, limit=0).counts
        for kind in attention.AttentionKind:
            gauge.add_metric([kind.value], float(counts.pop(kind.value, 0)))
        for other, n in sorted(counts.items()):  # kinds a connector reported
            gauge.add_metric([other], float(n))
        return gauge


def _timestamp(value: object) -> float:
    """Seconds since the epoch of a stored timestamp (aggregates may bypass the column type)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.timestamp()


class _MetricsServer(BoundedThreadingMixIn, WSGIServer):
    """A scraper or two at a time; a stalled or flooding client cannot pin threads."""

    max_connections = 8
    connection_seconds = 30.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class Metrics:
    """The process's metrics: one registry, served over HTTP when configured."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ne_calls = Counter(
            "nebridge_nextengine_calls",
            "Next Engine API calls by endpoint and result code",
            ["endpoint", "result"],
            registry=self.registry,
        )
        self._store: _StoreCollector | None = None
        self._server: _MetricsServer | None = None
        self._thread: threading.Thread | None = None

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
            change="stop that program, or change metrics.port in daemon.yaml (0 turns metrics off)",
        )
        server.set_app(make_wsgi_app(self.registry))
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics", daemon=True
        )
        self._thread.start()
        self._server = server
        log.info("metrics on http://%s:%d/metrics", host, self._server.server_port)

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
