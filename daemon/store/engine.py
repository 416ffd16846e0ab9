"""Database engine factory, transactions and migrations.

SQLite (the default) runs in WAL mode with a busy timeout, and every transaction that may
write starts with ``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade.
PostgreSQL (``postgresql+psycopg://…``) runs the same code.

Connection failures (server down, wrong port, missing database, refused sign-in, a missing
driver) surface as one :class:`DatabaseUnavailable` whose message names the host, port and
database and what to do — never the password — so every command and the daemon report them
the same way, and :class:`DatabaseHealth` lets scheduled work pause while the database is away.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DisconnectionError, InvalidatePoolError, OperationalError
from sqlmodel import Session

from daemon.store.reads import MIGRATIONS_DIR
from daemon.store.reads import shipped_head as _shipped_head
from hooks.files import open_private

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

_READONLY = "nebridge_readonly"

#: What sessions are opened on: the engine, or (dry runs) one connection whose outer
#: transaction is rolled back at the end, so nothing a dry run does is ever committed.
Bind = Engine | Connection


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite ``url`` (None for other databases and ``:memory:``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


log = logging.getLogger(__name__)

#: Seconds a PostgreSQL connection attempt may take (unless the URL says ``connect_timeout``).
CONNECT_TIMEOUT_SECONDS = 10
#: A server connection that has rested in the pool at least this long is pinged before it
#: is handed out (one round trip; a dead one is replaced unseen, see
#: :func:`_ping_idle_connections`); one used more recently is handed out as it is. A busy
#: pool — a fleet worker's, or one job's transactions back to back — reuses its connections
#: within a second, so it does not ping at all, while a connection ended during a quiet spell
#: (a server restart, an administrator, an idle timeout) is still replaced without an error.
#: Only a connection lost within this many seconds of its last use fails one transaction as
#: an outage; shorter than the 10 s after which TCP keepalives start (``keepalives_idle``).
PING_IDLE_SECONDS = 5.0
POSTGRES_EXTRA = "pip install 'nebridge[postgres]'"


class DatabaseUnavailable(OperationalError):
    """The database cannot be reached or used now; the message says where and what to do.

    An :class:`~sqlalchemy.exc.OperationalError`, so code that treats those as "the database
    is away, no item is to blame" treats this one alike.
    """

    def __init__(self, message: str) -> None:
        super().__init__(None, None, ConnectionError(message))
        self.message = message

    def __str__(self) -> str:
        return self.message


def describe_database(url: str | URL) -> str:
    """Where ``url`` points, for messages: kind, database, host and port, user — no password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite database {parsed.database or ':memory:'}"
    host = parsed.host or parsed.query.get("host") or "the local socket"
    port = parsed.port or parsed.query.get("port") or 5432
    user = f" as user {parsed.username}" if parsed.username else ""
    return f"PostgreSQL database {parsed.database!r} on {host}:{port}{user}"


def _reason(exc: BaseException, password: str | None) -> str:
    """The driver's own reason in one line, without connection boilerplate or the password."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = lines[0] if lines else type(exc).__name__
    for marker in ("failed: ", "FATAL: "):
        if marker in reason:
            reason = reason.rsplit(marker, 1)[1].strip()
    if password:
        reason = reason.replace(password, "***")
    return reason


def database_unavailable(url: str | URL, exc: BaseException, *, lost: bool = False) -> str:
    """One line for a failed connection to ``url``: where, why, and what to do next."""
    parsed = make_url(url)
    where, why = describe_database(parsed), _reason(exc, parsed.password)
    low = str(exc).lower()
    if parsed.get_backend_name() == "sqlite":
        return (
            f"cannot open the {where}: {why}; check that its folder exists and is "
            "writable by this user (`state_dir`/`database_url` in daemon.yaml)"
        )
    host = parsed.host or parsed.query.get("host") or "localhost"
    port = parsed.port or parsed.query.get("port") or 5432
    user = f" -U {parsed.username}" if parsed.username else ""
    if "role" in low and "does not exist" in low:
        return (
            f"the server of the {where} has no such user; create it (`createuser -h {host} "
            f"-p {port} {parsed.username}`) or fix the user in `database_url`"
        )
    if "database" in low and "does not exist" in low:
        return (
            f"the {where} does not exist; create it (`createdb -h {host} -p {port}{user} "
            f"{parsed.database}`), then run `nebridge db upgrade`"
        )
    if "password" in low or "authentication" in low or "pg_hba" in low:
        return (
            f"the {where} refused the sign-in ({why}); check the user and password in "
            "`database_url` (or ~/.pgpass) and the server's pg_hba.conf"
        )
    if "starting up" in low or "shutting down" in low or "recovery" in low:
        return f"the {where} is not accepting connections yet ({why}); wait and try again"
    verb = "lost the connection to" if lost else "cannot reach"
    return (
        f"{verb} the {where}: {why}; check that the PostgreSQL server is running there "
        f"(`pg_isready -h {host} -p {port}`) and that `database_url` names the right "
        "host, port and database"
    )


def _driver_missing(url: URL, exc: ImportError) -> DatabaseUnavailable:
    driver = url.get_driver_name() or "its driver"
    if url.get_backend_name() == "postgresql" and driver != "psycopg":
        return DatabaseUnavailable(
            f"`database_url` asks for the PostgreSQL driver {driver}, which nebridge does not "
            f"ship ({exc}); nebridge uses psycopg 3: write the URL as "
            "postgresql+psycopg://user@host/db (or postgresql://user@host/db)"
        )
    return DatabaseUnavailable(
        f"`database_url` needs the {url.get_backend_name()} driver ({driver}), which is not "
        f"installed in {sys.prefix} ({exc}); install it with `{POSTGRES_EXTRA}` "
        "(from a checkout: `pip install -e '.[postgres]'`)"
    )


def driver_problem(url: str) -> str | None:
    """Why this Python environment cannot use ``url`` (its driver is missing), or None.

    Read-only: imports the driver, connects nowhere (``config check`` reports it).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return None
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as exc:
        return str(_driver_missing(parsed, exc))
    except Exception:  # an unknown kind of database: the engine itself says so
        return None
    return None


