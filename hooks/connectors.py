"""The WMS connector contract.

A connector moves data between nebridge and one kind of WMS: a folder of CSV files, a REST
API, an SFTP drop. The engine drives it; the connector never touches the database, starts
threads or builds its own HTTP session (it gets ``ctx.http``).

Inbound data arrives in *batches* (a file, an API page). The engine asks a batch for its
events, stores them durably in one transaction together with ``batch.cursor`` and only then
calls ``batch.commit()``. A crash between the two re-delivers the batch on restart; the
engine recognises events it already holds (same id, same content) and accepts them once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from hooks.errors import BatchRejected
from hooks.records import (
    EventKind,
    OrderInstruction,
    Problem,
    ProductLink,
    WarehouseInfo,
    WmsEvent,
)

if TYPE_CHECKING:  # a type only: the CLI's start-up does not pay for importing requests
    import requests


def _never_imported(ne_order_id: str) -> bool:
    """Default of :attr:`ConnectorContext.is_imported_order`: no order is known."""
    return False


def _keep_secret(value: str) -> None:
    """Default of :attr:`ConnectorContext.mask_secret`: nothing to mask with."""


def _log_problem(problem: Problem) -> None:
    """Default of :attr:`ConnectorContext.report_problem` outside an engine: log it."""
    logging.getLogger("nebridge.connector").error("%s: %s", problem.key, problem.reason)


def _forget_problem(key: str) -> None:
    """Default of :attr:`ConnectorContext.resolve_problem` outside an engine: nothing."""


def _never_stop() -> bool:
    """Default of :attr:`ConnectorContext.should_stop` outside an engine: never."""
    return False


@dataclass
class ConnectorContext:
    """What the engine lends a connector for one call.

    ``cursors`` holds the stored positions whose names start with ``wms.`` (the values
    earlier batches carried in :attr:`InboundBatch.cursor`). ``state_dir`` is the folder
    where a connector may keep its own files (tokens, local records; ``None`` only outside a
    configured engine). ``is_imported_order(id)`` tells whether a Next Engine order id was
    imported (instructed) by nebridge — also when it was cancelled or edited in Next Engine
    since (``order_watch``) — for WMSs whose order number field is free text.
    ``mask_secret(value)`` has every later log line mask ``value`` (tokens, secrets).
    ``report_problem(problem)`` puts something that needs a person in front of the admin
    (``nebridge attention``, ``status``, ``doctor``, metrics); ``resolve_problem(key)`` closes
    it when it is gone. Both write at once, in their own transaction. ``should_stop()`` turns
    true when the engine is stopping: long work (a large order import) ends at its next safe
    point and goes on at the next run. ``credentials_dir`` is
    the installation's folder of secret files (``daemon.yaml`` ``credentials_dir``); read a
    secret with :func:`hooks.credentials.read_credential`, which also finds systemd's copy.
    ``product_count`` is how many products the stored WMS product master holds now (so a
    connector can refuse a new master that would drop most of them).
    """

    warehouses: Mapping[str, WarehouseInfo]
    is_known_product: Callable[[str], bool]
    http: requests.Session
    clock: Callable[[], datetime]
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    cursors: Mapping[str, str] = field(default_factory=dict)
    state_dir: Path | None = None
    is_imported_order: Callable[[str], bool] = _never_imported
    mask_secret: Callable[[str], None] = _keep_secret
    report_problem: Callable[[Problem], None] = _log_problem
    resolve_problem: Callable[[str], None] = _forget_problem
    should_stop: Callable[[], bool] = _never_stop
    credentials_dir: Path | None = None
    product_count: int = 0


@runtime_checkable
class InboundBatch(Protocol):
    """One unit of inbound WMS data that is accepted or rejected as a whole."""

    source: str
    kind: EventKind
    cursor: tuple[str, str] | None

    def events(self) -> Iterator[WmsEvent]:
        """Yield the batch's validated events; raise :class:`BatchRejected` before the first
        event if anything in the batch is invalid (nothing may be half-applied)."""
        ...

    def commit(self) -> None:
        """Called after the engine stored every event durably (e.g. move the file away)."""
        ...

    def reject(self, error: BatchRejected) -> None:
        """Called when the batch is rejected whole (e.g. quarantine the file with its errors)."""
        ...


@dataclass(frozen=True, slots=True)
class ProductSnapshot:
    """The full product master of the WMS at one point in time."""

    version: str
    products: Sequence[ProductLink]


@dataclass(frozen=True, slots=True)
class InstructionBatch:
    """Order instructions pushed to the WMS in one go.

    ``key`` is stable across retries: pushing the same batch again after a crash must not
    create the instructions twice (write the same file name, or look the orders up first).
    """

    key: str
    created_at: datetime
    orders: Sequence[OrderInstruction]


@runtime_checkable
class WmsConnector(Protocol):
    """A live connection to one WMS, built by a :class:`ConnectorSpec` factory."""

    def recover(self, ctx: ConnectorContext) -> None:
        """Called once at start: create what the connector works in (its folders) and return
        work that a crash left half-claimed to the queue."""
        ...

    def has_new_input(self) -> bool:
        """Cheap check, called about every second, whether new inbound data may be waiting."""
        ...

    def pending_batches(self, kind: EventKind, ctx: ConnectorContext) -> Iterator[InboundBatch]:
        """Yield the inbound batches of ``kind`` that are ready, oldest first."""
        ...

    def product_snapshot(
        self, ctx: ConnectorContext, known_version: str | None
    ) -> ProductSnapshot | None:
        """Return the product master if it changed since ``known_version``, else None."""
        ...

    def push_orders(self, batch: InstructionBatch, ctx: ConnectorContext) -> None:
        """Deliver order instructions; idempotent for the same ``batch.key``.

        Orders that cannot be instructed as they are: deliver every other one, write nothing
        of those, then raise :class:`~hooks.errors.OrdersRefused` naming each with its reason.
        """
        ...


@runtime_checkable
class RequeueingConnector(Protocol):
    """Optional part of the contract: a connector that can take a rejected batch back.

    A connector that keeps rejected batches (e.g. quarantined files) implements it so that
    ``nebridge inbox retry NAME`` can re-deliver a batch once the admin has fixed it.
    """

    def requeue(self, name: str, ctx: ConnectorContext) -> str:
        """Put the rejected batch ``name`` back in the queue, to be taken again; return where
        it went. Raise ``KeyError`` if no rejected batch is called ``name`` and
        ``ValueError`` if it cannot be re-queued as it is, with a message saying why."""
        ...


# -- warehouse stock snapshots (issue #16) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class StockSnapshot:
    """The absolute on-hand quantity of every product of one warehouse at ``counted_at``.

    ``quantities`` maps WMS product codes to their on-hand quantity (0 or more); a product the
    WMS does not list has none. ``counted_at`` is timezone-aware: events confirmed up to it
    are in the counts, later ones are not (the comparison corrects for both).
    """

    warehouse: str
    counted_at: datetime
    quantities: Mapping[str, int]


@runtime_checkable
class StockBatch(Protocol):
    """Stock snapshots that arrived together (a file, one read of an API), taken whole."""

    source: str

    def snapshots(self) -> Sequence[StockSnapshot]:
        """The validated snapshots; raise :class:`BatchRejected` with every error (file, line,
        field, reason) if anything is invalid, before anything is stored."""
        ...

    def commit(self) -> None:
        """Called after the engine stored every snapshot (e.g. move the file away)."""
        ...

    def reject(self, error: BatchRejected) -> None:
        """Called when the batch is rejected whole (e.g. quarantine the file with its errors)."""
        ...


@runtime_checkable
class StockReadingConnector(Protocol):
    """Optional part of the contract: a connector that can tell warehouse stock.

    ``nebridge stock diff`` compares it with Next Engine's. A file-based WMS delivers
    snapshots when it drops them; an API-based one reads them when ``take`` is true (on
    ``nebridge stock take`` or on the ``stock_reconcile`` schedule) and otherwise yields none.
    """

    def stock_batches(self, ctx: ConnectorContext, take: bool) -> Iterator[StockBatch]:
        """Yield the stock batches ready now, oldest first; each is committed or rejected
        before the next one is asked for."""
        ...


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """Where a connector's authorisation with its WMS stands (no network call needed).

    ``state``: ``connected``, ``needs_reconnect`` (the WMS no longer accepts the grant: run
    ``nebridge wms connect``) or ``not_connected``; ``detail`` says what to do or until when
    the tokens last.
    """

    state: Literal["connected", "needs_reconnect", "not_connected"]
    detail: str = ""


@runtime_checkable
class AuthorizingConnector(Protocol):
    """Optional part of the contract: a connector whose WMS needs a person to authorise
    nebridge once (an OAuth 2 authorisation-code flow). ``nebridge wms connect`` drives it:
    it prints :meth:`authorization_url`, receives the code on :attr:`redirect_uri` (or takes
    ``--code``) and hands it to :meth:`authorize`."""

    @property
    def redirect_uri(self) -> str:
        """Where the WMS sends the person back with ``code`` and ``state``."""
        ...

    def authorization_url(self, state: str, ctx: ConnectorContext) -> str:
        """The page where a person approves nebridge; ``state`` must come back unchanged."""
        ...

    def authorize(self, code: str, ctx: ConnectorContext) -> LinkStatus:
        """Exchange ``code`` for tokens, store them privately and say how the link stands."""
        ...

    def link_status(self, ctx: ConnectorContext) -> LinkStatus:
        """How the authorisation stands now, from what is stored (no WMS call)."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    """A connector type a plugin offers: selected by ``wms.connector: <name>``.

    ``config_model`` validates the ``wms.<name>`` section of ``daemon.yaml``. ``credentials``
    names the secret files the connector reads (:func:`hooks.credentials.read_credential`);
    the generated systemd unit loads each with ``LoadCredential=``. The factory only builds:
    read-only commands (``config check``, ``status``, often run as root) call it too, so it
    creates no file or folder; :meth:`WmsConnector.recover` does, at start. ``keeps_state``:
    the connector keeps records in ``state_dir`` that must not be lost or forked (what was
    already sent to the WMS); the engine then starts it only on the state folder its
    database recorded — not on another host's empty folder, which would send it all again.
    """

    name: str
    factory: Callable[[Any], WmsConnector]
    config_model: type[Any] | None = None
    summary: str = ""
    credentials: tuple[str, ...] = ()
    keeps_state: bool = False


# -- orders that change after import (issue #15) ----------------------------------------------

#: Why an instructed order must leave the WMS: cancelled or deleted in Next Engine, or edited
#: there (its new content follows as a new instruction in the next order batch).
CancelReason = Literal["cancelled", "edited", "deleted"]


@dataclass(frozen=True, slots=True)
class OrderCancellation:
    """An order nebridge instructed earlier that the WMS must not ship any more.

    ``detected_at`` is when nebridge saw the change in Next Engine (timezone-aware).
    """

    ne_order_id: str
    warehouse: str
    reason: CancelReason
    detected_at: datetime


@dataclass(frozen=True, slots=True)
class CancellationBatch:
    """Cancellations pushed to the WMS in one go, always before the order batch of the same
    run (an edited order's new instruction must never reach the WMS before its cancellation).

    ``key`` is stable across retries: pushing the same batch again after a crash must not
    cancel twice in a way the WMS would see (write the same file name, or skip what is gone).
    """

    key: str
    created_at: datetime
    cancellations: Sequence[OrderCancellation]


@runtime_checkable
class CancellingConnector(Protocol):
    """Optional part of the contract: a connector that can take an instructed order back.

    Without it, ``order_watch`` still detects the change, but each one waits in
    ``nebridge attention`` for a person to stop the order in the WMS by hand.
    """

    def push_cancellations(self, batch: CancellationBatch, ctx: ConnectorContext) -> None:
        """Tell the WMS to drop these orders; idempotent for the same ``batch.key``.

        An order the WMS can no longer drop (picking started): cancel every other one, then
        raise :class:`~hooks.errors.CancellationsRefused` naming each with what the WMS said.
        The engine puts each refused order in front of a person and keeps watching it.
        """
        ...
