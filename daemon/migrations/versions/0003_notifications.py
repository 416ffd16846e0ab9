"""notifications: messages built from the attention items, their deliveries per sink and the
keys the people were told about

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 12:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _s(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", _s(200), nullable=False),
        sa.Column("kind", _s(32), nullable=False),
        sa.Column("event", _s(16), nullable=False),
        sa.Column("severity", _s(16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("fix", sa.Text(), nullable=False),
        sa.Column("warehouse", _s(32), nullable=False),
        sa.Column("ids", sa.Text(), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notification_key", "notification", ["key"])
    op.create_index("ix_notification_created_at", "notification", ["created_at"])
    op.create_table(
        "notify_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("sink", _s(64), nullable=False),
        sa.Column("delivery_key", _s(100), nullable=False),
        sa.Column("state", _s(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["notification_id"], ["notification.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("delivery_key"),
    )
    op.create_index("ix_notify_delivery_notification_id", "notify_delivery", ["notification_id"])
    op.create_index("ix_notify_delivery_due", "notify_delivery", ["state", "next_attempt_at", "id"])
    op.create_table(
        "notified_key",
        sa.Column("key", _s(200), nullable=False),
        sa.Column("kind", _s(32), nullable=False),
        sa.Column("warehouse", _s(32), nullable=False),
        sa.Column("subject", _s(128), nullable=False),
        sa.Column("state", _s(16), nullable=False),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_notified_key_open", "notified_key", ["state", "last_sent_at"])


def downgrade() -> None:
    op.drop_index("ix_notified_key_open", table_name="notified_key")
    op.drop_table("notified_key")
    op.drop_index("ix_notify_delivery_due", table_name="notify_delivery")
    op.drop_index("ix_notify_delivery_notification_id", table_name="notify_delivery")
    op.drop_table("notify_delivery")
    op.drop_index("ix_notification_created_at", table_name="notification")
    op.drop_index("ix_notification_key", table_name="notification")
    op.drop_table("notification")
