"""Fleet fixtures: a fresh PostgreSQL schema at the latest migration for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from daemon.store.engine import make_engine, upgrade
from tests.conftest import fresh_schema, pg_base, schema_url


@pytest.fixture
def fleet_url() -> Iterator[str]:
    """A URL of a new PostgreSQL schema migrated to the head (the fleet tables included)."""
    with fresh_schema("nbfleet_") as schema:
        url = schema_url(pg_base(), schema)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(autouse=True)
def _lease_losses_forgotten() -> Iterator[None]:
    """Each test starts with no lease loss logged: a process warns once per (company,
    epoch), and tests reuse company codes and epochs on their own databases."""
    from daemon.fleet import leases

    with leases._WARNED_GUARD:
        leases._WARNED.clear()
    yield
