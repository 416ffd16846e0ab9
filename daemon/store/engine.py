"""Database engine factory, transactions and migrations.

SQLite (the default) runs in WAL mode with a busy timeout, and every transaction that may
write starts with ``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade.
PostgreSQL (``postgresql+psycopg://…``) runs the same code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

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
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
           f"VALUES ({', '.join(marker for _ in columns)})")
    if skip_conflicts_on is not None:
        sql += f" ON CONFLICT ({quote(skip_conflicts_on)}) DO NOTHING"
    processors = [
        (index, processor) for index, name in enumerate(columns)
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


# Alembic is imported only where it is used: importing it costs the daemon ~11 MB of RSS,
# and a running daemon only needs :func:`check_migrated`, which reads both revisions itself.


def _alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str | None:
    """The latest migration shipped with this version of nebridge."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


class DatabaseNotMigrated(Exception):
    """The database is not at the latest migration."""


def _shipped_head() -> str | None:
    """The head of the migration files read as text, or None unless they form one chain.

    Each file's ``revision = "…"`` and ``down_revision = …`` literals are read with
    :mod:`ast` (never executed); anything else (branches, merges, computed values) is left to
    alembic.
    """
    parents: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        found: dict[str, object] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                    try:
                        found[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        return None
        revision, parent = found.get("revision"), found.get("down_revision")
        if revision is None:
            continue
        if not isinstance(revision, str) or not (parent is None or isinstance(parent, str)):
            return None
        parents[revision] = parent
    heads = set(parents) - set(parents.values())
    return heads.pop() if len(heads) == 1 and len(set(parents.values())) == len(parents) else None


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
    known, current = _stored_revision(engine)
    if not known:
        current = current_revision(engine)
    head = _shipped_head() or head_revision(engine)
    if current != head:
        raise DatabaseNotMigrated(
            f"the database is at migration {current or '(none)'} but this nebridge needs "
            f"{head}; run `nebridge db upgrade`"
        )
