"""SQLModel tables of nebridge.

Every table change needs an Alembic migration in ``daemon/migrations/versions``; the daemon
refuses to start on a database that is not at the latest revision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, DateTime, Dialect, Index, Text, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite itself keeps no time zone).

    Values are stored in UTC and always read back timezone-aware; naive values are refused,
    since guessing their zone would shift times by hours.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware, got {value!r}")
        utc: datetime = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class EventState(StrEnum):
    """Life of a WMS event in the durable inbox."""

    PENDING = "pending"  # accepted, not yet seen by the plugins
    PROCESSED = "processed"  # plugins decided; their actions are in the outbox
    HELD = "held"  # a plugin failed or data is missing; waits for the admin or a retry


class OutboxState(StrEnum):
    """Life of a Next Engine action in the outbox."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    FAILED = "failed"  # Next Engine refused it for good; shown to the admin
    IN_DOUBT = "in_doubt"  # the outcome could not be known; never resent blindly
    SKIPPED = "skipped"  # not needed any more (e.g. order cancelled in Next Engine)


class BatchState(StrEnum):
    """What became of an inbound batch (``inbox_batch.state``)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REQUEUED = "requeued"  # a rejected batch the admin put back (``nebridge inbox retry``)


class ImportState(StrEnum):
    """Where a Next Engine order stands in nebridge (``imported_order.state``)."""

    INSTRUCTED = "instructed"  # sent to the WMS
    HELD = "held"  # not sent; ``hold_reason`` says why
    RETRY = "retry"  # to be read again at the next import
    DROPPED = "dropped"  # no longer to be imported
    CANCELLED = "cancelled"  # cancelled in Next Engine after it was sent to the WMS
    REINSTRUCT = "reinstruct"  # edited in Next Engine after it was sent; to be sent again


class UploadState(StrEnum):
    """Life of one aggregated stock upload (``stock_upload.state``)."""

    PREPARED = "prepared"  # items claimed, not yet sent (or the answer was lost)
    QUEUED = "queued"  # Next Engine gave a queue id
    DONE = "done"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"  # neither the upload nor its absence could be established


class InstructionState(StrEnum):
    """An instruction batch handed to the WMS connector (``instruction_batch.state``)."""

    PENDING = "pending"  # recorded before the push; pushed again after a crash
    PUSHED = "pushed"


class LinkState(StrEnum):
    """The Next Engine link (``ne_link.state``)."""

    CONNECTED = "connected"
    NEEDS_RECONNECT = "needs_reconnect"


class ChangeState(StrEnum):
    """What the WMS was told of a change found in Next Engine (``order_change.state``)."""

    PENDING = "pending"
    SENT = "sent"
    REFUSED = "refused"
    MANUAL = "manual"


class InboxEvent(SQLModel, table=True):
    """A shipment or receipt confirmed in the WMS, stored once per kind and external id."""

    __tablename__ = "inbox_event"
    __table_args__ = (
        UniqueConstraint("kind", "external_id", name="uq_inbox_event_kind_external_id"),
        Index("ix_inbox_event_pick", "state", "warehouse", "kind", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    external_id: str = Field(max_length=128)
    warehouse: str = Field(max_length=32)
    content_hash: str = Field(max_length=64)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(max_length=512)
    state: str = Field(default=EventState.PENDING, max_length=16)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    processed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class InboxBatch(SQLModel, table=True):
    """One inbound batch (a file, an API page) and what became of it."""

    __tablename__ = "inbox_batch"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=512, index=True)
    kind: str = Field(max_length=16)
    state: str = Field(max_length=16)  # BatchState
    events: int = 0
    duplicates: int = 0
    errors: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))


class OutboxItem(SQLModel, table=True):
    """A Next Engine action decided by a plugin, executed by the dispatcher.

    ``idempotency_key`` is deterministic (e.g. ``ship:<order id>``), so deciding the same
    thing twice cannot create a second row.
    """

    __tablename__ = "outbox_item"
    __table_args__ = (Index("ix_outbox_item_due", "state", "next_attempt_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=32)
    warehouse: str = Field(max_length=32, index=True)
    plugin: str = Field(max_length=64)
    subject: str = Field(max_length=128, index=True)
    event_id: int | None = Field(default=None, foreign_key="inbox_event.id", index=True)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(default=OutboxState.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    result: str | None = Field(default=None, sa_column=Column(Text))
    dispatch_ref: str | None = Field(default=None, max_length=64, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Cursor(SQLModel, table=True):
    """A named watermark (e.g. last order search time), advanced with the data it covers."""

    __tablename__ = "cursor"

    name: str = Field(primary_key=True, max_length=128)
    value: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ImportedOrder(SQLModel, table=True):
    """A Next Engine order and the warehouse it was imported into (or why it is held)."""

    __tablename__ = "imported_order"

    ne_order_id: str = Field(primary_key=True, max_length=32)
    warehouse: str = Field(max_length=32, index=True)
    state: str = Field(max_length=16, index=True)  # ImportState
    hold_reason: str | None = Field(default=None, sa_column=Column(Text))
    instruction_batch: str | None = Field(default=None, max_length=128)
    ne_last_modified: str | None = Field(default=None, max_length=32)
    payload: str | None = Field(default=None, sa_column=Column(Text))
    imported_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class WmsProduct(SQLModel, table=True):
    """The WMS product master as last read from the connector."""

    __tablename__ = "wms_product"

    product_code: str = Field(primary_key=True, max_length=128)
    link_code: str | None = Field(default=None, max_length=128, index=True)
    version: str = Field(max_length=200)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class RunRecord(SQLModel, table=True):
    """One execution of a stage for a warehouse, or one plugin failure inside it."""

    __tablename__ = "run_record"
    __table_args__ = (Index("ix_run_record_latest", "warehouse", "stage", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=36, index=True)
    warehouse: str = Field(max_length=32)
    stage: str = Field(max_length=32)
    plugin: str = Field(default="", max_length=64)
    item: str = Field(default="", max_length=200)
    outcome: str = Field(max_length=16)  # ok | failed | held | skipped
    items_in: int = 0
    items_out: int = 0
    detail: str | None = Field(default=None, sa_column=Column(Text))
    started_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    finished_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class StockUpload(SQLModel, table=True):
    """One aggregated stock-delta upload to Next Engine and where it stands.

    ``state``: prepared (items claimed, not yet sent) → queued (Next Engine gave a queue id) →
    done / failed; or in_doubt when neither the upload nor its absence could be established.
    """

    __tablename__ = "stock_upload"

    ref: str = Field(primary_key=True, max_length=64)
    state: str = Field(max_length=16, index=True)  # UploadState
    deltas: str = Field(sa_column=Column(Text, nullable=False))
    que_id: str | None = Field(default=None, max_length=32)
    message: str | None = Field(default=None, sa_column=Column(Text))
    prepared_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    finished_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class InstructionBatchRecord(SQLModel, table=True):
    """Order instructions handed to the WMS connector, recorded before the push."""

    __tablename__ = "instruction_batch"

    key: str = Field(primary_key=True, max_length=128)
    warehouse: str = Field(max_length=32)
    state: str = Field(max_length=16, index=True)  # InstructionState
    orders: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    pushed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class NeLink(SQLModel, table=True):
    """The Next Engine company this installation is linked to, and the link's state.

    Tokens themselves live in the token file (mode 0600), never in the database.
    """

    __tablename__ = "ne_link"

    id: int = Field(default=1, primary_key=True)
    state: str = Field(max_length=24)  # LinkState
    company_id: str = Field(default="", max_length=64)
    company_name: str = Field(default="", max_length=200)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    connected_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ProblemState(StrEnum):
    """Life of a stored attention problem."""

    OPEN = "open"
    RESOLVED = "resolved"


class AttentionProblem(SQLModel, table=True):
    """A problem that needs a person and has no other home in the store.

    Held events, failed actions and held orders are read from their own tables; this table
    holds what connectors and engine stages report through :func:`daemon.attention.report`
    (a Logikura schedule renumbered by staff, a file that cannot be taken, a paused stage…).
    ``key`` is stable while the problem lasts, so reporting it again only refreshes it.
    """

    __tablename__ = "attention_problem"
    __table_args__ = (Index("ix_attention_problem_open", "state", "last_seen"),)

    key: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=32)
    severity: str = Field(default="error", max_length=16)
    warehouse: str = Field(default="", max_length=32)
    subject: str = Field(default="", max_length=128)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    fix: str = Field(sa_column=Column(Text, nullable=False))
    source: str = Field(default="", max_length=64)
    state: str = Field(default=ProblemState.OPEN, max_length=16)
    occurrences: int = 1
    first_seen: datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_seen: datetime = Field(default_factory=utcnow, sa_column=_ts())
    resolved_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class DeliveryState(StrEnum):
    """Life of one notification at one sink."""

    PENDING = "pending"  # waits for its (next) attempt
    IN_FLIGHT = "in_flight"  # handed to the sink; sent again after a crash (same delivery key)
    SENT = "sent"
    FAILED = "failed"  # a test message that failed (never retried)


class NotificationRow(SQLModel, table=True):
    """One message built from the attention items (see :mod:`daemon.notify`)."""

    __tablename__ = "notification"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=200, index=True)
    kind: str = Field(max_length=32)
    event: str = Field(max_length=16)  # open | reminder | resolved | digest | test
    severity: str = Field(max_length=16)
    title: str = Field(sa_column=Column(Text, nullable=False))
    detail: str = Field(sa_column=Column(Text, nullable=False))
    fix: str = Field(sa_column=Column(Text, nullable=False))
    warehouse: str = Field(default="", max_length=32)
    ids: str = Field(sa_column=Column(Text, nullable=False))  # JSON list
    lines: str = Field(sa_column=Column(Text, nullable=False))  # JSON list (digests)
    count: int = 1
    since: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))


class NotifyDelivery(SQLModel, table=True):
    """One notification × one sink (a ``nebridge_notify`` plugin); sent once, retried with
    backoff until it is. ``delivery_key`` (``<notification id>:<sink>``) is unique."""

    __tablename__ = "notify_delivery"
    __table_args__ = (Index("ix_notify_delivery_due", "state", "next_attempt_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    notification_id: int = Field(foreign_key="notification.id", index=True)
    sink: str = Field(max_length=64)
    delivery_key: str = Field(max_length=100, unique=True)
    state: str = Field(default=DeliveryState.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    sent_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class NotifiedKey(SQLModel, table=True):
    """An attention key the people were told about, while it lasts (for reminders and the
    resolved message); the notifier diffs the current attention keys against these rows."""

    __tablename__ = "notified_key"
    __table_args__ = (Index("ix_notified_key_open", "state", "last_sent_at"),)

    key: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=32)
    warehouse: str = Field(default="", max_length=32)
    subject: str = Field(default="", max_length=128)
    state: str = Field(default=ProblemState.OPEN, max_length=16)
    reminders: int = 0
    opened_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_sent_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    resolved_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class OrderChange(SQLModel, table=True):
    """A change ``order_watch`` found in Next Engine on an order nebridge instructed.

    ``kind``: cancelled | edited | deleted. ``state``: ``pending`` (recorded, the WMS not
    told yet: delivered again under ``batch`` after a crash), ``sent`` (the WMS dropped the
    order), ``refused`` (the WMS could not drop it: picking started; a person must stop it),
    ``manual`` (the connector cannot cancel: a person must). ``reinstruction`` is the
    instruction batch carrying an edited order's new content.
    """

    __tablename__ = "order_change"
    __table_args__ = (
        Index("ix_order_change_order", "ne_order_id", "id"),
        Index("ix_order_change_state", "state", "batch"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ne_order_id: str = Field(max_length=32)
    warehouse: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False))
    ne_last_modified: str | None = Field(default=None, max_length=32)
    state: str = Field(default=ChangeState.PENDING, max_length=16)
    batch: str = Field(max_length=128)
    reinstruction: str | None = Field(default=None, max_length=128)
    wms_answer: str | None = Field(default=None, sa_column=Column(Text))
    detected_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    sent_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class StockSnapshotRecord(SQLModel, table=True):
    """One warehouse's absolute stock at ``counted_at``, as the WMS connector delivered it.

    ``quantities`` is JSON ``{product code: on-hand quantity}``; one row per warehouse per
    snapshot keeps a 100,000-product count to one insert. The newest ``counted_at`` of each
    warehouse is what ``nebridge stock diff`` compares with Next Engine.
    """

    __tablename__ = "stock_snapshot"
    __table_args__ = (Index("ix_stock_snapshot_latest", "warehouse", "counted_at"),)

    id: int | None = Field(default=None, primary_key=True)
    warehouse: str = Field(max_length=32)
    source: str = Field(max_length=512)
    counted_at: datetime = Field(sa_column=_ts())
    products: int = 0
    quantities: str = Field(sa_column=Column(Text, nullable=False))
    taken_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
