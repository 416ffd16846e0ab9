"""A schedule POST Logikura applies after the client gave up is not sent again: the order
waits ``schedule_settle_seconds`` after its request and is looked up again first (issue #20,
finding 9). A request that never arrived is sent again once that time has passed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from plugins.wms_logikura.errors import LogikuraUnavailable
from plugins.wms_logikura.sandbox import SandboxServer
from tests.wms_logikura.conftest import FakeTime, batch, connect, order

SCHEDULES = "/api/v1/shipping_schedules"
SETTLE = 30.0


def wait_for(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def schedule_posts(lk: SandboxServer) -> int:
    return sum(1 for r in lk.state.traffic.requests() if r.method == "POST" and r.path == SCHEDULES)


def test_a_post_applied_after_the_timeout_is_not_repeated(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    connector, ctx = connect(
        lk, tmp_path, http, clock, timeout_seconds=0.3, schedule_settle_seconds=SETTLE
    )
    work = batch("late", order("131", ("TSHIRT-Red-S", 1)))
    lk.faults.apply_late_next(1.5, path=SCHEDULES, method="POST")
    with pytest.raises(LogikuraUnavailable) as lost:
        connector.push_orders(work, ctx)
    assert lost.value.ambiguous
    assert lk.ledger.schedules_created() == {}  # not applied yet: Logikura is still at it

    with pytest.raises(LogikuraUnavailable, match="may still be applying"):
        connector.push_orders(work, ctx)  # the next run: nothing found, but too early

    wait_for(lambda: schedule_posts(lk) >= 1)  # the late request is answered (to nobody)
    assert schedule_posts(lk) == 1
    assert lk.ledger.schedules_created() == {"131": 1}
    clock.advance(SETTLE)
    connector.push_orders(work, ctx)  # looked up again: found, recorded, not sent
    assert schedule_posts(lk) == 1
    assert lk.ledger.schedules_created() == {"131": 1}
    connector.push_orders(work, ctx)
    assert lk.ledger.schedules_created() == {"131": 1}


def test_a_post_that_never_arrived_is_sent_once_settled(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    connector, ctx = connect(lk, tmp_path, http, clock, schedule_settle_seconds=SETTLE)
    work = batch("dropped", order("140", ("TSHIRT-Red-S", 1)), order("141", ("Mug-Red-S", 1)))
    lk.faults.drop_next(when="before", path=SCHEDULES, method="POST")
    with pytest.raises(LogikuraUnavailable):
        connector.push_orders(work, ctx)
    with pytest.raises(LogikuraUnavailable, match=r"order.*140.*schedule_settle_seconds"):
        connector.push_orders(work, ctx)
    assert lk.ledger.schedules_created() == {"141": 1}  # the other order did not wait
    clock.advance(SETTLE)
    connector.push_orders(work, ctx)
    assert lk.ledger.schedules_created() == {"140": 1, "141": 1}
