"""The order import without ``order_watch`` asks Next Engine once an interval while nothing
changes (issue #19): orders are read with their print-instruct date, also while it is ahead,
and the print-date search runs only once one of them falls due — an order that falls due
later is imported then all the same, also when the cursor was left by an older nebridge.

Real sandbox over HTTP, real order files, real databases.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from daemon import importer
from daemon.importer import PRINT_DATES_NOTED, cursor_name
from daemon.nextengine.dates import format_ne_datetime
from daemon.store.engine import read_session, write_session
from daemon.store.models import Cursor, utcnow
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world

PAST = "2026-01-05 09:00:00"  # print-instruct date long reached
ROW_SEARCH = "/api_v1_receiveorder_row/search"


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path, database_url: str) -> Iterator[World]:
    yield from make_world(make_config, tmp_path, database_url=database_url)


@pytest.fixture
def no_overlap(make_config: ConfigFactory, tmp_path: Path, database_url: str) -> Iterator[World]:
    yield from make_world(
        make_config, tmp_path, database_url=database_url, order_import={"overlap_minutes": 0}
    )


def instructed(world: World) -> Counter[str]:
    return Counter(
        order
        for path in world.outbox.glob("orders-*.csv")
        for order in {
            row["ne_order_id"]
            for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
        }
    )


def searches(world: World) -> int:
    return int(world.sandbox.state.traffic.snapshot()["calls_by_path"].get(ROW_SEARCH, 0))


def run(world: World) -> int:
    """One ``run --once``; how many order searches it sent to Next Engine."""
    before = searches(world)
    world.run_once()
    return searches(world) - before


def wait_past(moment: object) -> None:
    while utcnow() <= moment + timedelta(seconds=1):  # type: ignore[operator]
        time.sleep(0.2)


def test_a_quiet_interval_is_one_search_and_an_order_falling_due_later_is_imported(
    world: World,
) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=50)
    world.products([("P-A", "A-1")])
    now = st.create_order([("A-1", 1)], instruct_date=PAST)
    run(world)  # the first run: a full scan
    assert instructed(world) == Counter({str(now): 1})
    assert run(world) == 1  # nothing changed: one search

    soon = utcnow() + timedelta(seconds=2)
    later = st.create_order([("A-1", 2)], instruct_date=format_ne_datetime(soon))
    assert run(world) == 1  # read, its date noted, not imported yet
    assert instructed(world) == Counter({str(now): 1})
    assert run(world) == 1  # not due yet: no print-date search
    wait_past(soon)
    assert run(world) == 2  # due: the print-date search runs once
    assert instructed(world) == Counter({str(now): 1, str(later): 1})
    assert run(world) == 1
    assert instructed(world) == Counter({str(now): 1, str(later): 1})


def test_a_cursor_of_an_older_nebridge_reads_the_dates_ahead_once(no_overlap: World) -> None:
    """Older versions noted no print date without the watch: an order read before the update
    whose date is still ahead, and not modified since, is not lost — the first run reads
    every date ahead. (No overlap: the modified-since search does not read it again.)"""
    world = no_overlap
    st = world.sandbox.state
    st.create_goods("A-1", quantity=50)
    world.products([("P-A", "A-1")])
    soon = utcnow() + timedelta(seconds=8)
    later = st.create_order([("A-1", 1)], instruct_date=format_ne_datetime(soon))
    time.sleep(1.1)  # its last-modified second is over before the runs start
    run(world)  # a full scan: read, its date noted
    assert run(world) == 1
    runtime = world.runtime()
    try:
        with write_session(runtime.engine) as session:
            (cursor,) = session.scalars(
                select(Cursor).where(Cursor.name == cursor_name("ITAKU"))
            ).all()
            old = json.loads(cursor.value)
            assert old[PRINT_DATES_NOTED] is True and old["next_print"] is not None
            # what an older nebridge left: no date noted
            cursor.value = json.dumps({k: old[k] for k in ("modified", "ran", "products")})
            session.add(cursor)
    finally:
        runtime.close()
    assert run(world) == 2  # the dates ahead are read once
    assert run(world) == 1
    assert utcnow() < soon, "the machine is too slow for this test's timing"
    assert instructed(world) == Counter()
    wait_past(soon)
    assert run(world) == 2
    assert instructed(world) == Counter({str(later): 1})
    runtime = world.runtime()
    try:
        with read_session(runtime.engine) as session:
            value = json.loads(session.get(Cursor, cursor_name("ITAKU")).value)  # type: ignore[union-attr]
    finally:
        runtime.close()
    assert value[PRINT_DATES_NOTED] is True and value["next_print"] is None


def cursor_row(world: World) -> tuple[str, object]:
    runtime = world.runtime()
    try:
        with read_session(runtime.engine) as session:
            row = session.get(Cursor, cursor_name("ITAKU"))
            assert row is not None
            return row.value, row.updated_at
    finally:
        runtime.close()


def test_an_idle_run_commits_no_cursor_until_the_time_it_ran_is_old(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that read nothing new changes only ``ran`` in its cursor: written again only
    once the noted time is :data:`~daemon.importer.RAN_REFRESH` old."""
    st = world.sandbox.state
    st.create_goods("A-1", quantity=50)
    world.products([("P-A", "A-1")])
    first = st.create_order([("A-1", 1)], instruct_date=PAST)
    run(world)
    run(world)
    before = cursor_row(world)
    time.sleep(1.1)
    assert run(world) == 1
    assert cursor_row(world) == before  # nothing committed
    monkeypatch.setattr(importer, "RAN_REFRESH", timedelta(0))
    assert run(world) == 1
    value, _at = cursor_row(world)
    assert json.loads(value)["ran"] > json.loads(before[0])["ran"]
    assert {k: v for k, v in json.loads(value).items() if k != "ran"} == {
        k: v for k, v in json.loads(before[0]).items() if k != "ran"
    }
    second = st.create_order([("A-1", 2)], instruct_date=PAST)
    monkeypatch.setattr(importer, "RAN_REFRESH", timedelta(hours=1))
    run(world)  # a new order moves the cursor at once
    assert cursor_row(world) != (value, _at)
    assert instructed(world) == Counter({str(first): 1, str(second): 1})
