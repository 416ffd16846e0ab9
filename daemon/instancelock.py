"""One working nebridge per database: the daemon and ``run --once`` never work side by side.

Two processes draining the same outbox or importing the same orders could each decide that
the other's half-done work is theirs to finish — the one way to double a stock delta that
the outbox's own bookkeeping cannot rule out. So every process that does work takes this
lock first. Read-only and admin commands (status, inbox/outbox list, retry, resolve) do not.

- SQLite: a ``flock`` on ``<database file>.lock`` next to the database file, found through
  its real path (however ``database_url`` spells it; ``<state_dir>/nebridge.lock`` for an
  in-memory database), and a lock keyed on the database file's identity (``st_dev``,
  ``st_ino``), not its name: an open-file-description lock on one byte of the database file
  itself, far beyond the bytes SQLite locks, so a hard link in another directory (another
  name, so another ``.lock`` file) still reaches the same lock. The ``.lock`` file keeps
  the holder's pid, for the refusal message.
- PostgreSQL: a session advisory lock, keyed on what the server says the database is, not on
  how ``database_url`` spells it: advisory locks belong to one database of one server, and
  the key is the oid of the schema nebridge's tables live in, so ``…@127.0.0.1/db`` and
  ``…@localhost:5432/db`` (or another host reaching the same server) share one lock, while
  two installations in two schemas of one database do not. A second process waits as a
  standby (the daemon) or is refused (``run --once``).

The PostgreSQL lock lives as long as its connection. A watcher thread notices at once when
that connection drops (the socket becomes readable on a close) and checks every few seconds
that the lock is still held; when it is lost, ``on_lost`` runs and :meth:`InstanceLock.lost`
gives the reason. Every Next Engine call loads the token pair through a
:class:`FencedTokenStore`, which refuses while the lock is lost, so no call is sent after the
loss is noticed; the daemon stops its work, takes the lock again and resumes, and
``run --once`` exits (code 75) for its caller to run it again.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from daemon.config import DaemonConfig
from daemon.fleet.leases import LeaseLost
from daemon.nextengine.errors import NextEngineError
from daemon.nextengine.tokens import SharedTokenStore, TokenSet, TokenStore, store_lock_key
from daemon.store.engine import DatabaseUnavailable, database_unavailable, describe_database
from hooks.files import make_private_folder, open_private

log = logging.getLogger(__name__)

ADVISORY_PREFIX = 0x6E656272  # "nebr"; the low 32 bits are the schema's oid
#: Seconds between two checks that the PostgreSQL lock is still held (a dropped connection
#: is noticed at once: its socket turns readable).
CHECK_SECONDS = 2.0
#: Exit status of a process that lost its lock and cannot take it again (EX_TEMPFAIL).
EXIT_LOCK_LOST = 75
#: The byte of the SQLite database file whose lock is the instance lock by file identity:
#: far past anything SQLite locks (its lock bytes sit at 1 GiB) or a file could hold.
IDENTITY_BYTE = 1 << 62


def advisory_key(schema_oid: int) -> int:
    """The advisory lock of the installation whose tables live in the schema ``schema_oid``."""
    return (ADVISORY_PREFIX << 32) | (schema_oid & 0xFFFFFFFF)


class AlreadyRunning(Exception):
    """Another nebridge process holds the lock; the message says which and what to do."""


class InstanceLockLost(NextEngineError):
    """No Next Engine call is sent: this process lost its instance lock (nothing was sent)."""

    next_step = "Nothing reached Next Engine; the call is made again once the lock is held."

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(
            "", f"no Next Engine call while the instance lock is lost ({reason})", path=path
        )


class NoTokensOnThisHost(NextEngineError):
    """This host has no token pair: nothing is sent, and the shared link is left as it is.

    With a shared database the link state belongs to every host, the token file to one; a
    host that took over without the file must not mark the link for re-connection.
    """

    next_step = (
        "Run `nebridge connect` on this host, or give it the token file of the host "
        "that signed in (`token_file`)."
    )


class WmsWriteFenced(LeaseLost):
    """A write into the company's WMS (an order file, a file filed away or rejected with its
    error report, a cancellation) is skipped: this process no longer holds the company — a
    fleet worker lost its lease, a daemon its instance lock. File writes cannot join the
    fenced database transaction, so the fence is checked right before each one.

    A :class:`~daemon.fleet.leases.LeaseLost`, so every job runner treats it as one: the work
    stops without blaming the file, and the process that holds the company does it.
    """

    def __init__(self, company: str, what: str, reason: str) -> None:
        super().__init__(company, 0, reason)
        self.message = (
            f"{what}: not done — this process no longer holds the company ({reason}); the "
            "process that holds it now does it"
        )

    def warn(self, logger: logging.Logger) -> None:
        """One WARNING line for each write skipped (each is a distinct thing not done), once
        per process however many jobs skip it."""
        with _SKIPPED_GUARD:
            if self.message in _SKIPPED:
                return
            if len(_SKIPPED) >= 1000:  # a long-lived process: bounded, older ones may repeat
                _SKIPPED.clear()
            _SKIPPED.add(self.message)
        logger.warning("%s", self.message)


_SKIPPED: set[str] = set()
_SKIPPED_GUARD = threading.Lock()


def check_wms_write(fence: Callable[[], str | None], company: str, what: str) -> None:
    """Raise :class:`WmsWriteFenced` if ``fence()`` says this process may no longer act for
    the company; call it right before writing into the company's WMS."""
    reason = fence()
    if reason is not None:
        raise WmsWriteFenced(company, what, reason)


