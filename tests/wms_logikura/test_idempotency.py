"""A shipping schedule is never created twice: not after a connector died between the
request and its local record (a real process killed with SIGKILL, or an instance dropped
after a lost answer), not after the schedule was even shipped meanwhile; consignees too."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from plugins.wms_logikura import LogikuraConnector
from plugins.wms_logikura.errors import LogikuraUnavailable
from plugins.wms_logikura.sandbox import SandboxServer, WarehouseStaff
from tests.wms_logikura.conftest import (
    FakeTime,
    batch,
    connect,
    logikura_config,
    logikura_section,
    make_ctx,
    order,
    sandbox_config,
)

REPO = Path(__file__).resolve().parents[2]
PUSHER = """
import json, logging, sys
from pathlib import Path
import requests
from hooks.connectors import ConnectorContext, InstructionBatch
from hooks.records import OrderInstruction, OrderInstructionLine, WarehouseInfo
from datetime import datetime, UTC
from plugins.wms_logikura import LogikuraConfig, LogikuraConnector

config, state_dir, orders = json.loads(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
ctx = ConnectorContext(
    warehouses={"ITAKU": WarehouseInfo("ITAKU", "ITAKU", True, True)},
    is_known_product=lambda code: True, http=requests.Session(),
    clock=lambda: datetime.now(UTC), log=logging.getLogger("pusher"), state_dir=state_dir)
instructions = [OrderInstruction(
    ne_order_id=o, shop_order_id="", warehouse="ITAKU", order_date="2026-11-27",
    delivery_method="", consignee_name="山田", consignee_zip="", consignee_address="",
    consignee_tel="", lines=(OrderInstructionLine(1, "TSHIRT-Red-S", "TSHIRT-Red-S", 1),))
    for o in orders]
connector = LogikuraConnector(LogikuraConfig.model_validate(config))
connector.push_orders(InstructionBatch("crash-batch", datetime(2026, 11, 27, tzinfo=UTC),
                                       instructions), ctx)
"""


def schedule_rows(state_dir: Path) -> dict[str, tuple[str, int | None]]:
    with sqlite3.connect(state_dir / "logikura.sqlite3") as conn:
        return {
            r[0]: (r[1], r[2])
            for r in conn.execute("SELECT ne_order_id, state, schedule_id FROM schedule")
        }


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_sigkill_between_request_and_local_record(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    connector, ctx = connect(lk, tmp_path, http, clock)  # authorised, catalog cached
    settings = logikura_section(lk)
    lk.faults.stall_next(60, path="/api/v1/shipping_schedules", method="POST")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PUSHER,
            json.dumps(settings),
            str(tmp_path),
            json.dumps(["1", "2", "3"]),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: lk.ledger.count("schedule.create") == 1)
        os.kill(process.pid, signal.SIGKILL)  # Logikura created it; the answer never came
    finally:
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert schedule_rows(tmp_path) == {"1": ("sending", None)}

    again = batch("crash-batch", *(order(o, ("TSHIRT-Red-S", 1)) for o in ("1", "2", "3")))
    connector.push_orders(again, ctx)
    assert lk.ledger.schedules_created() == {"1": 1, "2": 1, "3": 1}
    first = lk.state.schedules_for("1")[0]["id"]
    assert schedule_rows(tmp_path)["1"] == ("created", first)
    connector.push_orders(again, ctx)
    assert lk.ledger.schedules_created() == {"1": 1, "2": 1, "3": 1}


def test_lost_answer_then_a_new_instance_reconciles(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    connector, ctx = connect(lk, tmp_path, http, clock)
    lk.faults.drop_next(when="after", path="/api/v1/shipping_schedules", method="POST")
    work = batch("lost", order("7", ("TSHIRT-Red-S", 1)), order("8", ("Mug-Red-S", 1)))
    with pytest.raises(LogikuraUnavailable) as lost:
        connector.push_orders(work, ctx)
    assert lost.value.ambiguous
    assert lk.ledger.schedules_created() == {"7": 1}
    del connector  # the instance is gone; only the local store remembers "sending"

    staff = WarehouseStaff(lk.base_url)
    schedule = lk.state.schedules_for("7")[0]["id"]
    staff.start(schedule, "ITAKU")
    staff.ship(schedule)  # shipped before nebridge came back: found among the histories
    staff.close()
    revived = LogikuraConnector(logikura_config(lk), clock=clock, sleep=clock.sleep)
    revived.push_orders(work, make_ctx(tmp_path, http, clock))
    assert lk.ledger.schedules_created() == {"7": 1, "8": 1}
    assert schedule_rows(tmp_path)["7"] == ("created", schedule)


def test_refused_order_is_not_left_in_doubt(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    connector, ctx = connect(lk, tmp_path, http, clock, default_delivery_method="bad_code")
    with pytest.raises(Exception, match="order 9"):
        connector.push_orders(batch("b", order("9", ("TSHIRT-Red-S", 1))), ctx)
    assert "9" not in schedule_rows(tmp_path)  # refused outright: nothing to reconcile


def test_consignee_created_once_after_a_lost_answer(tmp_path: Path, http: requests.Session) -> None:
    with SandboxServer(sandbox_config(consignee_code_unique=False)) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        lk.faults.drop_next(when="after", path="/api/v1/consignees", method="POST")
        work = batch("c", order("11", ("TSHIRT-Red-S", 1)))
        with pytest.raises(LogikuraUnavailable):
            connector.push_orders(work, ctx)
        connector.push_orders(work, ctx)
        assert lk.ledger.count("consignee.create") == 1
        assert lk.ledger.schedules_created() == {"11": 1}
