"""stock snapshots: each warehouse's absolute stock as the WMS counted it (issue #16)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _s(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "stock_snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("warehouse", _s(32), nullable=False),
        sa.Column("source", _s(512), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("products", sa.Integer(), nullable=False),
        sa.Column("quantities", sa.Text(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stock_snapshot_latest", "stock_snapshot", ["warehouse", "counted_at"])


def downgrade() -> None:
    op.drop_index("ix_stock_snapshot_latest", table_name="stock_snapshot")
    op.drop_table("stock_snapshot")
