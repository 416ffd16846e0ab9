"""Reading the store without SQLAlchemy, for commands that only show a few figures (#18).

Importing SQLAlchemy, SQLModel and the table models costs a command about half a second
before its first query; ``nebridge status`` opens a :class:`Reader` instead. On the default
SQLite file (``sqlite:///PATH``) that is the standard library's :mod:`sqlite3` in one read
transaction, which never takes the write lock; on any other database (PostgreSQL, a SQLite
URL with options) a connection of :func:`~daemon.store.engine.make_engine`, imported only
then, so its error messages and connection settings stay the same. Statements are plain SQL
with ``?`` for each value (turned into the driver's own marker).

Also here: the newest migration shipped with this version, read from the migration files
without alembic (and without SQLAlchemy).
"""

from __future__ import annotations

import ast
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_PLAIN_SQLITE = "sqlite:///"

Row = tuple[Any, ...]


class StoreUnreadable(Exception):
    """The SQLite file cannot be read (missing, unreadable); the message says what to do."""


class Reader:
    """Runs read-only statements in one transaction and returns their rows as tuples."""

    def __init__(
        self, url: str, run: Callable[[str, Sequence[Any]], list[Row]], engine: Engine | None
    ) -> None:
        self.url = url
        self._run = run
        #: The SQLAlchemy engine behind this reader (None: sqlite3 itself).
        self.engine = engine

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of ``sql`` with ``params`` bound to its ``?`` markers."""
        return self._run(sql, params)


def sqlite_file(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL (no options, nothing escaped), else None."""
    if not url.startswith(_PLAIN_SQLITE) or any(c in url for c in "?%#"):
        return None
    path = url.removeprefix(_PLAIN_SQLITE)
    return Path(path) if path not in ("", ":memory:") else None


@contextmanager
def open_reader(url: str) -> Iterator[Reader]:
    """A :class:`Reader` on the database of ``url``, closed at the end of the block.

    A missing or unreadable SQLite file raises :class:`StoreUnreadable`; other databases
    raise what :func:`~daemon.store.engine.make_engine` raises (``DatabaseUnavailable``,
    ``DatabaseNotMigrated``).
    """
    path = sqlite_file(url)
    if path is None:
        with _engine_reader(url) as reader:
            yield reader
        return
    if not path.exists():
        raise StoreUnreadable(
            f"there is no database at {path} yet; create it with `nebridge db upgrade`"
        )
    try:
        # mode=rw: never create the file; isolation_level=None: the BEGIN below is ours
        conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode=rw", uri=True, timeout=30, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from None

    def run(sql: str, params: Sequence[Any]) -> list[Row]:
        try:
            return [tuple(row) for row in conn.execute(sql, tuple(params))]
        except sqlite3.Error as exc:
            raise _unreadable(path, exc) from None

    try:
        run("BEGIN", ())  # deferred: one snapshot for every read, no write lock
        yield Reader(url, run, None)
    finally:
        conn.close()  # ends the read transaction


def _unreadable(path: Path, exc: sqlite3.Error) -> StoreUnreadable:
    return StoreUnreadable(
        f"cannot read the SQLite database {path}: {exc}; check that the file and its folder "
        "exist and are readable and writable by this user (`state_dir`/`database_url` in "
        "daemon.yaml)"
    )


@contextmanager
def _engine_reader(url: str) -> Iterator[Reader]:
    """A reader on a connection of :func:`~daemon.store.engine.make_engine` (read-only on
    SQLite, as :func:`~daemon.store.engine.read_session`)."""
    from daemon.store.engine import make_engine, read_session

    engine = make_engine(url, create=False)
    try:
        with read_session(engine) as session:
            connection = session.connection()
            marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"

            def run(sql: str, params: Sequence[Any]) -> list[Row]:
                statement = sql.replace("?", marker)
                result = connection.exec_driver_sql(statement, tuple(params))
                return [tuple(row) for row in result.all()]

            yield Reader(url, run, engine)
    finally:
        engine.dispose()


def utc(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime, as
    :class:`~daemon.store.models.UTCDateTime` reads it (SQLite keeps naive UTC text)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def current_revision(reader: Reader) -> str | None:
    """The migration the database is at (None for an empty database)."""
    if reader.engine is not None:
        from daemon.store import engine as store

        return store.current_revision(reader.engine)
    if not reader.rows(
        "SELECT name FROM sqlite_master WHERE type = ? AND name = ?", ("table", "alembic_version")
    ):
        return None
    rows = reader.rows("SELECT version_num FROM alembic_version")
    if len(rows) > 1:  # branches: alembic knows which is current
        return _ask_alembic(reader.url, "current_revision")
    return str(rows[0][0]) if rows else None


def head_revision(reader: Reader) -> str | None:
    """The latest migration shipped with this version of nebridge."""
    shipped = shipped_head()
    if shipped is not None:
        return shipped
    return _ask_alembic(reader.url, "head_revision")


def _ask_alembic(url: str, question: str) -> str | None:
    """:mod:`daemon.store.engine`'s ``question`` (``current_revision``, ``head_revision``)
    answered through alembic on ``url``: for migrations that do not form one chain."""
    from daemon.store import engine as store

    engine = store.make_engine(url, create=False)
    try:
        answer: str | None = getattr(store, question)(engine)
        return answer
    finally:
        engine.dispose()


@cache
def shipped_head() -> str | None:
    """The head of the migration files read as text, or None unless they form one chain.

    Each file's ``revision = "…"`` and ``down_revision = …`` literals are read with
    :mod:`ast` (never executed); anything else (branches, merges, computed values) is left to
    alembic. Read once per process (a fleet worker checks every company it starts against
    it: ~80 ms a time otherwise); the files of a running nebridge do not change under it.
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
