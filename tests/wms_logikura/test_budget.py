"""Logikura's budget holds across threads and processes and keeps a margin; waits are bounded:
a looping ``Link`` ends the read, an epoch ``X-Rate-Limit-Reset`` is not a 57-year pause, and
bulk work (an order import) leaves room for history reads (issue #20, findings 6 and 7)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from benchmarks.virtual_time import VirtualTime
from hooks.http import BoundedSession, HttpLimits
from plugins.wms_logikura import LogikuraConnector
from plugins.wms_logikura.errors import LogikuraError, LogikuraUnavailable
from plugins.wms_logikura.ratelimit import (
    MAX_PAUSE_SECONDS,
    WINDOW_SECONDS,
    RateLimiter,
    TurnOver,
    budget,
    lane_budget,
)
from plugins.wms_logikura.sandbox import SandboxServer
from plugins.wms_logikura.store import PAUSE_KEY, LocalStore
from tests.wms_logikura.conftest import (
    FakeTime,
    connect,
    logikura_config,
    make_ctx,
    sandbox_config,
)
from tests.wms_logikura.test_client import client_of, nebridge_key

REPO = Path(__file__).resolve().parents[2]
HOUR = 3600.0  # a window no test run outlasts: only the count matters, not the speed
TAKER = """
import sys, time
from pathlib import Path
from plugins.wms_logikura.store import LocalStore
store, cap, tries = LocalStore(Path(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
print(sum(store.take_slot(time.time, False, cap, cap, 0, 3600.0, 65.0) == 0.0
          for _ in range(tries)))
"""


def test_margin_below_the_limit() -> None:
    assert budget(100) == 90
    assert lane_budget(100, bulk=True) == 70 and lane_budget(100, bulk=False) == 80
    assert budget(7) == 7 and lane_budget(7, bulk=True) == lane_budget(7, bulk=False) == 5


@pytest.mark.parametrize("threads", [2, 4])
def test_threads_never_take_more_slots_than_the_cap(tmp_path: Path, threads: int) -> None:
    store = LocalStore(tmp_path / "lk.sqlite3")
    admitted: list[int] = []
    start = threading.Barrier(threads)

    def take() -> None:
        start.wait()
        admitted.append(
            sum(
                store.take_slot(time.time, bulk, 20, 15, 5, HOUR, MAX_PAUSE_SECONDS) == 0.0
                for bulk in (False, True) * 15
            )
        )

    workers = [threading.Thread(target=take) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sum(admitted) == 20


def test_processes_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "lk.sqlite3"
    LocalStore(path)
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, str(path), "20", "25"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    counts = [int(p.communicate(timeout=120)[0]) for p in takers]
    assert sum(counts) == 20


def test_threaded_connectors_stay_under_the_margin_at_the_sandbox(
    tmp_path: Path, http: requests.Session
) -> None:
    with SandboxServer(sandbox_config()) as lk:
        setup = FakeTime(lk)
        connect(lk, tmp_path, http, setup)  # authorised; the threads use their own instance
        setup.advance(WINDOW_SECONDS + 1)
        clock = VirtualTime(setup(), lk.clock)
        connector = LogikuraConnector(logikura_config(lk), clock=clock, sleep=clock.sleep)
        client = client_of(connector, make_ctx(tmp_path, http, setup))

        def read() -> None:
            with clock.party():
                for _ in range(60):
                    client.get("/api/v1/warehouses")

        workers = [threading.Thread(target=read) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        key = nebridge_key(lk)
        assert lk.state.traffic.max_in_window(WINDOW_SECONDS, key) == lane_budget(100, False)
        assert lk.state.traffic.rate_limited(key) == 0


def test_bulk_work_leaves_the_read_reserve_and_stops_waiting_on_stop(tmp_path: Path) -> None:
    clock = FakeTime()
    limiter = RateLimiter(
        LocalStore(tmp_path / "lk.sqlite3"), 100, clock=clock, sleep=clock.sleep, max_wait=120
    )
    stopping = threading.Event()
    for _ in range(lane_budget(100, bulk=True)):
        limiter.acquire(bulk=True, stop=stopping.is_set)
    assert clock.slept == 0
    for _ in range(budget(100) - lane_budget(100, bulk=True)):
        limiter.acquire()  # history reads still go at once
    assert clock.slept == 0
    limiter.acquire(bulk=True, stop=stopping.is_set)  # waits for the oldest slot to age out
    assert WINDOW_SECONDS - 1 <= clock.slept <= WINDOW_SECONDS + 1
    for _ in range(lane_budget(100, bulk=True) - 1):
        limiter.acquire(bulk=True, stop=stopping.is_set)
    stopping.set()
    slept = clock.slept
    with pytest.raises(TurnOver, match="stopping"):
        limiter.acquire(bulk=True, stop=stopping.is_set)
    assert clock.slept == slept  # a stop never waits for a slot


def test_heavy_reading_never_stops_an_import(tmp_path: Path) -> None:
    clock = FakeTime()
    limiter = RateLimiter(
        LocalStore(tmp_path / "lk.sqlite3"), 100, clock=clock, sleep=clock.sleep, max_wait=30
    )
    for _ in range(lane_budget(100, bulk=False)):
        limiter.acquire()
    for _ in range(budget(100) - lane_budget(100, bulk=False)):
        limiter.acquire(bulk=True, stop=lambda: False)
    assert clock.slept == 0
    with pytest.raises(LogikuraUnavailable, match="no room"):
        limiter.acquire()  # reading is held back: the window is full


def test_a_waiting_read_goes_before_bulk_work(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lk.sqlite3")
    clock = FakeTime()

    def take(bulk: bool) -> float:
        return store.take_slot(
            clock, bulk, 90, 80 if not bulk else 70, 10, WINDOW_SECONDS, MAX_PAUSE_SECONDS
        )

    assert all(take(True) == 0 for _ in range(70))
    clock.advance(10)
    assert all(take(False) == 0 for _ in range(20))
    clock.advance(20)
    assert take(False) > 0  # the window is full: the read waits for the bulk slots to go
    clock.advance(30.5)  # the bulk slots are gone; the import is first to ask again
    assert all(take(True) == 0 for _ in range(10))  # its share
    assert take(True) > 0  # no more while the read waits
    assert take(False) == 0  # the read goes
    assert take(True) == 0  # and bulk work goes on


def test_a_looping_link_ends_the_read(tmp_path: Path, http: requests.Session) -> None:
    with SandboxServer(sandbox_config(page_size=5, seed_size=30)) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        client = client_of(connector, ctx)
        key = nebridge_key(lk)
        before = len(lk.state.traffic.requests(key))
        lk.faults.loop_links_next(count=1000, path="/api/v1/product_variants", method="GET")
        with pytest.raises(LogikuraError, match="page already read"):
            list(client.get_all("/api/v1/product_variants", "product_variants"))
        assert len(lk.state.traffic.requests(key)) - before == 1
        lk.faults.reset()
        assert len(list(client.get_all("/api/v1/product_variants", "product_variants"))) == 30


def test_an_epoch_reset_header_is_a_bounded_pause(tmp_path: Path, http: requests.Session) -> None:
    with SandboxServer(sandbox_config()) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        client = client_of(connector, ctx)
        epoch = str(int(clock() + 1_800_000_000))  # 57 years ahead, as an epoch value
        lk.faults.reset_header_next(epoch, path="/api/v1/warehouses")
        lk.faults.fail_next(429, path="/api/v1/warehouses")
        slept = clock.slept
        assert client.get("/api/v1/warehouses")["warehouses"]
        assert 0 < clock.slept - slept <= MAX_PAUSE_SECONDS


def test_a_reset_given_as_a_timestamp_is_read_as_one(tmp_path: Path) -> None:
    clock = FakeTime()
    limiter = RateLimiter(
        LocalStore(tmp_path / "lk.sqlite3"), 100, clock=clock, sleep=clock.sleep, max_wait=120
    )
    assert limiter.reset_seconds(str(clock() + 12)) == 12
    assert limiter.reset_seconds("17") == 17
    assert limiter.reset_seconds("nonsense") is None


def test_a_stored_absurd_pause_does_not_block(tmp_path: Path, http: requests.Session) -> None:
    with SandboxServer(sandbox_config()) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        with sqlite3.connect(tmp_path / "logikura.sqlite3") as conn:  # an older version's
            conn.execute(
                "INSERT OR REPLACE INTO kv (name, value) VALUES (?, ?)",
                (PAUSE_KEY, repr(clock() + 57 * 365 * 86400)),
            )
        slept = clock.slept
        assert client_of(connector, ctx).get("/api/v1/warehouses")["warehouses"]
        assert clock.slept == slept


def test_calls_are_bounded_by_ctx_http(tmp_path: Path, http: requests.Session) -> None:
    """Through the engine's BoundedSession: an answer over the size cap is one request and a
    clear error; a stalled answer ends at ``timeout_seconds`` for the whole call."""
    with SandboxServer(sandbox_config(seed_size=30)) as lk:
        clock = FakeTime(lk)
        connect(lk, tmp_path, http, clock)
        small = BoundedSession(HttpLimits(max_response_bytes=2000))
        bounded = LogikuraConnector(
            logikura_config(lk, timeout_seconds=0.5), clock=clock, sleep=clock.sleep
        )
        client = client_of(bounded, make_ctx(tmp_path, small, clock))
        key = nebridge_key(lk)
        before = len(lk.state.traffic.requests(key))
        with pytest.raises(LogikuraUnavailable, match="max_response_mb"):
            client.get("/api/v1/product_variants")
        assert len(lk.state.traffic.requests(key)) - before == 1
        lk.faults.stall_next(3, count=3, path="/api/v1/warehouses")
        with pytest.raises(LogikuraUnavailable, match="did not answer GET"):
            client.get("/api/v1/warehouses")
        small.close()
