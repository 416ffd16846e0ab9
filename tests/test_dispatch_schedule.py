"""The dispatcher's idle look is one statement, and a retry brings the next pass forward (#19).

A fleet worker runs each company's dispatcher every ``dispatch_interval_seconds``: a thousand
companies are a hundred looks a second, so a look that finds nothing must cost one read of
the outbox (not the link state, the vault and two reads per action kind). A pass that leaves
a retry behind says when it comes due, and the scheduler runs the dispatcher then instead of
at its next look. A company with no notification sink runs no notification jobs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from sqlalchemy import Engine, event

from daemon.outbox import Dispatcher, insert_ignoring_duplicates, transition
from daemon.runtime import build_runtime
from daemon.scheduler import DATABASE_ALARM_JOB, DISPATCHER_JOB, NOTIFY_JOB, Scheduler
from daemon.store.engine import make_engine, upgrade, write_session
from daemon.store.models import OutboxItem, OutboxState, utcnow
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def add_item(engine: Engine, key: str, kind: str, due: datetime, state: str = "pending") -> None:
    now = utcnow()
    row = {
        "idempotency_key": key,
        "kind": kind,
        "warehouse": "MAIN",
        "plugin": "p",
        "subject": key,
        "event_id": None,
        "payload": "{}",
        "state": state,
        "attempts": 0,
        "next_attempt_at": due,
        "created_at": now,
        "updated_at": now,
    }
    with write_session(engine) as session:
        insert_ignoring_duplicates(session, [row])


class Sender:
    """An executor of one kind: sends what is due, or leaves it for a retry in ``retry_in``."""

    def __init__(self, engine: Engine, kind: str, retry_in: timedelta | None = None) -> None:
        self.engine, self.kind, self.retry_in = engine, kind, retry_in
        self.executed: list[str] = []
        self.reconciled: list[str] = []

    def reconcile(self, items: Sequence[OutboxItem]) -> None:
        self.reconciled += [i.idempotency_key for i in items]
        transition(self.engine, [i.id for i in items if i.id], OutboxState.PENDING)

    def execute(self, items: Sequence[OutboxItem]) -> None:
        self.executed += [i.idempotency_key for i in items]
        ids = [i.id for i in items if i.id]
        if self.retry_in is None:
            transition(self.engine, ids, OutboxState.DONE, result="sent")
        else:
            transition(self.engine, ids, OutboxState.PENDING, retry_in=self.retry_in)


def statements(engine: Engine) -> list[str]:
    """The statements ``engine`` runs from now on (SQLite's own BEGIN left out)."""
    seen: list[str] = []

    def note(*args: Any, **_: Any) -> None:
        if str(args[2]) != "BEGIN":
            seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", note)
    return seen


def test_an_idle_look_is_one_statement_and_asks_nothing_of_the_link(engine: Engine) -> None:
    asked: list[str] = []

    def blocked() -> None:
        asked.append("blocked")

    dispatcher = Dispatcher(
        engine,
        {"ship_order": Sender(engine, "ship_order"), "stock_delta": Sender(engine, "stock_delta")},
        blocked=blocked,
    )
    seen = statements(engine)
    report = dispatcher.run_once()
    assert len(seen) == 1, seen
    assert asked == []
    assert report.next_due is None and report.waiting == {} and report.blocked == ""


def test_only_kinds_with_due_or_in_flight_items_are_read_and_a_retry_says_when(
    engine: Engine,
) -> None:
    now = utcnow()
    ship = Sender(engine, "ship_order", retry_in=timedelta(seconds=20))
    stock = Sender(engine, "stock_delta")
    tracking = Sender(engine, "tracking")
    add_item(engine, "ship:1", "ship_order", now - timedelta(seconds=1))
    add_item(engine, "stock:1", "stock_delta", now, state="in_flight")
    add_item(engine, "tracking:1", "tracking", now + timedelta(minutes=5))
    add_item(engine, "other:1", "no_executor", now)
    dispatcher = Dispatcher(
        engine, {"ship_order": ship, "stock_delta": stock, "tracking": tracking}
    )
    report = dispatcher.run_once()
    assert ship.executed == ["ship:1"]
    assert stock.reconciled == ["stock:1"] and stock.executed == ["stock:1"]
    assert tracking.executed == []  # not due: not read, not sent
    assert report.waiting == {"no_executor": 1}
    # the retry ship:1 was left with (20 s) comes before tracking:1 (5 min)
    assert report.next_due is not None
    assert timedelta(seconds=15) < report.next_due - now < timedelta(seconds=60)


def test_a_blocked_link_is_asked_only_when_something_waits(engine: Engine) -> None:
    asked: list[str] = []

    def blocked() -> str:
        asked.append("blocked")
        return "Next Engine is not connected (run `nebridge connect`)"

    dispatcher = Dispatcher(engine, {"ship_order": Sender(engine, "ship_order")}, blocked=blocked)
    assert dispatcher.run_once().blocked == "" and asked == []
    add_item(engine, "ship:1", "ship_order", utcnow() + timedelta(hours=1))
    report = dispatcher.run_once()
    assert asked == ["blocked"]
    assert report.blocked.startswith("Next Engine is not connected")
    assert report.waiting == {"ship_order": 1}  # not due yet, still shown as waiting


def test_the_scheduler_runs_the_dispatcher_at_start_and_when_a_retry_comes_due(
    make_config: ConfigFactory,
) -> None:
    runtime = build_runtime(make_config(schedule={"dispatch_interval_seconds": 600}))
    runtime.start_connector()
    scheduler = Scheduler(runtime)
    looked = threading.Event()

    def on_run(event: JobExecutionEvent) -> None:
        if event.job_id == DISPATCHER_JOB:
            looked.set()

    scheduler.scheduler.add_listener(on_run, EVENT_JOB_EXECUTED)
    scheduler.start()
    try:
        # the first look is at the start (what a crash left in flight is settled at once),
        # not an interval (here 10 min) later
        assert looked.wait(10)
        job = scheduler.scheduler.get_job(DISPATCHER_JOB)
        assert job is not None
        looks_at = job.next_run_time
        assert looks_at > datetime.now().astimezone() + timedelta(minutes=9)
        soon = datetime.now().astimezone() + timedelta(seconds=30)
        scheduler.run_at(DISPATCHER_JOB, soon)
        scheduler.apply_run_requests()
        assert scheduler.scheduler.get_job(DISPATCHER_JOB).next_run_time == soon
        scheduler.run_at(DISPATCHER_JOB, looks_at + timedelta(minutes=5))  # later: no change
        scheduler.apply_run_requests()
        assert scheduler.scheduler.get_job(DISPATCHER_JOB).next_run_time == soon
        scheduler.run_at(DISPATCHER_JOB, soon)
        scheduler.run_now(DISPATCHER_JOB)  # at once wins over a time
        scheduler.apply_run_requests()
        assert scheduler.scheduler.get_job(DISPATCHER_JOB).next_run_time < soon
    finally:
        runtime.stop_event.set()
        scheduler.shutdown()
        runtime.close()


@pytest.mark.parametrize("sink", [False, True])
def test_notification_jobs_are_scheduled_only_with_a_sink_to_tell(
    make_config: ConfigFactory, sink: bool
) -> None:
    webhook = {"notify_webhook": {"enabled": True, "format": "json", "url": "http://127.0.0.1:9/"}}
    plugins = DEFAULT_PLUGINS | (webhook if sink else {})
    runtime = build_runtime(make_config(plugins=plugins))
    scheduler = Scheduler(runtime)
    scheduler.start()
    try:
        jobs = {job.id for job in scheduler.scheduler.get_jobs()}
        assert DISPATCHER_JOB in jobs
        assert (NOTIFY_JOB in jobs) is sink and (DATABASE_ALARM_JOB in jobs) is sink
    finally:
        runtime.stop_event.set()
        scheduler.shutdown()
        runtime.close()
