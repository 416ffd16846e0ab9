"""A server engine pings a pooled connection only when it rested in the pool a while (#19).

``pool_pre_ping`` cost every transaction of a fleet worker one more round trip to PostgreSQL.
Now a connection used within :data:`~daemon.store.engine.PING_IDLE_SECONDS` is handed out
without a ping; one that rested longer is pinged, and a dead one is replaced before the caller
sees it. A connection lost within that window fails one transaction as a database outage —
rolled back, nothing half-applied — and the next transaction runs on a new connection.
Real PostgreSQL: backends are ended with ``pg_terminate_backend``, a restart is a TCP proxy
cutting every connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from daemon.store.engine import (
    PING_IDLE_SECONDS,
    DatabaseUnavailable,
    database_health,
    make_engine,
    read_session,
    write_session,
)
from tests.conftest import fresh_schema, pg_base
from tests.pgproxy import TcpProxy


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh schema holding one table ``item(v text)``."""
    with fresh_schema("nbping_", 'CREATE TABLE "{schema}".item (v text NOT NULL)') as name:
        yield name


@pytest.fixture
def admin() -> Iterator[Engine]:
    """Another client of the server: it ends the engine's backends."""
    engine = create_engine(pg_base())
    yield engine
    engine.dispose()


def url_for(schema: str, port: int | None = None) -> str:
    url = make_url(pg_base())
    if port is not None:
        url = url.set(host="127.0.0.1", port=port)
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def count_pings(engine: Engine) -> list[int]:
    """How many times the dialect pings a connection of ``engine`` (as the benchmark counts)."""
    pings = [0]
    dialect = engine.dialect
    ping = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings[0] += 1
        return bool(ping(dbapi_connection))

    dialect.do_ping = counted  # type: ignore[method-assign]
    return pings


def insert(engine: Engine, value: str) -> int:
    """Insert ``value`` in one transaction; the backend's pid that did it."""
    with write_session(engine) as session:
        session.execute(text("INSERT INTO item (v) VALUES (:v)"), {"v": value})
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def items(engine: Engine) -> list[str]:
    with read_session(engine) as session:
        return sorted(session.execute(text("SELECT v FROM item")).scalars())


def terminate(admin: Engine, *pids: int) -> None:
    """End the backends ``pids`` and wait until each is gone."""
    with admin.connect() as conn:
        for pid in pids:
            ended = conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
            assert ended.scalar_one() is True


def hold(engine: Engine, n: int) -> list[int]:
    """Check out ``n`` connections at once (the pool keeps them all); their backends' pids."""
    with ExitStack() as stack:
        conns = [stack.enter_context(engine.connect()) for _ in range(n)]
        return [int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in conns]


def test_a_connection_used_a_moment_ago_is_not_pinged(schema: str) -> None:
    engine = make_engine(url_for(schema))
    pings = count_pings(engine)
    try:
        pids = {insert(engine, f"v{i}") for i in range(20)}
        for _ in range(20):
            assert items(engine)
        assert len(pids) == 1  # one connection, reused every time, not a new one each time
        assert pings[0] == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", ["terminated", "restarted"])
def test_connections_ended_while_resting_are_replaced_unseen(
    schema: str, admin: Engine, how: str
) -> None:
    target = make_url(pg_base())
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        engine = make_engine(url_for(schema, proxy.port))
        pings = count_pings(engine)
        try:
            old = hold(engine, 3)
            time.sleep(PING_IDLE_SECONDS + 0.5)  # they rest in the pool
            if how == "terminated":
                terminate(admin, *old)
            else:
                proxy.restart()  # as a server restart: every connection cut

            pid = insert(engine, "after")  # no error reaches the caller
            assert pings[0] >= 1  # the rested connection was pinged, found dead, replaced
            assert pid not in old
            assert set(hold(engine, 3)).isdisjoint(old)  # none of the dead ones handed out
            assert items(engine) == ["after"]
            assert database_health(engine).down_since is None  # not taken for an outage
        finally:
            engine.dispose()


def test_a_connection_lost_just_after_use_fails_one_transaction_as_an_outage(
    schema: str, admin: Engine
) -> None:
    engine = make_engine(url_for(schema))
    pings = count_pings(engine)
    health = database_health(engine)
    now = [time.monotonic()]
    health.monotonic = lambda: now[0]
    try:
        first = insert(engine, "a")
        terminate(admin, first)  # a moment after its use: handed out again without a ping
        with pytest.raises(DatabaseUnavailable, match="lost the connection"):
            insert(engine, "b")
        assert pings[0] == 0
        assert health.down_since is not None  # the outage pauses scheduled work ...
        now[0] += health.first_retry
        assert health.available()  # ... until a probe finds the database again
        second = insert(engine, "c")  # the next transaction works, on a new connection
        assert second != first

        # lost in the middle of a transaction: it is rolled back whole
        with pytest.raises(DatabaseUnavailable), write_session(engine) as session:
            session.execute(text("INSERT INTO item (v) VALUES ('d')"))
            terminate(admin, second)
            session.execute(text("INSERT INTO item (v) VALUES ('e')"))
        now[0] += health.first_retry
        assert health.available()
        assert insert(engine, "f") not in (first, second)
        assert items(engine) == ["a", "c", "f"]  # nothing of the failed ones, nothing twice
    finally:
        engine.dispose()
