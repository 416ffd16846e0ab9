"""Database engine factory, transactions and migrations.

SQLite (the default) runs in WAL mode with a busy timeout, and every transaction that may
write starts with ``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade.
PostgreSQL (``postgresql+psycopg://…``) runs the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_READONLY = "nebridge_readonly"

#: What sessions are opened on: the engine, or (dry runs) one connection whose outer
#: transaction is rolled back at the end, so nothing a dry run does is ever committed.
Bind = Engine | Connection


def make_engine(url: str, *, busy_timeout_ms: int = 30000) -> Engine:
    """Create the engine for ``url``; creates the SQLite file's folder if needed."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
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

    return engine


def _session(bind: Bind) -> Session:
    if isinstance(bind, Connection):  # inside a dry run: savepoints of the outer transaction
        return Session(bind=bind, expire_on_commit=False,
                       join_transaction_mode="create_savepoint")
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


def _alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str | None:
    """The latest migration shipped with this version of nebridge."""
    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(_alembic_config(engine), revision)


class DatabaseNotMigrated(Exception):
    """The database is not at the latest migration."""


def check_migrated(engine: Engine) -> None:
    """Raise :class:`DatabaseNotMigrated` unless the database is at the head revision."""
    current, head = current_revision(engine), head_revision(engine)
    if current != head:
        raise DatabaseNotMigrated(
            f"the database is at migration {current or '(none)'} but this nebridge needs "
            f"{head}; run `nebridge db upgrade`"
        )