def make_engine(
    url: str,
    *,
    busy_timeout_ms: int = 30000,
    create: bool = True,
    pool_size: int = 5,
    max_overflow: int = 10,
) -> Engine:
    """Create the engine for ``url``; a new SQLite file is created 0600 (folder 0700).

    ``pool_size``/``max_overflow`` bound a server database's connections (SQLAlchemy's
    defaults; a fleet worker sets its own, see :mod:`daemon.fleet.runtime`).

    With ``create=False`` (read-only commands, the daemon) a missing SQLite file is not
    created: :class:`DatabaseNotMigrated` says to run ``nebridge db upgrade``.

    Raises :class:`DatabaseUnavailable` when the driver is not installed; a failed or
    dropped connection raises it later too (see :func:`_convert_connection_errors`).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            # a server that went away is noticed in seconds, not after the kernel's hours
            defaults = {
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "tcp_user_timeout": 20000,
            }
            connect_args = {k: v for k, v in defaults.items() if k not in parsed.query}
        try:
            server = create_engine(
                url,
                connect_args=connect_args,
                pool_size=pool_size,
                max_overflow=max_overflow,
            )
        except ImportError as exc:
            raise _driver_missing(parsed, exc) from None
        _ping_idle_connections(server)
        _convert_connection_errors(server, parsed)
        return server
    database = sqlite_path(url)
    if database is not None and not database.exists():
        if not create:
            raise DatabaseNotMigrated(
                f"there is no database at {database} yet; create it with `nebridge db upgrade`"
            )
        # 0600, the folder's owner when run as root: SQLite gives its -wal and -shm files
        # the same mode and owner
        os.close(open_private(database, os.O_WRONLY))
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get(_READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    _convert_connection_errors(engine, parsed)
    return engine


_HEALTH: weakref.WeakKeyDictionary[Engine, DatabaseHealth] = weakref.WeakKeyDictionary()


class _QuietLostConnections(logging.Filter):
    """Drop the pool's traceback for rolling back a connection the server already dropped:
    the outage is reported once, in one line, by :class:`DatabaseHealth` and the daemon."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            record.getMessage().startswith("Exception during reset")
            and exc is not None
            and "connection" in str(exc).lower()
        )


for _pool in ("QueuePool", "SingletonThreadPool", "NullPool", "StaticPool"):
    logging.getLogger(f"sqlalchemy.pool.impl.{_pool}").addFilter(_QuietLostConnections())


#: ``record.info`` key: when the connection last went back to the pool (``time.monotonic``).
_RETURNED_AT = "nebridge_returned_at"


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection before handing it out only if it rested
    :data:`PING_IDLE_SECONDS` or longer; replace it if it is dead.

    Instead of ``pool_pre_ping``, which costs a round trip on every checkout. A failed ping
    raises :class:`~sqlalchemy.exc.DisconnectionError`: the pool discards the connection
    (and, when it was lost, every pooled connection older than now, as a server restart
    ends them all) and hands out a new one, so the caller sees no error. A new connection is
    not pinged. A connection lost within the last :data:`PING_IDLE_SECONDS` is not caught
    here: its transaction fails as an outage (:class:`DatabaseUnavailable`, rolled back, the
    pool invalidated) and the next one gets a new connection.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_conn: Any, record: Any) -> None:
        if dbapi_conn is not None:
            record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is None or time.monotonic() - returned < PING_IDLE_SECONDS:
            return  # new (never handed out) or used a moment ago
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):
                raise InvalidatePoolError(f"idle connection lost: {exc}") from exc
            raise DisconnectionError(f"idle connection unusable: {exc}") from exc


