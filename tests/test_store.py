"""The store on SQLite and PostgreSQL: migrations, idempotent outbox, inbox uniqueness."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from daemon.outbox import (
    Dispatcher,
    backlog_by_state,
    insert_ignoring_duplicates,
    pending_by_kind,
    transition,
)
from daemon.store.engine import (
    DatabaseNotMigrated,
    check_migrated,
    current_revision,
    head_revision,
    make_engine,
    read_session,
    upgrade,
    write_session,
)
from daemon.store.models import Cursor, InboxEvent, OutboxItem, OutboxState, utcnow


@pytest.fixture
def engine(database_url: str) -> Engine:
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng  # type: ignore[misc]
    eng.dispose()


def _row(key: str, kind: str = "ship_order") -> dict[str, object]:
    now = utcnow()
    return {
        "idempotency_key": key,
        "kind": kind,
        "warehouse": "ITAKU",
        "plugin": "p",
        "subject": key,
        "event_id": None,
        "payload": "{}",
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def test_migrations_bring_an_empty_database_to_head(database_url: str) -> None:
    eng = make_engine(database_url)
    try:
        assert current_revision(eng) is None
        with pytest.raises(DatabaseNotMigrated, match="nebridge db upgrade"):
            check_migrated(eng)
        upgrade(eng)
        assert current_revision(eng) == head_revision(eng)
        check_migrated(eng)
        upgrade(eng)  # idempotent
        assert current_revision(eng) == head_revision(eng)
    finally:
        eng.dispose()


def test_outbox_idempotency_key_turns_duplicates_into_no_ops(engine: Engine) -> None:
    with write_session(engine) as session:
        assert insert_ignoring_duplicates(session, [_row("ship:1"), _row("ship:2")]) == 2
    with write_session(engine) as session:
        assert insert_ignoring_duplicates(session, [_row("ship:1"), _row("ship:3")]) == 1
    with read_session(engine) as session:
        keys = sorted(session.scalars(select(OutboxItem.idempotency_key)))
    assert keys == ["ship:1", "ship:2", "ship:3"]
    assert pending_by_kind(engine) == {"ship_order": 3}


def test_inbox_event_is_unique_per_kind_and_external_id(engine: Engine) -> None:
    def event(kind: str) -> InboxEvent:
        return InboxEvent(
            kind=kind,
            external_id="X-1",
            warehouse="ITAKU",
            content_hash="h",
            payload="{}",
            source="f.csv",
        )

    with write_session(engine) as session:
        session.add(event("shipment"))
        session.add(event("receipt"))
    with pytest.raises(IntegrityError), write_session(engine) as session:
        session.add(event("shipment"))
    with read_session(engine) as session:
        assert session.scalar(select(func.count()).select_from(InboxEvent)) == 2


def test_failed_transaction_leaves_nothing_behind(engine: Engine) -> None:
    with pytest.raises(RuntimeError), write_session(engine) as session:
        insert_ignoring_duplicates(session, [_row("ship:9")])
        raise RuntimeError("crash mid-transaction")
    assert backlog_by_state(engine) == {}


def test_sqlite_writers_serialise_without_lock_errors(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    upgrade(eng)
    with write_session(eng) as session:
        session.add(Cursor(name="counter", value="0"))
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(40):
                with write_session(eng) as session:  # read, then write: needs BEGIN IMMEDIATE
                    row = session.get(Cursor, "counter")
                    assert row is not None
                    row.value = str(int(row.value) + 1)
                    session.add(row)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with read_session(eng) as session:
        row = session.get(Cursor, "counter")
        assert row is not None and row.value == "160"
    eng.dispose()


class RecordingExecutor:
    """A real executor that 'sends' by recording, to exercise the dispatcher's state machine."""

    kind = "ship_order"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reconciled: list[str] = []
        self.sent: list[str] = []

    def reconcile(self, items: Sequence[OutboxItem]) -> None:
        self.reconciled.extend(i.subject for i in items)
        transition(
            self.engine,
            [i.id for i in items if i.id],
            OutboxState.IN_DOUBT,
            error="could not tell whether it was applied",
        )

    def execute(self, items: Sequence[OutboxItem]) -> None:
        ids = [i.id for i in items if i.id]
        transition(self.engine, ids, OutboxState.IN_FLIGHT, count_attempt=True)
        self.sent.extend(i.subject for i in items)
        transition(self.engine, ids, OutboxState.DONE, result="ok")


def test_dispatcher_reconciles_in_flight_items_before_sending(engine: Engine) -> None:
    with write_session(engine) as session:
        insert_ignoring_duplicates(
            session,
            [_row("ship:1"), _row("ship:2"), _row("ship:3"), _row("stock:1", kind="adjust_stock")],
        )
    with read_session(engine) as session:
        first = session.scalars(select(OutboxItem).where(OutboxItem.subject == "ship:1")).one()
        later = session.scalars(select(OutboxItem).where(OutboxItem.subject == "ship:3")).one()
    transition(engine, [first.id], OutboxState.IN_FLIGHT)  # as if we crashed mid-send
    transition(engine, [later.id], OutboxState.PENDING, retry_in=timedelta(hours=1))
    executor = RecordingExecutor(engine)
    report = Dispatcher(engine, {"ship_order": executor}).run_once()
    assert executor.reconciled == ["ship:1"]
    assert executor.sent == ["ship:2"]  # ship:1 is in doubt, ship:3 not due yet
    assert report.waiting == {"adjust_stock": 1}
    assert backlog_by_state(engine) == {"in_doubt": 1, "done": 1, "pending": 2}
