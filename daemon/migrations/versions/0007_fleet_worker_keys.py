"""fleet mode: each worker's heartbeat names the vault keys it has loaded (issue #19)

``nebridge companies rotate-key`` refuses while a live worker does not seal with the current
key (it would seal rows with the old one again), so each worker records its current key id and
every key id it can read. PostgreSQL only, as 0006; nothing in a fleet company's own schema.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
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
    # the key this worker seals with, and every key it can read (that one included); NULL: a
    # worker that has loaded no vault key
    op.add_column("fleet_worker", sa.Column("vault_key_id", sa.String(32), nullable=True))
    op.add_column(
        "fleet_worker", sa.Column("vault_key_ids", postgresql.ARRAY(sa.String(32)), nullable=True)
    )


def downgrade() -> None:
    if not _postgres():
        return
    op.drop_column("fleet_worker", "vault_key_ids")
    op.drop_column("fleet_worker", "vault_key_id")