def _convert_connection_errors(engine: Engine, url: URL) -> None:
    """Raise :class:`DatabaseUnavailable` for a failed connect or a dropped connection.

    Other errors (constraint violations, SQLite's busy database) keep their own type; a
    stale pooled connection found by the ping of :func:`_ping_idle_connections` is replaced
    silently (that ping does not come here; ``is_pre_ping`` covers an engine made with
    ``pool_pre_ping``). A connection lost in use fails its transaction with
    :class:`DatabaseUnavailable`, and SQLAlchemy invalidates the whole pool.
    """
    health = _HEALTH[engine] = DatabaseHealth(lambda: _probe(engine))

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: ExceptionContext) -> None:
        if ctx.is_pre_ping or not (ctx.connection is None or ctx.is_disconnect):
            return
        message = database_unavailable(url, ctx.original_exception, lost=ctx.is_disconnect)
        health.failed(message)
        raise DatabaseUnavailable(message)


def _probe(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def share_health(engine: Engine, like: Engine) -> None:
    """Let ``engine`` — ``like.execution_options(…)``, sharing its pool — pause and resume
    with ``like``'s outages (the connection errors are reported to ``like``'s tracker)."""
    _HEALTH[engine] = database_health(like)


def database_health(engine: Engine) -> DatabaseHealth:
    """The outage tracker of ``engine`` (made by :func:`make_engine`, or made now)."""
    health = _HEALTH.get(engine)
    if health is None:
        health = _HEALTH[engine] = DatabaseHealth(lambda: _probe(engine))
    return health


def human_duration(seconds: float) -> str:
    """``2d 23h``, ``4m 10s``, ``12s``: the two largest units."""
    total = int(seconds)
    parts = [
        (total // 86400, "d"),
        (total % 86400 // 3600, "h"),
        (total % 3600 // 60, "m"),
        (total % 60, "s"),
    ]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return " ".join(shown[:2]) or "0s"


class DatabaseHealth:
    """Whether the database answers; scheduled work asks before it runs.

    A failed connection marks the database down. While it is down, :meth:`available` says no
    without touching the database, except for one probe at a time with an exponential backoff
    (``first_retry`` doubling up to ``max_retry`` seconds). It logs the change of state once:
    down (ERROR, with the reason and what to do), still down every ``still_down_every``
    seconds (WARNING), back up after how long (WARNING). Nothing is lost meanwhile: the WMS
    keeps its events until they are taken, and unfinished work is committed or rolled back.
    """

    def __init__(
        self,
        probe: Callable[[], None],
        *,
        first_retry: float = 1.0,
        max_retry: float = 60.0,
        still_down_every: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe = probe
        self.first_retry, self.max_retry = first_retry, max_retry
        self.still_down_every = still_down_every
        self.monotonic = monotonic
        self._lock = threading.RLock()  # a failing probe reports through failed()
        self.down_since: float | None = None
        self.reason = ""
        self._announced = False
        self._retry = first_retry
        self._next_probe = 0.0
        self._last_report = 0.0

    def failed(self, reason: str) -> None:
        """Record a failed connection (called for every one; logs nothing itself)."""
        with self._lock:
            self.reason = reason
            if self.down_since is None:
                now = self.monotonic()
                self.down_since, self._announced = now, False
                self._retry, self._next_probe = self.first_retry, now + self.first_retry

    def available(self) -> bool:
        """True when work may use the database; while it is down, probe now and then."""
        with self._lock:
            if self.down_since is None:
                return True
            now = self.monotonic()
            if not self._announced:
                self._announced, self._last_report = True, now
                log.error(
                    "database unavailable: %s — nebridge pauses its work and retries "
                    "with backoff (up to every %s); nothing is lost",
                    self.reason,
                    human_duration(self.max_retry),
                )
            if now < self._next_probe:
                return False
            try:
                self.probe()
            except DatabaseUnavailable:
                now = self.monotonic()
                self._retry = min(self._retry * 2, self.max_retry)
                self._next_probe = now + self._retry
                if now - self._last_report >= self.still_down_every:
                    self._last_report = now
                    log.warning(
                        "database still unavailable after %s: %s",
                        human_duration(now - self.down_since),
                        self.reason,
                    )
                return False
            log.warning(
                "database reachable again after %s; work resumes",
                human_duration(self.monotonic() - self.down_since),
            )
            self.down_since, self.reason = None, ""
            return True


#: Where each DB-API parameter style wants a positional value.
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_UNSET = object()


def insert_many(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    skip_conflicts_on: str | None = None,
) -> int:
    """Insert ``rows`` (values in ``columns`` order) with one driver-level ``executemany``.

    Much cheaper per row than an ORM or Core insert of many rows: each column's bind
    processing (e.g. the UTC conversion of :class:`~daemon.store.models.UTCDateTime`) runs
    once per run of equal value objects — the same ``now`` on every row costs one conversion —
    instead of once per row and column. ``skip_conflicts_on`` names a unique column: rows
    whose value already exists are skipped (``ON CONFLICT DO NOTHING``, SQLite and
    PostgreSQL). Returns the number of rows inserted. Runs in the session's transaction.
    """
    if not rows:
        return 0
    connection = session.connection()
    dialect = connection.dialect
    marker = _PLACEHOLDERS.get(dialect.paramstyle)
    if marker is None:
        raise NotImplementedError(f"parameter style {dialect.paramstyle!r} is not supported")
    quote = dialect.identifier_preparer.quote
    # the raw statement is not translated by ``schema_translate_map`` (a fleet company's
    # schema, see daemon.fleet.runtime): name the table's schema here as the map says
    translate = connection.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(table.schema, table.schema)
    name = quote(table.name) if schema is None else f"{quote(schema)}.{quote(table.name)}"
    sql = (
        f"INSERT INTO {name} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(marker for _ in columns)})"
    )
    if skip_conflicts_on is not None:
        sql += f" ON CONFLICT ({quote(skip_conflicts_on)}) DO NOTHING"
    processors = [
        (index, processor)
        for index, name in enumerate(columns)
        if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
        is not None
    ]
    params: Sequence[Sequence[Any]] = rows
    if processors:
        seen: list[tuple[Any, Any]] = [(_UNSET, None)] * len(columns)
        converted = []
        for row in rows:
            values = list(row)
            for index, processor in processors:
                value = values[index]
                last, result = seen[index]
                if value is not last:
                    result = processor(value)
                    seen[index] = (value, result)
                values[index] = result
            converted.append(tuple(values))
        params = converted
    return int(connection.exec_driver_sql(sql, params).rowcount)


def _session(bind: Bind) -> Session:
    if isinstance(bind, Connection):  # inside a dry run: savepoints of the outer transaction
        return Session(bind=bind, expire_on_commit=False, join_transaction_mode="create_savepoint")
    return Session(bind, expire_on_commit=False)


@contextmanager
def write_session(engine: Bind) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any exception."""
    with _session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_session(engine: Bind) -> Iterator[Session]:
    """A session for reading only: on SQLite it does not take the write lock.

    Objects read stay usable after the block (closing detaches without expiring them).
    """
    if isinstance(engine, Connection):
        with _session(engine) as session:
            yield session
        return
    with Session(engine.execution_options(**{_READONLY: True}), expire_on_commit=False) as s:
        yield s


@contextmanager
def rolled_back(engine: Engine) -> Iterator[Connection]:
    """One connection in a transaction that is always rolled back (for dry runs)."""
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()


# Alembic is imported only where it is used: importing it costs the daemon ~11 MB of RSS,
# and a running daemon only needs :func:`check_migrated`, which reads both revisions itself.


def _alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str | None:
    """The latest migration shipped with this version of nebridge (read from the files
    without alembic when they form one chain: importing alembic costs ``status`` ~0.3 s)."""
    shipped = _shipped_head()
    if shipped is not None:
        return shipped
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None for an empty database); read from the version
    table without alembic when it holds at most one row."""
    known, current = _stored_revision(engine)
    if known:
        return current
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


class DatabaseNotMigrated(Exception):
    """The database is not at the latest migration."""


def _stored_revision(engine: Engine) -> tuple[bool, str | None]:
    """``(True, revision)`` read from alembic's version table, ``(False, None)`` if unclear."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return True, None
        rows = list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    return (len(rows) <= 1), (rows[0] if len(rows) == 1 else None)


def check_migrated(engine: Engine) -> None:
    """Raise :class:`DatabaseNotMigrated` unless the database is at the head revision.

    Both revisions are read without alembic when the files form one chain and the version
    table holds at most one row (always, for nebridge's own migrations); otherwise alembic
    answers, as :func:`current_revision` and :func:`head_revision` do.
    """
    current, head = current_revision(engine), head_revision(engine)
    if current != head:
        raise DatabaseNotMigrated(
            f"the database is at migration {current or '(none)'} but this nebridge needs "
            f"{head}; run `nebridge db upgrade`"
        )
