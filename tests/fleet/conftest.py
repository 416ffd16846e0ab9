"""Fleet fixtures: a fresh PostgreSQL schema at the latest migration for each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from daemon.store.engine import make_engine, upgrade
from tests.conftest import PG_ENV, PG_SKIP


def schema_url(base: str, schema: str) -> str:
    """``base`` with every session's search_path set to ``schema``."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def fleet_url() -> Iterator[str]:
    """A URL of a new PostgreSQL schema migrated to the head (the fleet tables included)."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    schema = f"nbfleet_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = schema_url(base, schema)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(autouse=True)
def _lease_losses_forgotten() -> Iterator[None]:
    """Each test starts with no lease loss logged: a process warns once per (company,
    epoch), and tests reuse company codes and epochs on their own databases."""
    from daemon.fleet import leases

    with leases._WARNED_GUARD:
        leases._WARNED.clear()
    yield
