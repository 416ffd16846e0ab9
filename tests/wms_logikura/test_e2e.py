"""The whole seed scenario, Logikura sandbox ⇄ nebridge ⇄ Next Engine sandbox, over HTTP:
in-process through the real engine, and as ``nebridge demo --wms logikura``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.admin import RunOnceReport, run_once
from daemon.runtime import build_runtime
from daemon.sandbox import SandboxConfig as NeConfig
from daemon.sandbox import SandboxServer as NeSandbox
from plugins.wms_logikura.sandbox import SandboxServer, WarehouseStaff
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory
from tests.wms_logikura.conftest import (
    link_both,
    logikura_section,
    sandbox_config,
)


@dataclass
class Linked:
    """Both sandboxes, the configuration linking them, the warehouse staff."""

    ne: NeSandbox
    lk: SandboxServer
    config: Path
    staff: WarehouseStaff

    def once(self) -> RunOnceReport:
        runtime = build_runtime(self.config)
        try:
            return run_once(runtime)
        finally:
            runtime.close()


@pytest.fixture
def linked(make_config: ConfigFactory) -> Iterator[Linked]:
    with (
        NeSandbox(
            NeConfig(
                client_id="ne-e2e",
                client_secret="ne-e2e-secret",
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
                "client_id": "ne-e2e",
                "client_secret": "ne-e2e-secret",
            },
            dispatch={"queue_poll_seconds": 0.05, "queue_timeout_seconds": 30},
            warehouses=[
                {"code": "ITAKU", "ne_linked": True, "import_orders": True},
                {"code": "SHINJUKU"},
                {"code": "ASAKUSA"},
            ],
            plugins=DEFAULT_PLUGINS,
            wms={
                "connector": "logikura",
                "logikura": logikura_section(
                    lk,
                    products_refresh_seconds=0,
                    delivery_methods={"ヤマト運輸(宅急便)": "yamato_b2"},
                ),
            },
        )
        link_both(config, ne, lk)
        staff = WarehouseStaff(lk.base_url)
        yield Linked(ne, lk, config, staff)
        staff.close()


def test_seed_scenario_end_to_end(linked: Linked) -> None:
    ne, lk, staff = linked.ne, linked.lk, linked.staff
    for code, stock in (("A-1", 10), ("B-2", 5), ("C-3", 20)):
        ne.state.create_goods(code, quantity=stock)
    lk.state.add_variant("LK-A", link_code="a-1", stock={"ITAKU": 10})
    lk.state.add_variant("LK-B", link_code="B-2", stock={"ITAKU": 1, "SHINJUKU": 5})
    lk.state.add_variant("LK-C", link_code="C-3", stock={"ITAKU": 9, "ASAKUSA": 9})
    o1 = ne.state.create_order([("A-1", 2)], shop_id=1)
    o2 = ne.state.create_order([("B-2", 3), ("A-1", 1)], shop_id=1)
    o3 = ne.state.create_order([("NOPE-9", 1)], shop_id=1)

    first = linked.once()
    assert lk.ledger.schedules_created() == {str(o1): 1, str(o2): 1}
    assert any(f"order {o3} held" in n for s in first.stages for n in s.notices)
    linked.once()  # nothing is created twice
    assert lk.ledger.schedules_created() == {str(o1): 1, str(o2): 1}

    s1 = lk.state.schedules_for(str(o1))[0]["id"]
    s2 = lk.state.schedules_for(str(o2))[0]["id"]
    staff.set_tracking(s1, "4912-0001")
    staff.start(s1, "ITAKU")
    staff.ship(s1)
    staff.receive("ITAKU", [("LK-B", 4)], received_date=lk.clock.today().isoformat())
    staff.start(s2, "ITAKU")  # B-2 was short until the receipt
    staff.ship(s2)
    staff.ship_direct("ITAKU", [("LK-C", 4)], order_number="W-1001")
    second = staff.ship_direct("SHINJUKU", [("LK-B", 1)], order_number=str(o1))
    staff.ship_direct("ASAKUSA", [("LK-C", 2)])
    report = linked.once()
    assert report.problems == []  # o1's second shipment is held in front of a person
    assert [i.key for i in report.attention.items if i.key.startswith("logikura:")] == [
        f"logikura:shipping_history:{second['id']}"
    ]
    assert ne.ledger.shipped_order_ids() == [o1, o2]
    assert ne.state.order_snapshot(o1)["receive_order_delivery_cut_form_id"] == "4912-0001"
    assert not ne.state.order_snapshot(o2)["receive_order_delivery_cut_form_id"]

    def uploaded(code: str) -> int:
        return sum(e.delta or 0 for e in ne.ledger.entries(kind="stock.upload", goods_code=code))

    assert (uploaded("C-3"), uploaded("B-2"), uploaded("A-1")) == (-4, 4, 0)

    again = linked.once()  # a new instance re-reads the window: duplicates, no new work
    assert again.problems == [] and again.intake is not None and again.intake.events == 0
    assert ne.ledger.shipped_order_ids() == [o1, o2] and uploaded("C-3") == -4
    assert lk.state.traffic.rate_limited() == 0


def test_demo_with_logikura_passes_its_own_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon",
            "demo",
            "--wms",
            "logikura",
            "--dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "demo check passed against both sandboxes" in " ".join(result.stderr.split())
    assert (tmp_path / "demo" / "state" / "logikura-tokens.json").is_file()
