"""order changes: cancellations and edits of instructed orders found by order_watch

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ne_order_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("warehouse", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("ne_last_modified", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("batch", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("reinstruction", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("wms_answer", sa.Text(), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_order_change_order", "order_change", ["ne_order_id", "id"])
    op.create_index("ix_order_change_state", "order_change", ["state", "batch"])


def downgrade() -> None:
    op.drop_index("ix_order_change_state", table_name="order_change")
    op.drop_index("ix_order_change_order", table_name="order_change")
    op.drop_table("order_change")
