"""fleet mode: worker heartbeats, per-company leases with fencing epochs, the token vault (issue #19)

PostgreSQL only: fleet mode coordinates its workers with PostgreSQL's row locks and clock. On
SQLite this migration creates nothing (a SQLite installation is one company, one process),
nor in a fleet company's own schema (``daemon.fleet.runtime.upgrade_company``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _postgres() -> bool:
    """True on PostgreSQL, except in a company's own schema (the fleet tables are shared)."""
    if context.config.attributes.get("fleet_company"):
        return False
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    if not _postgres():
        return
    op.create_table(
        "fleet_worker",
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("worker_id"),
    )
    op.create_table(
        "fleet_lease",
        sa.Column("company", sa.String(63), nullable=False),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("company"),
    )
    op.create_index("ix_fleet_lease_holder", "fleet_lease", ["holder"])
    op.create_table(
        "fleet_token",
        sa.Column("company", sa.String(63), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("nonce", postgresql.BYTEA(), nullable=False),
        sa.Column("sealed", postgresql.BYTEA(), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("writes", sa.BigInteger(), nullable=False, server_default="1"),
        sa.PrimaryKeyConstraint("company"),
    )


def downgrade() -> None:
    if not _postgres():
        return
    op.drop_table("fleet_token")
    op.drop_index("ix_fleet_lease_holder", table_name="fleet_lease")
    op.drop_table("fleet_lease")
    op.drop_table("fleet_worker")
