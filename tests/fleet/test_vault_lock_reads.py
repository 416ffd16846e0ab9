"""One Next Engine call's database work in fleet mode (issue #19): the token lock, then the
pair and the lease row in one statement read after the lock was taken — and still the pair a
previous holder stored before it let go, and a lease check made for every call."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text

from daemon.fleet.leases import LeaseKeeper, fleet_engine
from daemon.fleet.vault import TokenVault, load_keys
from daemon.instancelock import FencedTokenStore, InstanceLockLost
from daemon.nextengine.tokens import TokenSet, company_lock
from tests.fleet.test_vault import credentials


@pytest.fixture
def engine(fleet_url: str) -> Iterator[Engine]:
    engine = fleet_engine(fleet_url, lease_seconds=1.0)
    yield engine
    engine.dispose()


def statements(engine: Engine) -> list[str]:
    """Every statement ``engine`` sends from now on (first words, whitespace folded)."""
    seen: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", note)
    return seen


def test_a_call_under_the_lock_reads_pair_and_lease_once_and_checks_the_lease_each_time(
    engine: Engine, tmp_path: Path
) -> None:
    vault = TokenVault(engine, load_keys(credentials(tmp_path / "creds"), env={}))
    vault.save("acme", TokenSet(access_token="a1", refresh_token="r1"))
    keeper = LeaseKeeper(engine, ["acme"], lease_seconds=1.0, worker_id="w1")
    keeper.tick()
    store = FencedTokenStore(vault.store("acme"), fence=lambda: keeper.lost_reason("acme"))
    vault.schema_oid()  # read once per process
    sent = statements(engine)
    with company_lock(store):
        assert store.load().access_token == "a1"  # the lease check, then the pair
    assert len(sent) == 2, sent  # the lock; the pair and the lease row
    assert "set_config" in sent[0] and "pg_try_advisory_xact_lock" in sent[0]
    assert "FROM fleet_token" not in sent[1] and "JOIN fleet_token" in sent[1]
    assert "JOIN fleet_lease" in sent[1]

    # A second check under one lock reads the lease again: each call is checked.
    sent.clear()
    with company_lock(store):
        assert keeper.lost_reason("acme") is None
        assert keeper.lost_reason("acme") is None
    assert sum("FROM fleet_lease" in s for s in sent) == 1

    # Once the lock ended nothing read under it is used: a takeover since is seen.
    time.sleep(1.2)
    other = LeaseKeeper(engine, ["acme"], lease_seconds=1.0, worker_id="w2")
    assert [lease.company for lease in other.tick().acquired] == ["acme"]
    with pytest.raises(InstanceLockLost, match="taken over"):
        store.load()
    with company_lock(store), pytest.raises(InstanceLockLost, match="taken over"):
        store.load()


def test_the_next_holder_reads_the_pair_the_previous_one_stored_before_letting_go(
    engine: Engine, tmp_path: Path
) -> None:
    vault = TokenVault(engine, load_keys(credentials(tmp_path / "creds"), env={}))
    vault.save("acme", TokenSet(access_token="0", refresh_token="r"))
    store = vault.store("acme")
    held, seen = threading.Event(), []

    def first() -> None:
        with vault.company_lock("acme"):
            held.set()
            time.sleep(0.5)  # the second caller waits for the lock meanwhile
            pair = store.load()
            assert pair is not None and pair.access_token == "0"
            store.save(TokenSet(access_token="1", refresh_token="r"))  # NE rotated it
            assert (store.load() or pair).access_token == "1"  # the pair stored now

    def second() -> None:
        held.wait()
        with vault.company_lock("acme"):
            seen.append(store.load())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [pair.access_token if pair else None for pair in seen] == ["1"]
    with engine.connect() as connection:  # no lock left behind
        left = connection.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :space"),
            {"space": vault.schema_oid() & 0x7FFFFFFF},
        ).scalar_one()
    assert left == 0
