"""The CSV folder connector: the WMS drops CSV files into an inbox, nebridge writes orders out.

Files are matched by name (``shipments*.csv``, ``receipts*.csv``, ``products*.csv``,
``stock*.csv``, any case), taken only once complete (see :mod:`plugins.wms_csv.folders`)
and claimed by a rename into ``.claimed/`` before they are read, so a crash never loses or
half-applies one.

The product master (``products*.csv``) is kept in place, not moved: the contract has no
commit for snapshots, so the file must survive a crash between reading it and storing it.
The newest complete one is the master; older ones are moved to ``processed/`` once a newer
valid one exists, and an invalid one is rejected like any other file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, tzinfo
from pathlib import Path

from hooks.connectors import (
    CancellationBatch,
    ConnectorContext,
    InboundBatch,
    InstructionBatch,
    ProductSnapshot,
    StockBatch,
)
from hooks.errors import BatchRejected, RecordError, StepNotReady
from hooks.records import EventKind, Problem, WmsEvent
from plugins.wms_csv.config import CsvConnectorConfig
from plugins.wms_csv.folders import (
    ClaimedFile,
    Inbox,
    ReadyFile,
    make_folder,
    open_claimed,
    this_user,
)
from plugins.wms_csv.formats import FORMATS, PRODUCTS, STOCK
from plugins.wms_csv.inbound import read_events, read_products
from plugins.wms_csv.outbox import write_cancellations, write_orders
from plugins.wms_csv.stock import CsvStockBatch

_Signature = tuple[str, int, int]
#: The attention key of a product master refused for dropping most products.
SHRINK_PROBLEM = "csv:product_master_shrinks"
#: The attention item naming the inbox files no format matches.
UNKNOWN_NAMES_PROBLEM = "csv:unknown_names"


class CsvBatch(ClaimedFile):
    """One claimed shipments or receipts file, accepted or rejected as a whole."""

    def __init__(
        self,
        inbox: Inbox,
        path: Path,
        file: ReadyFile,
        kind: EventKind,
        ctx: ConnectorContext,
        zone: tzinfo,
    ) -> None:
        super().__init__(inbox, path, file, ctx, zone)
        self.kind = kind
        self.cursor: tuple[str, str] | None = None

    def events(self) -> Iterator[WmsEvent]:
        """Validate the whole file, then yield one event per shipment or receipt id.

        A link or special file is rejected unread; a file that changes while it is read
        raises :class:`~hooks.errors.StepNotReady` (it goes back to the inbox).
        """
        if self._file.refusal is not None:
            raise BatchRejected(self.source, [RecordError(self.source, self._file.refusal)])
        return read_events(
            self._path, self.source, self._file.fmt, self._ctx, self._zone, self._file
        )


class CsvConnector:
    """A :class:`~hooks.connectors.WmsConnector` over an inbox and an outbox folder.

    It is also a :class:`~hooks.connectors.RequeueingConnector`: a rejected file the admin
    fixed goes back into the inbox with :meth:`requeue`; and a
    :class:`~hooks.connectors.CancellingConnector` (``cancellations-*.csv``).
    """

    def __init__(self, config: CsvConnectorConfig) -> None:
        self._config = config
        self._zone = config.tzinfo
        self._inbox = Inbox(config.inbox, config.stable_seconds, config.processed_watch_seconds)
        self._master_seen: tuple[_Signature, str] | None = None
        self._unknown_told: tuple[str, ...] | None = None  # None: not yet told this process

    def recover(self, ctx: ConnectorContext) -> None:
        """Create the inbox, its subfolders and the outbox where missing, then return files a
        crash left in ``.claimed/`` to the inbox, to be processed again.

        This is the engine's first call (building the connector, as read-only commands do,
        creates nothing: run as root they would leave folders the service user cannot write).
        A folder that cannot be created is logged with its fix and start goes on: the intake
        or the order push that needs it fails with the reason until it exists.
        """
        for folder in (*self._inbox.folders, self._config.outbox):
            try:
                make_folder(folder, parents=True)
            except OSError as exc:
                ctx.log.error(
                    "the WMS folder %s cannot be created (%s): create it for the service "
                    "user: mkdir -p %s && chown %s: %s",
                    folder,
                    exc.strerror or exc,
                    folder,
                    this_user(),
                    folder,
                )
        for claimed, path in self._inbox.unclaim_all():
            ctx.log.warning("returned %s, claimed before a restart, to the inbox", path.name)
            ctx.resolve_problem(f"csv:claimed:{claimed.name}")

    def has_new_input(self) -> bool:
        """One scan of the inbox: is a complete file waiting (a master only if not yet read)?"""
        return any(
            not (file.fmt is PRODUCTS and self._master_seen_as(file)) for file in self._inbox.scan()
        )

    def pending_batches(self, kind: EventKind, ctx: ConnectorContext) -> Iterator[InboundBatch]:
        """Claim and yield the complete files of ``kind``, oldest first, one at a time.

        Each batch is to be committed or rejected before the next one is asked for: a batch
        still unsettled then (a dry run, an error in the engine) goes back to the inbox to be
        taken again later, instead of waiting in ``.claimed/`` for a restart.
        """
        files = self._inbox.scan()
        self._tell_unknown(ctx)
        for file in files:
            if file.fmt.kind is not kind:
                continue
            path = self._inbox.claim(file)
            if path is None:
                continue
            batch = CsvBatch(self._inbox, path, file, kind, ctx, self._zone)
            try:
                yield batch
            finally:
                if not batch.settled:
                    self._unclaim(path, batch.source, ctx)

    def stock_batches(self, ctx: ConnectorContext, take: bool) -> Iterator[StockBatch]:
        """Claim and yield the complete ``stock-*.csv`` files, oldest first (``take`` does
        nothing here: the WMS decides when it counts). An unsettled one goes back."""
        files = self._inbox.scan()
        self._tell_unknown(ctx)
        for file in files:
            if file.fmt is not STOCK:
                continue
            path = self._inbox.claim(file)
            if path is None:
                continue
            batch = CsvStockBatch(self._inbox, path, file, ctx, self._zone)
            try:
                yield batch
            finally:
                if not batch.settled:
                    self._unclaim(path, batch.source, ctx)

    def _tell_unknown(self, ctx: ConnectorContext) -> None:
        """Files in the inbox under a name no format has are never read: one log line per
        file and one attention item naming them all, closed once none is left (a WMS export
        named one letter off would otherwise leave everything green while nothing flows).
        It first logs each file sent back from ``processed/`` because it grew there."""
        while self._inbox.returned:
            ctx.log.warning("%s", self._inbox.returned.pop(0))
        names = self._inbox.unknown
        if names == self._unknown_told:
            return
        told = self._unknown_told or ()
        patterns = ", ".join(f"{fmt.prefix}*.csv" for fmt in FORMATS)
        for name in names:
            if name not in told:
                ctx.log.warning(
                    "%s in the WMS inbox %s matches no file kind (%s, any case) and is never "
                    "read: rename it or move it out of the inbox",
                    name,
                    self._inbox.root,
                    patterns,
                )
        self._unknown_told = names
        if not names:
            ctx.resolve_problem(UNKNOWN_NAMES_PROBLEM)
            return
        ctx.report_problem(
            Problem(
                key=UNKNOWN_NAMES_PROBLEM,
                kind="file_not_taken",
                reason=f"{len(names)} file(s) in the WMS inbox {self._inbox.root} match no "
                f"file kind and are never read: {', '.join(names[:10])}"
                + (" …" if len(names) > 10 else ""),
                fix=f"rename each to what it holds ({patterns}, any case), or move it out of "
                "the inbox if it is not WMS data; this closes by itself once none is left",
                subject=names[0] if len(names) == 1 else f"{len(names)} files",
            )
        )

    def _unclaim(self, path: Path, source: str, ctx: ConnectorContext) -> None:
        """Put an unsettled claimed file back into the inbox; if that fails, leave it claimed
        (a restart returns it) and report it, so the next files still flow."""
        try:
            self._inbox.file_away(path, self._inbox.root, source)
        except OSError as exc:
            ctx.report_problem(
                Problem(
                    key=f"csv:claimed:{path.name}",
                    kind="file_not_taken",
                    reason=f"{source} could not be put back into the inbox from {path}: {exc}",
                    fix=f"move {path} back into {self._inbox.root} (a restart of nebridge does it)",
                    subject=source,
                )
            )
            return
        ctx.log.info("%s was neither committed nor rejected; back in the inbox", source)

    def product_snapshot(
        self, ctx: ConnectorContext, known_version: str | None
    ) -> ProductSnapshot | None:
        """Read the newest valid complete ``products*.csv`` if its version is not ``known_version``.

        The version is ``name:size:mtime_ns:sha256``. Invalid masters (and links) are rejected
        and the next older one is tried; older ones than the master in use are moved to
        ``processed/``. A master that changes while it is read is left for the next scan.
        """
        masters = sorted(
            (file for file in self._inbox.scan() if file.fmt is PRODUCTS),
            key=lambda file: (file.mtime_ns, file.name),
            reverse=True,
        )
        for index, file in enumerate(masters):
            try:
                snapshot = self._read_master(file, known_version, ctx)
            except StepNotReady as changed:
                ctx.log.info("%s", changed)
                return None
            except BatchRejected as error:
                target = self._inbox.reject(file.path, file.name, error)
                ctx.log.error(
                    "rejected product master %s (%d errors), see %s.errors.txt",
                    file.name,
                    len(error.errors),
                    target,
                )
                continue
            if snapshot is not None:
                ctx.resolve_problem(SHRINK_PROBLEM)
            for older in masters[index + 1 :]:
                self._inbox.file_away(older.path, self._inbox.processed, older.name)
                ctx.log.info("product master %s superseded by %s", older.name, file.name)
            return snapshot
        return None

    def push_orders(self, batch: InstructionBatch, ctx: ConnectorContext) -> None:
        """Write the batch as one order file into the outbox (same name on every retry)."""
        path = write_orders(self._config.outbox, batch, self._config.encoding_out)
        if path is not None:
            ctx.log.info("wrote %d orders of batch %s to %s", len(batch.orders), batch.key, path)

    def push_cancellations(self, batch: CancellationBatch, ctx: ConnectorContext) -> None:
        """Write the batch as one cancellations file into the outbox (same name on every
        retry); the WMS drops those orders (and processes this file before order files)."""
        path = write_cancellations(self._config.outbox, batch, self._config.encoding_out)
        if path is not None:
            ctx.log.info(
                "wrote %d cancellations of batch %s to %s",
                len(batch.cancellations),
                batch.key,
                path,
            )

    def requeue(self, name: str, ctx: ConnectorContext) -> str:
        """Move the fixed file ``rejected/<name>`` back into the inbox; return its new path.

        Its stale ``<name>.errors.txt`` is kept beside as ``<name>.errors.retried-<UTC
        time>.txt``. Raises KeyError for an unknown name, ValueError for a file the inbox
        would never take (wrong name pattern, no final newline).
        """
        stamp = ctx.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self._inbox.requeue(name, stamp)
        ctx.log.info("rejected file %s put back into the inbox as %s", name, target)
        return str(target)

    def _master_seen_as(self, file: ReadyFile) -> bool:
        """True if this exact state of a master file was already read."""
        return self._master_seen is not None and self._master_seen[0] == _signature(file)

    def _read_master(
        self, file: ReadyFile, known_version: str | None, ctx: ConnectorContext
    ) -> ProductSnapshot | None:
        """The snapshot of one master file, or None if it is ``known_version`` or changing."""
        if file.refusal is not None:
            raise BatchRejected(file.name, [RecordError(file.name, file.refusal)])
        signature = _signature(file)
        if self._master_seen is not None and self._master_seen[0] == signature:
            version = self._master_seen[1]
        else:
            version = f"{file.name}:{file.size}:{file.mtime_ns}:{_sha256(file)}"
        if version == known_version:
            self._master_seen = (signature, version)
            return None
        products = read_products(file.path, file.name, file)
        self._refuse_shrinking(file.name, len({p.product_code for p in products}), ctx)
        self._master_seen = (signature, version)
        return ProductSnapshot(version, tuple(products))

    def _refuse_shrinking(self, name: str, count: int, ctx: ConnectorContext) -> None:
        """Reject a master that would drop more than ``products_max_drop_percent`` percent of
        the products in use (a header-only export would make every shipment unknown)."""
        current, limit = ctx.product_count, self._config.products_max_drop_percent
        if current == 0 or limit >= 100 or (current - count) * 100 <= current * limit:
            return
        dropped = (current - count) * 100 // current
        reason = (
            f"holds {count} product(s) where the product master in use holds {current}: "
            f"it would drop {dropped}% of them, more than "
            f"wms.csv.products_max_drop_percent ({limit}%); the master in use is kept. "
            f"If the WMS really dropped them, set products_max_drop_percent: 100 under "
            f"wms.csv in daemon.yaml, run `nebridge inbox retry {name}`, then set it "
            "back"
        )
        ctx.report_problem(
            Problem(
                key=SHRINK_PROBLEM,
                kind="rejected_file",
                reason=f"product master {name} {reason}",
                fix=(
                    f"check the WMS's product export; if {name} is right, set "
                    f"wms.csv.products_max_drop_percent: 100 and run `nebridge inbox retry "
                    f"{name}`"
                ),
                subject=name,
            )
        )
        raise BatchRejected(name, [RecordError(name, reason)])


def _signature(file: ReadyFile) -> _Signature:
    """What identifies one state of a file without reading it."""
    return file.name, file.size, file.mtime_ns


def _sha256(file: ReadyFile) -> str:
    """The content hash of a file, read in chunks (never through a link)."""
    digest = hashlib.sha256()
    with open_claimed(file.path, file.name, file) as stream:
        for chunk in iter(lambda: stream.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()
