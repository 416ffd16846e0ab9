"""One working nebridge per state: the daemon and ``run --once`` never work side by side.

Two processes draining the same outbox or importing the same orders could each decide that
the other's half-done work is theirs to finish — the one way to double a stock delta that
the outbox's own bookkeeping cannot rule out. So every process that does work takes this
lock first: a ``flock`` on ``<state_dir>/nebridge.lock`` (SQLite), or a PostgreSQL advisory
lock on the shared database (which also makes a second host a standby). Read-only and admin
commands (status, inbox/outbox list, retry, resolve) do not need it.
"""

from __future__ import annotations

import fcntl
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from daemon.config import DaemonConfig

ADVISORY_PREFIX = 0x6E656272  # "nebr"; the second half of the key comes from the URL


def advisory_key(database_url: str) -> int:
    """The advisory lock of one installation: same URL (and schema) on every host, same key."""
    return (ADVISORY_PREFIX << 32) | zlib.crc32(database_url.encode("utf-8"))


class AlreadyRunning(Exception):
    """Another nebridge process holds the lock; the message says which and what to do."""


@contextmanager
def instance_lock(config: DaemonConfig, engine: Engine) -> Iterator[None]:
    """Hold the instance lock for the block, or raise :class:`AlreadyRunning` at once."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            key = advisory_key(config.resolved_database_url)
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()
            if not got:
                raise AlreadyRunning(
                    "another nebridge process is working on this database (PostgreSQL "
                    "advisory lock held); stop it first (`systemctl stop nebridge`) — a "
                    "second host waits as a standby while the first runs")
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    config.state_dir.mkdir(parents=True, exist_ok=True)
    path = config.state_dir / "nebridge.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise AlreadyRunning(
                f"another nebridge process (pid {holder}) is working on {config.state_dir}; "
                "stop it first (`systemctl stop nebridge`), or let it do the work") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