@dataclass(frozen=True)
class DatabaseIdentity:
    """What the server says a connection reached (the same for every spelling of the URL)."""

    system_identifier: str
    database: str
    database_oid: int
    schema: str
    schema_oid: int

    def __str__(self) -> str:
        return (
            f"database {self.database!r} (oid {self.database_oid}) schema {self.schema!r} "
            f"of PostgreSQL system {self.system_identifier}"
        )


def _exit_on_loss(reason: str) -> None:
    """``run --once``: end the process at once (its caller runs it again later)."""
    log.critical(
        "exiting (status %d) so that nothing is done without the instance lock: %s",
        EXIT_LOCK_LOST,
        reason,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_LOCK_LOST)


class InstanceLock:
    """The instance lock of one configuration; :meth:`try_acquire` may be called again after
    a loss. ``on_lost(reason)`` runs on the watcher thread when a held lock is lost."""

    def __init__(
        self,
        config: DaemonConfig,
        engine: Engine,
        *,
        on_lost: Callable[[str], None] = _exit_on_loss,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.config = config
        self.engine = engine
        self.on_lost = on_lost
        self.check_seconds = check_seconds
        self.postgres = engine.dialect.name == "postgresql"
        self.identity: DatabaseIdentity | None = None
        self._raw: Any = None  # the pool's proxy of the lock's own connection (PostgreSQL)
        self._fd: int | None = None  # the flock's file (SQLite)
        self._identity_fd: int | None = None  # the database file, locked by identity
        self._other_name = False  # refused: held through another name of the file
        self._key = 0
        self._lost: str | None = None
        self._held = False
        self._watcher: threading.Thread | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._state = threading.Lock()

    # -- state --------------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """True while this process holds the lock."""
        return self._held and self._lost is None

    def lost(self) -> str | None:
        """Why the lock held by this process was lost, or None (the fence of NE calls)."""
        return self._lost

    def can_wait(self) -> bool:
        """Whether a second process may wait for the lock (PostgreSQL: another host)."""
        return self.postgres

    # -- acquire / release --------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if another process holds it.

        Raises :class:`~daemon.store.engine.DatabaseUnavailable` when PostgreSQL cannot be
        reached. After a loss, the old connection is dropped and a new one tries.
        """
        if self._held and self._lost is None:
            return True
        self._drop()
        return self._acquire_postgres() if self.postgres else self._acquire_file()

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        self._drop(unlock=True)

    def refusal(self) -> str:
        """Why a second process cannot start now, and what to do."""
        if self._other_name:
            return (
                f"another nebridge process is working on the database file "
                f"{self.engine.url.database}, reached through another name (a hard "
                "link); stop it first (`systemctl stop nebridge`), and give every "
                "installation its own database file"
            )
        if not self.postgres:
            holder = "?"
            with suppress(OSError):
                holder = self.lock_file().read_text().strip() or "?"
            return (
                f"another nebridge process (pid {holder}) is working on "
                f"{describe_database(self.engine.url)}; stop it first "
                "(`systemctl stop nebridge`), or let it do the work"
            )
        return (
            f"another nebridge process is working on this database ({self.holder()}); "
            "stop it first (`systemctl stop nebridge` on that host) — a second daemon "
            "waits as a standby while the first runs"
        )

    def holder(self) -> str:
        """Who holds the PostgreSQL lock, as far as the server shows it."""
        query = (
            "SELECT a.application_name, host(a.client_addr), a.pid, a.backend_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) AND l.classid = %s AND l.objid = %s"
        )
        try:
            rows = self._query(query, (self._key >> 32, self._key & 0xFFFFFFFF))
        except Exception:  # only a description: the lock itself is what matters
            rows = []
        if not rows:
            return f"{self._where()}: holder not visible to this user"
        name, addr, pid, since = rows[0]
        who = name or "a nebridge process"
        return (
            f"{self._where()}: held by {who} (server pid {pid}, from "
            f"{addr or 'a local socket'}, since {since:%Y-%m-%d %H:%M:%S%z})"
        )

    def _where(self) -> str:
        return str(self.identity) if self.identity else describe_database(self.engine.url)

    def lock_file(self) -> Path:
        """SQLite: the lock file of the database file (its real path, plus ``.lock``)."""
        database = self.engine.url.database
        if not database or database == ":memory:":
            return self.config.state_dir / "nebridge.lock"
        real = Path(database).resolve()
        return real.with_name(real.name + ".lock")

    def _acquire_file(self) -> bool:
        self._other_name = False
        make_private_folder(self.config.state_dir)  # holds secrets
        fd = open_private(self.lock_file())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            identity = self._lock_identity()
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._other_name = True
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._identity_fd, self._held, self._lost = fd, identity, True, None
        return True

    def _lock_identity(self) -> int | None:
        """Lock the database file itself (its inode, whatever name reached it): the fd that
        holds the lock, or None if there is nothing to lock (no file yet, in memory).
        Raises :class:`BlockingIOError` if another process holds it — through another name:
        through this one, the ``.lock`` file would have refused first.

        An open-file-description lock (``F_OFD_SETLK``) on :data:`IDENTITY_BYTE`: unlike a
        ``flock`` or a process lock it never meets SQLite's own locks, and closing SQLite's
        descriptors of the file does not drop it.
        """
        database = self.engine.url.database
        ofd_setlk = getattr(fcntl, "F_OFD_SETLK", None)
        if not database or database == ":memory:" or ofd_setlk is None:
            return None
        try:
            fd = os.open(Path(database).resolve(), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # created by the first connection; no other name can reach it yet
        request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, IDENTITY_BYTE, 1, 0)
        try:
            fcntl.fcntl(fd, ofd_setlk, request)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise BlockingIOError(exc.errno, "held through another name") from None
            raise
        return fd

    def _acquire_postgres(self) -> bool:
        try:
            raw = self.engine.raw_connection()
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # the pool's own connect does not pass the engine's hook
            raise DatabaseUnavailable(database_unavailable(self.engine.url, exc)) from None
        try:
            raw.detach()  # the lock's own connection: never handed to anyone else
            conn: Any = raw.dbapi_connection
            conn.rollback()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT set_config('application_name', %s, false)",
                    (f"nebridge@{socket.gethostname()} pid {os.getpid()}"[:63],),
                )
            self._raw = raw
            self.identity = self._identify()
            self._key = advisory_key(self.identity.schema_oid)
            got = self._query("SELECT pg_try_advisory_lock(%s)", (self._key,))[0][0]
        except BaseException:
            self._raw = None
            raw.invalidate()
            raise
        if not got:
            return False
        self._held, self._lost = True, None
        self._start_watcher()
        log.info("instance lock taken on %s", self.identity)
        return True

    def _identify(self) -> DatabaseIdentity:
        db, db_oid, schema, schema_oid = self._query(
            "SELECT current_database(), d.oid, current_schema(), "
            "(SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema()) "
            "FROM pg_database d WHERE d.datname = current_database()"
        )[0]
        try:
            system = str(self._query("SELECT system_identifier FROM pg_control_system()")[0][0])
        except Exception:  # not granted to every user; the lock does not need it
            system = "?"
        return DatabaseIdentity(system, db, int(db_oid), schema or "", int(schema_oid or 0))

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._state:
            if self._raw is None:
                raise RuntimeError("the instance lock has no connection")
            with self._raw.dbapi_connection.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())

    def _drop(self, unlock: bool = False) -> None:
        """Stop the watcher and close the lock's connection or file."""
        watcher, self._watcher = self._watcher, None
        if self._wakeup is not None:
            self._wakeup[1].send(b"x")
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()
        if self._wakeup is not None:
            for end in self._wakeup:
                end.close()
            self._wakeup = None
        if self._raw is not None:
            if unlock and self._held and self._lost is None:
                with suppress(Exception):  # else the session's end next releases it
                    self._query("SELECT pg_advisory_unlock(%s)", (self._key,))
            raw, self._raw = self._raw, None
            with suppress(Exception):  # a connection that is already gone
                raw.close()
        if self._identity_fd is not None:
            os.close(self._identity_fd)  # the lock goes with its open file description
            self._identity_fd = None
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        self._held = False

    # -- watching -----------------------------------------------------------------------------

    def _start_watcher(self) -> None:
        self._wakeup = socket.socketpair()
        self._watcher = threading.Thread(target=self._watch, name="instance-lock", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        assert self._wakeup is not None and self._raw is not None
        stop = self._wakeup[0]
        fd = self._raw.dbapi_connection.fileno()
        while True:
            try:
                ready, _, _ = select.select([fd, stop], [], [], self.check_seconds)
            except (OSError, ValueError):
                ready = [fd]
            if stop in ready:
                return
            reason = self._check()
            if reason is not None:
                self._lose(reason)
                return

    def _check(self) -> str | None:
        """None while the lock is still held, else why not."""
        try:
            rows = self._query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND objsubid = 1 AND classid = %s AND objid = %s",
                (self._key >> 32, self._key & 0xFFFFFFFF),
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"its connection to {self._where()} dropped ({first})"
        return None if rows and rows[0][0] else f"the server no longer shows it ({self._where()})"

    def _lose(self, reason: str) -> None:
        self._lost = reason
        log.error(
            "lost the instance lock: %s; all work stops now and no Next Engine call is "
            "sent until the lock is taken again",
            reason,
        )
        self.on_lost(reason)


@contextmanager
def instance_lock(
    config: DaemonConfig,
    engine: Engine,
    *,
    on_lost: Callable[[str], None] = _exit_on_loss,
) -> Iterator[InstanceLock]:
    """Hold the instance lock for the block, or raise :class:`AlreadyRunning` at once.

    Losing a PostgreSQL lock inside the block runs ``on_lost`` (by default: exit with
    status 75, which is what ``run --once`` wants).
    """
    lock = InstanceLock(config, engine, on_lost=on_lost)
    if not lock.try_acquire():
        message = lock.refusal()
        lock.release()
        raise AlreadyRunning(message)
    try:
        yield lock
    finally:
        lock.release()


class FencedTokenStore:
    """A token store that hands no token out while ``fence()`` gives a reason.

    Every Next Engine call loads the token pair right before it is sent, so this is the one
    place that sees every call: while the instance lock is lost, each call fails with
    :class:`InstanceLockLost` (nothing sent) and the work is done again later. A host without
    a token pair fails with :class:`NoTokensOnThisHost` rather than marking the shared link
    for re-connection. Saving a rotated pair still works, so an answer already received is
    never lost.
    """

    def __init__(self, inner: TokenStore, fence: Callable[[], str | None]) -> None:
        self.inner = inner
        self.fence = fence
        # Decided once: a runtime protocol check costs microseconds on every NE call.
        self._lock_key = store_lock_key(inner)
        self._shared_inner = inner if isinstance(inner, SharedTokenStore) else None

    def __repr__(self) -> str:
        return f"FencedTokenStore({self.inner!r})"

    @property
    def lock_key(self) -> str:
        """The wrapped store's identity (the same locks as the store itself)."""
        return self._lock_key

    def process_lock(self) -> AbstractContextManager[None]:
        """The wrapped store's cross-process lock, if it has one."""
        if self._shared_inner is not None:
            return self._shared_inner.process_lock()
        return nullcontext()

    def load(self) -> TokenSet:
        """The pair, unless the fence is up or this host has none."""
        reason = self.fence()
        if reason is not None:
            raise InstanceLockLost(reason)
        tokens = self.inner.load()
        if tokens is None:
            raise NoTokensOnThisHost(
                "", f"this host has no Next Engine token pair ({self.inner!r} is empty or missing)"
            )
        return tokens

    def save(self, tokens: TokenSet) -> None:
        """Keep a rotated pair (always: NE already rotated it)."""
        self.inner.save(tokens)
