"""A large order import never holds back shipments, and SIGTERM stops it at the next order
(issue #20, finding 8): the real daemon (``nebridge run``, a subprocess) between the Next
Engine and Logikura sandboxes, with every schedule creation slowed down in Logikura."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.admin import run_once
from daemon.runtime import build_runtime
from daemon.sandbox import SandboxConfig as NeConfig
from daemon.sandbox import SandboxServer as NeSandbox
from plugins.wms_logikura.sandbox import SandboxServer, WarehouseStaff
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory
from tests.test_supervisor import NotifySocket, start, wait_exit
from tests.wms_logikura.conftest import (
    link_both,
    logikura_section,
    sandbox_config,
)

ORDERS = 60
SCHEDULES = "/api/v1/shipping_schedules"


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


def wait_for(predicate: Callable[[], bool], what: str, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached")


def test_shipments_flow_while_a_large_import_runs_and_sigterm_stops_it(
    make_config: ConfigFactory, notify: NotifySocket, tmp_path: Path
) -> None:
    with (
        NeSandbox(
            NeConfig(
                client_id="ne-flow",
                client_secret="ne-flow-secret",
                seed_size=0,
                que_processing_delay_s=0.1,
            )
        ) as ne,
        SandboxServer(sandbox_config(seed_size=0, clock_frozen=False)) as lk,
    ):
        config = make_config(
            nextengine={
                "api_base": ne.base_url,
                "login_base": ne.base_url,
                "client_id": "ne-flow",
                "client_secret": "ne-flow-secret",
            },
            dispatch={"queue_poll_seconds": 0.05, "queue_timeout_seconds": 30},
            warehouses=[{"code": "ITAKU", "ne_linked": True, "import_orders": True}],
            schedule={
                "interval_seconds": 2,
                "jitter_seconds": 0,
                "dispatch_interval_seconds": 1,
                "intake_poll_seconds": 0.2,
            },
            plugins=DEFAULT_PLUGINS,
            wms={
                "connector": "logikura",
                "logikura": logikura_section(
                    lk,
                    poll_seconds=0.5,
                    products_refresh_seconds=300,
                    delivery_methods={"ヤマト運輸(宅急便)": "yamato_b2"},
                ),
            },
        )
        ne.state.create_goods("A-1", quantity=500)
        lk.state.add_variant("LK-A", link_code="a-1", stock={"ITAKU": 500})
        link_both(config, ne, lk)
        orders = [ne.state.create_order([("A-1", 1)], shop_id=1) for _ in range(ORDERS)]
        first = str(orders[0])
        lk.faults.stall_next(1.0, count=10_000, path=SCHEDULES, method="POST")

        staff = WarehouseStaff(lk.base_url)
        proc = start(config, notify, tmp_path / "daemon.log")
        try:
            notify.wait_for("READY=1")
            wait_for(
                lambda: lk.ledger.count("schedule.create", order_number=first) == 1,
                "the first order's schedule",
            )
            schedule = lk.state.schedules_for(first)[0]["id"]
            staff.set_tracking(schedule, "4912-7001")
            staff.start(schedule, "ITAKU")
            staff.ship(schedule)
            wait_for(
                lambda: orders[0] in ne.ledger.shipped_order_ids(), "the shipment in Next Engine"
            )
            assert lk.ledger.count("schedule.create") < ORDERS  # the import still runs
            # several 2 s intervals pass while the import runs: its job skips them quietly
            wait_for(lambda: lk.ledger.count("schedule.create") >= 6, "six schedules")
            proc.send_signal(signal.SIGTERM)
            assert wait_exit(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            staff.close()
        log = (tmp_path / "daemon.log").read_text()
        assert "maximum number of running instances" not in log
        assert " ERROR " not in log  # a stop is no failure: nothing for a person to look at
        created = lk.ledger.schedules_created()
        assert len(created) < ORDERS and set(created.values()) == {1}  # stopped mid-import

        lk.faults.reset()
        runtime = build_runtime(config)
        try:
            run_once(runtime)  # the next start delivers the rest, nothing twice
        finally:
            runtime.close()
        assert lk.ledger.schedules_created() == {str(o): 1 for o in orders}
        assert ne.ledger.shipped_order_ids() == [orders[0]]
