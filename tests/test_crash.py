"""SIGKILL between Next Engine applying a change and nebridge recording it: restart settles it.

The daemon runs as a real subprocess against the sandbox in this process. A watcher kills it
(SIGKILL) the moment the sandbox has applied the first ``shipped`` — before the daemon can
record the outcome — and, on the next run, the moment the stock upload reached Next Engine's
queue. Restarted, nebridge must ship every order exactly once with the right tracking number
and move stock by exactly the expected amounts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import func, select

from daemon.admin import run_once
from daemon.store.engine import read_session
from daemon.store.models import InboxEvent
from tests.conftest import ConfigFactory
from tests.ne_world import AT, RECEIPT_HEADER, SHIP_HEADER, World, make_world

ORDERS = 12


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path, sandbox_options={"que_processing_delay_s": 0.5})


def run_killed_when(world: World, condition: Callable[[], bool]) -> int:
    """Run `nebridge run --once` in a subprocess; SIGKILL it as soon as ``condition()``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "--config", str(world.config), "run", "--once"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = threading.Event()

    def watch() -> None:
        while proc.poll() is None:
            if condition():
                os.kill(proc.pid, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    proc.wait(120)
    watcher.join()
    assert killed.is_set(), "the daemon finished before the kill point was reached"
    return proc.returncode


def test_sigkill_after_next_engine_applied_loses_nothing_and_doubles_nothing(
    world: World,
) -> None:
    st = world.sandbox.state
    st.create_goods("A-1", quantity=500)
    st.create_goods("B-2", quantity=500)
    orders = [st.create_order([("A-1", 1)], shop_id=1) for _ in range(ORDERS)]
    world.products([("P-A", "A-1"), ("P-B", "B-2")])
    rt = world.runtime()
    try:
        run_once(rt)
    finally:
        rt.close()
    assert len(world.instructed()) == ORDERS
    world.drop(
        "shipments-1.csv",
        SHIP_HEADER,
        [f"S-{o},ITAKU,{o},TRK-{o},{AT},P-A,1" for o in orders]
        + [f"S-SHOP-{i},ITAKU,,,{AT},P-B,3" for i in range(5)],
    )
    world.drop("receipts-1.csv", RECEIPT_HEADER, [f"R-{i},ITAKU,{AT},P-A,7" for i in range(4)])
    world.sandbox.faults.update(latency_ms=40)

    ledger = world.sandbox.ledger
    assert run_killed_when(world, lambda: ledger.count("order.shipped") > 0) == -signal.SIGKILL
    shipped_at_kill = ledger.count("order.shipped")
    assert 0 < shipped_at_kill < ORDERS
    assert run_killed_when(world, lambda: len(st.ques) > 0) == -signal.SIGKILL
    world.sandbox.faults.update(latency_ms=0)
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-m", "daemon", "--config", str(world.config), "run", "--once"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode == 0:
            break
    assert done.returncode == 0, done.stdout + done.stderr

    assert sorted(ledger.shipped_order_ids()) == sorted(orders)  # each exactly once
    for order in orders:
        assert world.order(order)["receive_order_delivery_cut_form_id"] == f"TRK-{order}"
    st.process_ques()
    assert world.uploaded("A-1") == 4 * 7
    assert world.uploaded("B-2") == -5 * 3
    assert len(st.ques) == 1  # the upload adopted after the crash, never sent twice
    rt = world.runtime()
    try:
        with read_session(rt.engine) as session:
            events = session.scalar(select(func.count()).select_from(InboxEvent))
    finally:
        rt.close()
    assert events == ORDERS + 5 + 4
