"""The connector's own records, in ``<state_dir>/logikura.sqlite3`` (mode 0600).

* ``schedule``: one row per Next Engine order sent to Logikura — ``sending`` is written (and
  synced) *before* the ``POST``, ``created`` with the schedule id after it. A ``sending`` row
  found later means the outcome is unknown: the order is looked up in Logikura before it is
  ever sent again.
* ``consignee``: consignee codes nebridge created or found, with their ids (``creating`` = a
  ``POST`` whose outcome is unknown).
* ``inbound``: histories rejected whole or held for a person (kept until ``nebridge inbox
  retry`` re-queues them), then read again by id; and changed or deleted delivered
  histories already reported.
* ``delivered``: what each delivered history said (digest, Next Engine order, tracking number,
  lines), so a later change, a second shipment of the same order or a deleted history is
  noticed and reported instead of dropped.
* ``request_slot`` / ``bulk_slot`` / ``kv``: the request times of the last minute (bulk work
  such as an order import apart) and a pause Logikura asked for, shared by every process
  using this state folder; cached lookups.

A new connection per operation keeps it safe across threads and processes; write
transactions take SQLite's write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hooks.files import open_private

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedule (
    ne_order_id TEXT PRIMARY KEY, batch_key TEXT NOT NULL, state TEXT NOT NULL,
    schedule_id INTEGER, since REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS schedule_by_id ON schedule (schedule_id);
CREATE TABLE IF NOT EXISTS consignee (
    code TEXT PRIMARY KEY, consignee_id INTEGER, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbound (
    source TEXT PRIMARY KEY, digest TEXT NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS delivered (
    source TEXT PRIMARY KEY, digest TEXT NOT NULL, ne_order_id TEXT, tracking TEXT,
    facts TEXT NOT NULL, day TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS delivered_by_order ON delivered (ne_order_id);
CREATE INDEX IF NOT EXISTS delivered_by_day ON delivered (day);
CREATE TABLE IF NOT EXISTS request_slot (at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS bulk_slot (at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SENDING, CREATED, DELETED = "sending", "created", "deleted"
#: The schedule nebridge deleted itself (the order was cancelled or edited in Next Engine);
#: an edited order's new content creates a new schedule.
WITHDRAWN = "withdrawn"
REJECTED, REQUEUED, HELD = "rejected", "requeued", "held"
PAUSE_KEY = "rate.paused_until"
READER_KEY = "rate.reader_waits_until"


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """What nebridge knows about the schedule of one Next Engine order."""

    ne_order_id: str
    batch_key: str
    state: str
    schedule_id: int | None
    since: float
    updated: float


class LocalStore:
    """The connector's SQLite file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():  # 0600 in a 0700 folder; run as root, the folder owner's
            os.close(open_private(path, os.O_WRONLY))
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=60, isolation_level=None)) as conn:
            yield conn

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction; ``durable=False`` skips the disk sync (request times and
        caches, which may be lost in a power cut)."""
        with self._connect() as conn:
            if not durable:
                conn.execute("PRAGMA synchronous = OFF")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ---------------------------------------------------------------- schedules
    def schedules(self, ne_order_ids: Iterable[str]) -> dict[str, ScheduleRecord]:
        """The records of these orders (absent = never sent)."""
        ids = list(ne_order_ids)
        out: dict[str, ScheduleRecord] = {}
        with self._connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    "SELECT ne_order_id, batch_key, state, schedule_id, since, updated "
                    "FROM schedule "
                    f"WHERE ne_order_id IN ({marks})",
                    chunk,
                ):
                    out[row[0]] = ScheduleRecord(*row)
        return out

    def orders_of_schedules(self, schedule_ids: Iterable[int]) -> dict[int, str]:
        """Schedule id → Next Engine order, for those of ``schedule_ids`` nebridge created
        (and staff did not delete)."""
        ids = list(schedule_ids)
        out: dict[int, str] = {}
        with self._connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for r in conn.execute(
                    "SELECT schedule_id, ne_order_id FROM schedule WHERE "
                    f"state = ? AND schedule_id IN ({marks})",
                    [CREATED, *chunk],
                ):
                    out[int(r[0])] = str(r[1])
        return out

    def unshipped_schedules(self, source_prefix: str) -> dict[int, str]:
        """Schedule id → Next Engine order, for the schedules nebridge created whose
        history (``source_prefix<id>``) was not delivered yet."""
        with self._connect() as conn:
            return {
                int(r[0]): str(r[1])
                for r in conn.execute(
                    "SELECT schedule_id, ne_order_id FROM schedule WHERE state = ? AND "
                    "schedule_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM delivered WHERE "
                    "delivered.source = ? || schedule.schedule_id)",
                    (CREATED, source_prefix),
                )
            }

    def deleted_schedules(self) -> dict[int, str]:
        """Schedule id → Next Engine order, for the schedules staff deleted."""
        with self._connect() as conn:
            return {
                int(r[0]): str(r[1])
                for r in conn.execute(
                    "SELECT schedule_id, ne_order_id FROM schedule WHERE state = ? AND "
                    "schedule_id IS NOT NULL",
                    (DELETED,),
                )
            }

    def mark_schedule_deleted(self, ne_order_id: str, now: float) -> None:
        """Staff deleted the order's schedule in Logikura: nebridge no longer waits for it."""
        with self._write() as conn:
            conn.execute(
                "UPDATE schedule SET state = ?, updated = ? WHERE ne_order_id = ? AND state = ?",
                (DELETED, now, ne_order_id, CREATED),
            )

    def mark_withdrawn(self, ne_order_id: str, now: float) -> None:
        """nebridge deleted the order's schedule (``order_watch``): not waited for any more."""
        with self._write() as conn:
            conn.execute(
                "UPDATE schedule SET state = ?, updated = ? WHERE ne_order_id = ? "
                "AND state IN (?, ?)",
                (WITHDRAWN, now, ne_order_id, CREATED, DELETED),
            )

    def mark_sending(self, ne_order_id: str, batch_key: str, now: float) -> None:
        """Write (and sync) the intent before the schedule is requested."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO schedule (ne_order_id, batch_key, state, schedule_id, since, "
                "updated) VALUES (?, ?, ?, NULL, ?, ?) ON CONFLICT (ne_order_id) DO UPDATE "
                "SET batch_key = excluded.batch_key, state = excluded.state, "
                "updated = excluded.updated WHERE schedule.state != ?",
                (ne_order_id, batch_key, SENDING, now, now, CREATED),
            )

    def mark_created(self, ne_order_id: str, batch_key: str, schedule_id: int, now: float) -> None:
        """The schedule exists in Logikura with ``schedule_id``."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO schedule (ne_order_id, batch_key, state, schedule_id, since, "
                "updated) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ne_order_id) DO UPDATE SET "
                "state = excluded.state, schedule_id = excluded.schedule_id, "
                "updated = excluded.updated",
                (ne_order_id, batch_key, CREATED, schedule_id, now, now),
            )

    def forget_sending(self, ne_order_id: str) -> None:
        """Logikura refused the request outright: nothing was created."""
        with self._write() as conn:
            conn.execute(
                "DELETE FROM schedule WHERE ne_order_id = ? AND state = ?", (ne_order_id, SENDING)
            )

    # ---------------------------------------------------------------- consignees
    def consignee(self, code: str) -> tuple[int | None, str] | None:
        """``(id, state)`` of a consignee code nebridge knows, else None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT consignee_id, state FROM consignee WHERE code = ?", (code,)
            ).fetchone()
        return None if row is None else (row[0], str(row[1]))

    def mark_consignee_creating(self, code: str) -> None:
        """Write the intent before a consignee is created."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO consignee (code, consignee_id, state) "
                "VALUES (?, NULL, 'creating')",
                (code,),
            )

    def save_consignees(self, found: dict[str, int]) -> None:
        """Remember consignee codes and their ids."""
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO consignee (code, consignee_id, state) VALUES "
                "(?, ?, 'known') ON CONFLICT (code) DO UPDATE SET "
                "consignee_id = excluded.consignee_id, state = 'known'",
                list(found.items()),
            )

    # ---------------------------------------------------------------- inbound
    def marks(self, prefix: str) -> dict[str, tuple[str, str]]:
        """Source → (state, content digest) of the histories rejected, held, re-queued or
        waiting."""
        with self._connect() as conn:
            return {
                str(r[0]): (str(r[1]), str(r[2]))
                for r in conn.execute(
                    "SELECT source, state, digest FROM inbound WHERE source LIKE ? || '%'",
                    (prefix,),
                )
            }

    def mark(self, source: str, state: str, digest: str) -> None:
        """Remember a history's state (``rejected``, ``held``, or one of the reader's) with
        its digest, so it is not reported again at every poll and can be read again by id."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO inbound (source, digest, state) VALUES (?, ?, ?) "
                "ON CONFLICT (source) DO UPDATE SET digest = excluded.digest, "
                "state = excluded.state",
                (source, digest, state),
            )

    def requeue(self, source: str) -> bool:
        """Ask for a rejected or held history to be read again (a held one: taken as the
        admin confirmed); False if none is called so."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE inbound SET state = ? WHERE source = ? AND state IN (?, ?)",
                (REQUEUED, source, REJECTED, HELD),
            )
            return cursor.rowcount > 0

    def settle(self, source: str) -> None:
        """A re-queued history is gone from Logikura: forget the mark."""
        with self._write() as conn:
            conn.execute("DELETE FROM inbound WHERE source = ?", (source,))

    def delivered(
        self, sources: Iterable[str]
    ) -> dict[str, tuple[str, str | None, str | None, Any]]:
        """Source → (digest, Next Engine order, tracking number, facts) of those of
        ``sources`` that were delivered."""
        wanted = list(sources)
        out: dict[str, tuple[str, str | None, str | None, Any]] = {}
        with self._connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for r in conn.execute(
                    "SELECT source, digest, ne_order_id, tracking, facts "
                    f"FROM delivered WHERE source IN ({marks})",
                    chunk,
                ):
                    out[str(r[0])] = (str(r[1]), r[2], r[3], json.loads(r[4]))
        return out

    def delivered_since(self, prefix: str, day: str) -> dict[str, Any]:
        """Source → facts of the delivered histories named ``prefix…`` dated ``day`` or
        later."""
        with self._connect() as conn:
            return {
                str(r[0]): json.loads(r[1])
                for r in conn.execute(
                    "SELECT source, facts FROM delivered WHERE day >= ? AND source LIKE ? || '%'",
                    (day, prefix),
                )
            }

    def shipped_by(self, ne_order_id: str) -> str | None:
        """The delivered history that shipped this Next Engine order, if any."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT source FROM delivered WHERE ne_order_id = ? ORDER BY source LIMIT 1",
                (ne_order_id,),
            ).fetchone()
        return None if row is None else str(row[0])

    def mark_delivered(
        self, source: str, digest: str, ne_order_id: str | None, tracking: str | None, facts: Any
    ) -> None:
        """The engine stored the history's event: remember what it said; drop any mark."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO delivered (source, digest, ne_order_id, tracking, facts, "
                "day) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
                "digest = excluded.digest, ne_order_id = excluded.ne_order_id, "
                "tracking = excluded.tracking, facts = excluded.facts, "
                "day = excluded.day",
                (
                    source,
                    digest,
                    ne_order_id,
                    tracking,
                    json.dumps(facts, ensure_ascii=False),
                    str(facts.get("date", "")),
                ),
            )
            conn.execute("DELETE FROM inbound WHERE source = ?", (source,))

    # ---------------------------------------------------------------- rate limit
    def take_slot(
        self,
        clock: Callable[[], float],
        bulk: bool,
        cap: int,
        lane_cap: int,
        bulk_share: int,
        window: float,
        max_pause: float,
    ) -> float:
        """Record a request of a lane (``bulk`` work, or the rest) if fewer than ``cap``
        requests, and fewer than ``lane_cap`` of that lane, were made in the last ``window``
        seconds and no pause is due; else return the seconds to wait.

        The other lane goes first: a reader refused a slot leaves a mark, and while it waits
        bulk work takes no slot beyond its ``bulk_share``. The clock is read *inside* the
        write transaction, so the times of every thread and process are taken in one order
        and no taker can count (or delete) another's slot as "in the future". Slots and
        pauses further ahead than the window or ``max_pause`` (the wall clock was set back;
        an absurd reset header stored by an older version) are dropped rather than obeyed.
        """
        mine = "bulk_slot" if bulk else "request_slot"
        with self._write(durable=False) as conn:
            now = clock()
            marks = dict(
                conn.execute(
                    "SELECT name, value FROM kv WHERE name IN (?, ?)", (PAUSE_KEY, READER_KEY)
                ).fetchall()
            )
            paused_until = float(marks.get(PAUSE_KEY, 0.0))
            if paused_until - now > max_pause:
                conn.execute("DELETE FROM kv WHERE name = ?", (PAUSE_KEY,))
            elif now < paused_until:
                return paused_until - now
            for table in ("request_slot", "bulk_slot"):
                conn.execute(
                    f"DELETE FROM {table} WHERE at <= ? OR at > ?", (now - window, now + window)
                )
            both = "SELECT at FROM request_slot UNION ALL SELECT at FROM bulk_slot"
            for source, limit in ((both, cap), (f"SELECT at FROM {mine}", lane_cap)):
                (count,) = conn.execute(f"SELECT COUNT(*) FROM ({source})").fetchone()
                if count >= limit:
                    (freed,) = conn.execute(
                        f"SELECT at FROM ({source}) ORDER BY at LIMIT 1 OFFSET ?", (count - limit,)
                    ).fetchone()
                    wait = max(float(freed) + window - now, 0.001)
                    if not bulk and source == both:
                        conn.execute(
                            "INSERT OR REPLACE INTO kv (name, value) VALUES (?, ?)",
                            (READER_KEY, repr(now + wait + 1.0)),
                        )
                    return wait
            reader_waits = float(marks.get(READER_KEY, 0.0)) - now
            if bulk and 0 < reader_waits <= window:
                (count,) = conn.execute("SELECT COUNT(*) FROM bulk_slot").fetchone()
                if count >= bulk_share:
                    return reader_waits
            if not bulk:
                conn.execute("DELETE FROM kv WHERE name = ?", (READER_KEY,))
            conn.execute(f"INSERT INTO {mine} (at) VALUES (?)", (now,))
            return 0.0

    def pause_until(self, until: float) -> None:
        """No request before ``until`` (Logikura said the limit is used up); the caller
        bounds ``until``."""
        with self._write(durable=False) as conn:
            row = conn.execute("SELECT value FROM kv WHERE name = ?", (PAUSE_KEY,)).fetchone()
            if row is None or float(row[0]) < until:
                conn.execute(
                    "INSERT INTO kv (name, value) VALUES (?, ?) ON CONFLICT (name) "
                    "DO UPDATE SET value = excluded.value",
                    (PAUSE_KEY, repr(until)),
                )

    # ---------------------------------------------------------------- cache
    def get_json(self, name: str) -> Any:
        """A cached JSON value, or None."""
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_json(self, name: str, value: Any) -> None:
        """Cache a JSON value."""
        with self._write(durable=False) as conn:
            conn.execute(
                "INSERT INTO kv (name, value) VALUES (?, ?) ON CONFLICT (name) DO "
                "UPDATE SET value = excluded.value",
                (name, json.dumps(value, ensure_ascii=False)),
            )
