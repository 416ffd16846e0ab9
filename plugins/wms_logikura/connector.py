"""The Logikura connector: nebridge ⇄ Logikura's REST API.

It is a :class:`~hooks.connectors.WmsConnector` (histories in, schedules out, product master),
an :class:`~hooks.connectors.AuthorizingConnector` (``nebridge wms connect``) and a
:class:`~hooks.connectors.RequeueingConnector` (``nebridge inbox retry`` reads a rejected
history again). Its files live in the engine's state folder: the token file (0600) and
``logikura.sqlite3`` (see :mod:`plugins.wms_logikura.store`).

Reading errors (Logikura down, the grant gone, a warehouse code Logikura lacks, a paging
loop) are raised to the engine — the intake reports the failed step, ``run --once`` is not
``ok`` — and put in front of the admin as a ``wms_read_failed`` attention item with what to
do, closed by the next good read; Next Engine work goes on meanwhile. A failed
``push_orders`` raises, so the engine reports it and delivers the batch again later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hooks.connectors import (
    CancellationBatch,
    ConnectorContext,
    InboundBatch,
    InstructionBatch,
    LinkStatus,
    ProductSnapshot,
    StockBatch,
)
from hooks.records import EventKind, Problem
from plugins.wms_logikura.auth import Authorizer
from plugins.wms_logikura.cancel import withdraw
from plugins.wms_logikura.catalog import (
    Catalog,
    CatalogCache,
    WarehouseMap,
    resolve_warehouses,
)
from plugins.wms_logikura.client import LogikuraClient
from plugins.wms_logikura.config import LogikuraConfig
from plugins.wms_logikura.errors import (
    LogikuraAuthError,
    LogikuraConfigError,
    LogikuraError,
    LogikuraUnavailable,
)
from plugins.wms_logikura.inbound import CHANGED, CLOSING, GONE, KINDS, LEAVE, HistoryReader
from plugins.wms_logikura.outbound import SchedulePusher
from plugins.wms_logikura.ratelimit import RateLimiter
from plugins.wms_logikura.stock import LogikuraStockBatch
from plugins.wms_logikura.store import HELD, LocalStore
from plugins.wms_logikura.tokens import TokenFile

STORE_NAME = "logikura.sqlite3"
READ_FAILED_KEY = "logikura:read_failed:"


def _read_failed(ctx: ConnectorContext, what: str, exc: LogikuraError) -> None:
    """Put a failed Logikura read in front of the admin (closed by the next good read)."""
    if isinstance(exc, LogikuraAuthError):
        fix = "run `nebridge wms connect` to authorise nebridge in Logikura again"
    elif isinstance(exc, LogikuraUnavailable):
        fix = (
            "nothing is lost: nebridge reads again at every poll; if it lasts, check "
            "Logikura's status and the network (`nebridge doctor`)"
        )
    else:
        fix = "correct what the reason names (daemon.yaml or Logikura); the next poll reads again"
    kind = "wms_auth_lost" if isinstance(exc, LogikuraAuthError) else "wms_read_failed"
    ctx.report_problem(
        Problem(
            key=f"{READ_FAILED_KEY}{what}",
            kind=kind,
            reason=f"Logikura {what.replace('_', ' ')} not read: {exc}",
            fix=fix,
        )
    )


@dataclass
class _Parts:
    """Everything built from the first context: the same objects serve every later call."""

    state_dir: Path
    store: LocalStore
    auth: Authorizer
    client: LogikuraClient
    catalog: CatalogCache
    reader: HistoryReader


class LogikuraConnector:
    """A connection to one Logikura account (see the module docstring).

    ``clock`` (POSIX seconds) and ``sleep`` drive token expiry and the rate limit; tests
    inject them to run minutes of traffic without waiting.
    """

    def __init__(
        self,
        config: LogikuraConfig,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._parts: _Parts | None = None
        self._lock = threading.Lock()
        self._last_poll = float("-inf")
        self._unsure: set[str] | None = None  # read-failed keys that may be open

    # ---------------------------------------------------------------- assembly
    def _get(self, ctx: ConnectorContext) -> _Parts:
        if ctx.state_dir is None:
            raise LogikuraConfigError(
                "the Logikura connector needs the engine's state folder "
                "(state_dir) for its tokens and records"
            )
        with self._lock:
            parts = self._parts
            if parts is not None and parts.state_dir == ctx.state_dir:
                return parts
            store = LocalStore(ctx.state_dir / STORE_NAME)
            auth = Authorizer(
                self.config,
                TokenFile(self.config.token_path(ctx.state_dir)),
                ctx.http,
                self._clock,
                ctx.mask_secret,
                ctx.log,
                credentials_dir=ctx.credentials_dir,
            )
            limiter = RateLimiter(
                store,
                self.config.requests_per_minute,
                clock=self._clock,
                sleep=self._sleep,
                max_wait=self.config.max_wait_seconds,
            )
            client = LogikuraClient(self.config, ctx.http, auth, limiter, self._sleep, ctx.log)
            catalog = CatalogCache(self.config, store, self._clock, ctx.log)

            def read_catalog(force: bool) -> Catalog:
                return catalog.get(client, force=force)

            reader = HistoryReader(self.config, client, store, read_catalog, self._clock, ctx.log)
            self._parts = _Parts(ctx.state_dir, store, auth, client, catalog, reader)
            return self._parts

    # ---------------------------------------------------------------- WmsConnector
    def recover(self, ctx: ConnectorContext) -> None:
        """Nothing is ever half-claimed here (schedules are reconciled when pushed); say how
        the authorisation stands if it needs the admin."""
        warning = self._get(ctx).auth.warning()
        if warning:
            ctx.log.warning("Logikura: %s", warning)

    def has_new_input(self) -> bool:
        """True once ``poll_seconds`` have passed since the histories were last read."""
        return time.monotonic() - self._last_poll >= self.config.poll_seconds

    def pending_batches(self, kind: EventKind, ctx: ConnectorContext) -> Iterator[InboundBatch]:
        """The new or changed histories of ``kind``, one batch each, then the new position;
        a read failure is reported (attention) and raised."""
        self._last_poll = time.monotonic()
        what = KINDS[kind].key
        try:
            yield from self._get(ctx).reader.batches(kind, ctx)
        except LogikuraError as exc:
            self._failed(ctx, what, exc)
            raise
        self._read_ok(ctx, what)

    def _unsure_keys(self) -> set[str]:
        """What may have a read-failed item open: everything at start, then what failed."""
        if self._unsure is None:
            self._unsure = {k.key for k in KINDS.values()} | {"product_master"}
        return self._unsure

    def _failed(self, ctx: ConnectorContext, what: str, exc: LogikuraError) -> None:
        _read_failed(ctx, what, exc)
        self._unsure_keys().add(what)

    def _read_ok(self, ctx: ConnectorContext, what: str) -> None:
        """Close the read-failed item of ``what`` if it may be open (no database write at
        every poll)."""
        if what in self._unsure_keys():
            ctx.resolve_problem(f"{READ_FAILED_KEY}{what}")
            self._unsure_keys().discard(what)

    def product_snapshot(
        self, ctx: ConnectorContext, known_version: str | None
    ) -> ProductSnapshot | None:
        """The product master (cached ``products_refresh_seconds``) if its version changed;
        a read failure is reported (attention) and raised."""
        parts = self._get(ctx)
        try:
            catalog = parts.catalog.get(parts.client)
        except LogikuraError as exc:
            self._failed(ctx, "product_master", exc)
            raise
        self._read_ok(ctx, "product_master")
        if catalog.version == known_version:
            return None
        return ProductSnapshot(catalog.version, tuple(catalog.products()))

    def stock_batches(self, ctx: ConnectorContext, take: bool) -> Iterator[StockBatch]:
        """When ``take``: one read of the linked warehouses' inventories (see :mod:`.stock`);
        otherwise none (Logikura never drops a count by itself)."""
        if not take:
            return
        parts = self._get(ctx)

        def catalog() -> Catalog:
            return parts.catalog.get(parts.client)

        def warehouses() -> dict[int, str]:
            return WarehouseMap.build(self.config, catalog(), ctx, parts.store).by_id

        yield LogikuraStockBatch(parts.client, catalog, warehouses, ctx)

    def push_orders(self, batch: InstructionBatch, ctx: ConnectorContext) -> None:
        """One shipping schedule per order, never two (see :mod:`.outbound`)."""
        if not batch.orders:
            return
        parts = self._get(ctx)

        def read_catalog(force: bool) -> Catalog:
            return parts.catalog.get(parts.client, force=force)

        resolve_warehouses(self.config, read_catalog(False), ctx.warehouses)
        SchedulePusher(
            self.config,
            parts.client,
            parts.store,
            read_catalog,
            self._clock,
            ctx.log,
            ctx.should_stop,
        ).push(batch)

    def push_cancellations(self, batch: CancellationBatch, ctx: ConnectorContext) -> None:
        """Delete the idle shipping schedule of each order (see :mod:`.cancel`)."""
        if not batch.cancellations:
            return
        parts = self._get(ctx)
        withdraw(batch, parts.client, parts.store, self._clock, ctx.log)

    # ---------------------------------------------------------------- RequeueingConnector
    def requeue(self, name: str, ctx: ConnectorContext) -> str:
        """Read the rejected or held history ``name`` (``logikura:shipping_history:<id>``)
        again at the next intake, by id — a held one taken as the admin confirmed it. For a
        history reported as changed or deleted after delivery, or a held one named with
        ``:leave`` (``logikura:shipping_history:<id>:leave``), close the item and send
        nothing (the admin settled it in Next Engine by hand)."""
        leave = name.endswith(LEAVE)
        source = name.removesuffix(LEAVE)
        if not any(source.startswith(k.source + ":") for k in KINDS.values()):
            raise KeyError(name)
        store = self._get(ctx).store
        state, digest = store.marks(source).get(source, ("", ""))
        if state in (CHANGED, GONE) or (leave and state == HELD):
            store.mark(source, CLOSING, digest)
            return (
                f"Logikura {source}: left as it is, its item closes at the next intake; "
                "nothing is sent to Next Engine"
            )
        if leave or not store.requeue(source):
            raise KeyError(name)
        return f"Logikura {source}, read again at the next intake"

    # ---------------------------------------------------------------- AuthorizingConnector
    @property
    def redirect_uri(self) -> str:
        """``wms.logikura.redirect_uri`` (registered with the app at Logikura)."""
        return self.config.redirect_uri

    def authorization_url(self, state: str, ctx: ConnectorContext) -> str:
        """Logikura's permission page for this app."""
        return self._get(ctx).auth.authorization_url(state)

    def authorize(self, code: str, ctx: ConnectorContext) -> LinkStatus:
        """Store the grant for ``code``, then check the warehouses against the account."""
        parts = self._get(ctx)
        parts.auth.exchange(code)
        try:
            catalog = parts.catalog.get(parts.client, force=True)
            resolved = resolve_warehouses(self.config, catalog, ctx.warehouses)
        except LogikuraError as exc:
            raise LogikuraConfigError(f"nebridge is authorised in Logikura, but: {exc}") from None
        status = parts.auth.status()
        matched = ", ".join(f"{code} → 拠点 #{lid}" for code, lid in resolved.items())
        return LinkStatus(
            status.state,
            f"{status.detail}; warehouses: {matched or 'none'}; "
            f"{len(catalog.variants)} product variant(s)",
        )

    def link_status(self, ctx: ConnectorContext) -> LinkStatus:
        """How the grant stands, from the token file."""
        return self._get(ctx).auth.status()
