"""Assembling the engine from a configuration: plugins, store, connector, pipelines.

:func:`build_runtime` validates everything first and raises :class:`ConfigError` listing
every problem, so that a bad configuration never starts half a daemon.
"""

from __future__ import annotations

import copy
import importlib.metadata as md
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlmodel import col, select

from daemon import USER_AGENT, attention
from daemon.config import ConfigError, LoadedConfig, load_config
from daemon.dispatch import EXECUTORS
from daemon.importer import OrderImporter
from daemon.inbox import Intake
from daemon.instancelock import FencedTokenStore, check_wms_write
from daemon.logsetup import register_secret
from daemon.metrics import CallObserver
from daemon.negate import KeyMissing, NeGate
from daemon.nelink import make_client, token_store
from daemon.nextengine.client import NextEngineClient
from daemon.nextengine.tokens import TokenStore
from daemon.notify import Notifier
from daemon.outbox import Dispatcher, Executor
from daemon.pipeline import SENT_TO_WMS, WarehousePipeline
from daemon.pluginload import load_plugins
from daemon.pluginmanager import PluginHost
from daemon.store.engine import Bind, check_migrated, make_engine, read_session, rolled_back
from daemon.store.models import Cursor, ImportedOrder, WmsProduct, utcnow
from daemon.tokenguard import TokenGuard
from hooks.connectors import ConnectorContext, WmsConnector
from hooks.http import BoundedSession
from hooks.notify import NotifyContext
from hooks.records import Problem, WarehouseInfo

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """A validated, ready-to-run engine for one configuration."""

    loaded: LoadedConfig
    host: PluginHost
    engine: Engine
    connector: WmsConnector | None
    connector_error: str = ""
    stop_event: threading.Event = field(default_factory=threading.Event)
    #: ``ctx.http`` of the connectors: every call has a deadline and a size cap (``http:``).
    http: BoundedSession = field(default_factory=BoundedSession)
    _ne_client: NextEngineClient | None = None
    _client_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Where the Next Engine client counts its calls (the metrics; a fleet company's own).
    metrics: CallObserver | None = None
    #: Why Next Engine calls must not be sent now (the instance lock is lost), or None;
    #: checked before every call (see :class:`~daemon.instancelock.FencedTokenStore`).
    fence: Callable[[], str | None] = field(default=lambda: None)
    #: Where the Next Engine token pair lives (fleet mode: the vault); None: the token file.
    token_store: Callable[[], TokenStore] | None = None
    #: Fleet mode: why this process cannot open the company's token pair for want of its
    #: vault key (a key rotation under way), or None; the gate holds Next Engine work back.
    key_missing: KeyMissing = field(default=lambda session: None)
    #: How :meth:`close` releases the engine (a fleet company's shares the worker's pool).
    on_close: Callable[[], None] | None = None
    #: Fleet mode: the company's code (notifications name it, their commands carry
    #: ``--company``); ``""`` in a single-company installation.
    company: str = ""
    #: Where sessions go: the engine, or a connection whose transaction a dry run rolls back.
    db: Bind = field(init=False)

    def __post_init__(self) -> None:
        self.http.headers["User-Agent"] = USER_AGENT
        self.db = self.engine
        self.gate = NeGate(self.db, self.clock, lambda session: self.key_missing(session))

    @contextmanager
    def dry(self) -> Iterator[Runtime]:
        """This runtime with every database write inside one transaction rolled back at the end."""
        with rolled_back(self.engine) as conn:
            view = copy.copy(self)
            view.db = conn
            view.gate = NeGate(conn, self.clock, lambda session: self.key_missing(session))
            yield view

    def ne_client(self) -> NextEngineClient:
        """The Next Engine client of the linked company (built once, owned by the engine)."""
        with self._client_lock:  # one client per process: it remembers refused token pairs
            if self._ne_client is None:
                observer = self.metrics.observe_call if self.metrics is not None else None
                client = make_client(self.config, observer=observer, store=self.ne_token_store())
                client.token_store = FencedTokenStore(client.token_store, lambda: self.fence())
                self._ne_client = client
            return self._ne_client

    def ne_token_store(self) -> TokenStore:
        """Where this runtime's Next Engine token pair lives, unfenced: the store its client
        uses (fleet mode: the company's row in the vault; otherwise the token file)."""
        return token_store(self.config) if self.token_store is None else self.token_store()

    def executors(self) -> dict[str, Executor]:
        """The outbox executor of every action kind (:data:`daemon.dispatch.EXECUTORS`); they
        do nothing while Next Engine is not usable."""
        client = self.ne_client()
        return {
            kind: executor(self.db, client, self.gate, self.config.dispatch, self.clock)
            for kind, executor in EXECUTORS.items()
        }

    def token_guard(self) -> TokenGuard:
        """Keep-alive and lapse warnings for the Next Engine link."""
        return TokenGuard(
            self.config, self.db, self.ne_client, self.gate, self.ne_token_store, self.clock
        )

    def notifier(self) -> Notifier:
        """Notifications built from attention, delivered to the ``nebridge_notify`` sinks."""
        return Notifier(
            self.db,
            self.host,
            self.config.notify,
            self.notify_context,
            live=lambda: attention.paused_stage_items(self.host),
            clock=self.clock,
            company=self.company,
        )

    def notify_context(self) -> NotifyContext:
        """What a notifier plugin is lent for a delivery (see :mod:`hooks.notify`)."""
        zone = ZoneInfo(self.config.timezone) if self.config.timezone else None
        return NotifyContext(
            http=self.http,
            credentials_dir=self.config.credentials_dir,
            mask_secret=register_secret,
            zone=zone,
            env=dict(os.environ),
        )

    def order_importer(self) -> OrderImporter | None:
        """The order importer (None without a WMS connector to deliver to)."""
        if self.connector is None:
            return None
        return OrderImporter(
            self.db,
            self.ne_client(),
            self.host,
            self.connector,
            self.connector_context,
            self.config,
            self.gate,
            self.clock,
            guard=self.wms_guard,
        )

    @property
    def config(self) -> Any:
        """The core configuration (shortcut)."""
        return self.loaded.config

    def warehouses(self) -> dict[str, WarehouseInfo]:
        """Configured warehouses as plugins see them, by code."""
        return {
            wh.code: WarehouseInfo(
                code=wh.code,
                name=wh.name or wh.code,
                ne_linked=wh.ne_linked,
                import_orders=wh.import_orders,
            )
            for wh in self.loaded.config.warehouses
        }

    def start_connector(self) -> None:
        """Start the WMS connector as the daemon does before its first work: a connector
        that keeps records in the state folder is started only on the folder its database
        recorded (:mod:`daemon.statedir`; raises
        :class:`~daemon.statedir.StateFolderMismatch`), then ``recover`` makes its folders and
        settles what an earlier process left."""
        if self.connector is None:
            return
        name = self.config.wms.connector
        offered = self.host.connector_specs().get(name)
        if offered is not None and offered[1].keeps_state:
            from daemon import statedir

            statedir.claim(self.db, self.config.state_dir, name)
        self.connector.recover(self.connector_context())

    def connector_context(self) -> ConnectorContext:
        """What a connector call may use; products are read once per call."""
        with read_session(self.db) as session:
            known = set(session.scalars(select(col(WmsProduct.product_code))))
            cursors = {
                c.name: c.value
                for c in session.scalars(select(Cursor).where(col(Cursor.name).startswith("wms.")))
            }
        db = self.db

        def is_imported_order(ne_order_id: str) -> bool:
            with read_session(db) as session:
                order = session.get(ImportedOrder, ne_order_id)
            return order is not None and order.state in SENT_TO_WMS

        def report_problem(problem: Problem) -> None:
            attention.report(db, problem, source=self.config.wms.connector)

        def resolve_problem(key: str) -> None:
            attention.resolve(db, [key])

        return ConnectorContext(
            warehouses=self.warehouses(),
            is_known_product=known.__contains__,
            http=self.http,
            clock=self.clock,
            log=logging.getLogger("nebridge.connector"),
            cursors=cursors,
            state_dir=self.config.state_dir,
            is_imported_order=is_imported_order,
            mask_secret=register_secret,
            report_problem=report_problem,
            resolve_problem=resolve_problem,
            should_stop=self.stop_event.is_set,
            credentials_dir=self.config.credentials_dir,
            product_count=len(known),
        )

    def clock(self) -> datetime:
        """The engine's clock (UTC)."""
        return utcnow()

    def intake(self) -> Intake | None:
        """The intake for the configured connector (None if it could not be built)."""
        if self.connector is None:
            return None
        return Intake(self.db, self.connector, self.connector_context, guard=self.wms_guard)

    def wms_guard(self, what: str) -> None:
        """Raise :class:`~daemon.instancelock.WmsWriteFenced` if this process may no longer
        write into the company's WMS (``fence`` gives a reason): file writes cannot join the
        fenced database transaction, so this is checked right before each one."""
        check_wms_write(self.fence, self.company, what)

    def pipelines(self) -> list[WarehousePipeline]:
        """One pipeline per configured warehouse, in configuration order."""
        return [
            WarehousePipeline(
                self.db,
                self.host,
                info,
                self.order_importer,
                clock=self.clock,
                ship_unimported_orders=self._ships_unimported(info.code),
            )
            for info in self.warehouses().values()
        ]

    def _ships_unimported(self, code: str) -> bool:
        """``warehouses[].ship_unimported_orders`` of the warehouse ``code``."""
        warehouse = self.loaded.config.warehouse(code)
        return warehouse is not None and warehouse.ship_unimported_orders

    def dispatcher(self) -> Dispatcher:
        """The outbox dispatcher with the executors available now."""
        return Dispatcher(
            self.db,
            self.executors(),
            clock=self.clock,
            batch_size=self.config.dispatch.batch_size,
            blocked=self.gate.blocked,
        )

    def close(self) -> None:
        """Release the database engine and HTTP sessions."""
        if self._ne_client is not None:
            self._ne_client.close()
        self.http.close()
        if self.on_close is not None:
            self.on_close()
        else:
            self.engine.dispose()


def build_runtime(
    config_path: Path | None = None,
    *,
    loaded: LoadedConfig | None = None,
    entry_points: Mapping[str, md.EntryPoint] | None = None,
    extra_plugins: Mapping[str, object] | None = None,
    check_db: bool = True,
) -> Runtime:
    """Load, validate and assemble; raises ConfigError with every problem found."""
    if loaded is None:
        if config_path is None:
            raise ValueError("pass config_path or loaded")
        loaded = load_config(config_path)
    host, issues, connector, connector_error = load_plugins(loaded, entry_points, extra_plugins)
    if issues:
        raise ConfigError(loaded.path, issues)
    engine = make_engine(loaded.config.resolved_database_url, create=not check_db)
    if check_db:
        try:
            check_migrated(engine)
        except Exception:
            engine.dispose()
            raise
    return Runtime(
        loaded=loaded,
        host=host,
        engine=engine,
        connector=connector,
        connector_error=connector_error,
        http=BoundedSession(loaded.config.http.limits()),
    )
