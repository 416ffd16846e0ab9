"""Next Engine shows exactly what the warehouse did (issue #20: 1, 2, 3, 4, 5, 10).

Warehouse staff act in the Logikura sandbox as they do in Logikura's screens (renumber a
schedule, ship short, ship a second parcel, book backdated receipts, delete a schedule or a
receipt, correct a tracking number) and Logikura answers malformed records or fails; nebridge
runs through its CLI (``run --once --json``, ``inbox retry``, ``status --json``) against both
sandboxes over HTTP. Whatever nebridge cannot apply exactly is held and in front of a person.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon.cli import app
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
class Site:
    """Both sandboxes, nebridge's configuration and the warehouse staff."""

    ne: NeSandbox
    lk: SandboxServer
    config: Path
    staff: WarehouseStaff

    def cli(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["--config", str(self.config), *args])
        return result.exit_code, result.stdout

    def once(self) -> tuple[int, dict[str, Any]]:
        """``nebridge run --once --json``: exit code and report."""
        code, out = self.cli("run", "--once", "--json")
        return code, json.loads(out)

    def schedule(self, order_id: int) -> int:
        return int(self.lk.state.schedules_for(str(order_id))[0]["id"])

    def uploaded(self, code: str) -> int:
        """Net stock change nebridge uploaded to Next Engine for a goods code."""
        return sum(
            e.delta or 0 for e in self.ne.ledger.entries(kind="stock.upload", goods_code=code)
        )


def items(report: dict[str, Any], prefix: str = "logikura:") -> dict[str, dict[str, Any]]:
    """The Logikura attention items of a report, by key."""
    return {i["key"]: i for i in report["attention"]["items"] if i["key"].startswith(prefix)}


SiteFactory = Callable[..., Site]


@pytest.fixture
def site(make_config: ConfigFactory) -> Iterator[SiteFactory]:
    opened: list[tuple[NeSandbox, SandboxServer, WarehouseStaff]] = []

    def build(
        warehouses: tuple[str, ...] = ("ITAKU", "SHINJUKU", "ASAKUSA"), **logikura: Any
    ) -> Site:
        """Both sandboxes linked; histories are read from a week back (``start_date``)."""
        ne = NeSandbox(
            NeConfig(
                client_id="ne-h5",
                client_secret="ne-h5-secret",
                seed_size=0,
                que_processing_delay_s=0.05,
            )
        ).__enter__()
        lk = SandboxServer(sandbox_config(seed_size=0, clock_frozen=False)).__enter__()
        config = make_config(
            nextengine={
                "api_base": ne.base_url,
                "login_base": ne.base_url,
                "client_id": "ne-h5",
                "client_secret": "ne-h5-secret",
            },
            dispatch={"queue_poll_seconds": 0.05, "queue_timeout_seconds": 30},
            warehouses=[
                {"code": w, "ne_linked": w == "ITAKU", "import_orders": w == "ITAKU"}
                for w in warehouses
            ],
            plugins=DEFAULT_PLUGINS,
            wms={
                "connector": "logikura",
                "logikura": logikura_section(
                    lk,
                    products_refresh_seconds=0,
                    delivery_methods={"ヤマト運輸(宅急便)": "yamato_b2"},
                    start_date=(lk.clock.today() - timedelta(days=7)).isoformat(),
                    **logikura,
                ),
            },
        )
        link_both(config, ne, lk)
        staff = WarehouseStaff(lk.base_url)
        opened.append((ne, lk, staff))
        return Site(ne, lk, config, staff)

    yield build
    for ne, lk, staff in opened:
        staff.close()
        lk.__exit__(None, None, None)
        ne.__exit__(None, None, None)


def stocked(site: Site, *lines: tuple[str, str, int]) -> None:
    """Goods in Next Engine and linked variants in Logikura: (NE code, LK code, stock)."""
    for ne_code, lk_code, quantity in lines:
        site.ne.state.create_goods(ne_code, quantity=quantity)
        site.lk.state.add_variant(
            lk_code,
            link_code=ne_code,
            stock={"ITAKU": quantity, "SHINJUKU": quantity, "ASAKUSA": quantity},
        )


def test_shipments_follow_nebridges_own_schedule_record(site: SiteFactory) -> None:
    s = site()
    stocked(s, ("A-1", "LK-A", 10))
    o33 = s.ne.state.create_order([("A-1", 2)], shop_id=1)
    o39 = s.ne.state.create_order([("A-1", 1)], shop_id=1)
    assert s.once()[0] == 0
    s33, s39 = s.schedule(o33), s.schedule(o39)
    s.staff.renumber(s33, str(o39))  # staff typed another order's number
    s.staff.set_tracking(s33, "T-33")
    s.staff.start(s33, "ITAKU")
    s.staff.ship(s33)
    s.staff.renumber(s39, None)  # and blanked one
    s.staff.start(s39, "ITAKU")
    s.staff.ship(s39)

    code, report = s.once()
    assert code == 1 and not report["ok"]
    held = items(report)
    renumbered = held[f"logikura:shipping_history:{s33}"]
    assert f"order {o33}" in renumbered["reason"] and f"'{o39}'" in renumbered["reason"]
    assert f"nebridge inbox retry logikura:shipping_history:{s33}" in renumbered["fix"]
    assert "no order number" in held[f"logikura:shipping_history:{s39}"]["reason"]
    assert s.ne.ledger.shipped_order_ids() == []
    assert s.uploaded("A-1") == 0  # the blanked one is not "another channel's" shipment

    assert s.cli("inbox", "retry", f"logikura:shipping_history:{s33}")[0] == 0
    code, report = s.once()
    assert s.ne.ledger.shipped_order_ids() == [o33]  # 33, as recorded, not 39
    assert s.ne.state.order_snapshot(o33)["receive_order_delivery_cut_form_id"] == "T-33"
    assert f"logikura:shipping_history:{s33}" not in items(report)
    assert f"logikura:shipping_history:{s39}" in items(report)
    assert s.uploaded("A-1") == 0


def test_a_partial_shipment_never_ships_the_whole_order(site: SiteFactory) -> None:
    s = site()
    stocked(s, ("A-1", "LK-A", 10), ("B-2", "LK-B", 10))
    order = s.ne.state.create_order([("A-1", 2), ("B-2", 1)], shop_id=1)
    s.once()
    sid = s.schedule(order)
    s.staff.start(sid, "ITAKU")
    s.staff.ship_partial(sid, {"LK-A": 1})
    assert s.lk.state.stock("ITAKU", "LK-A")["quantity"] == 9

    assert s.cli("run", "--once", "--dry-run", "--json")[0] == 1  # a dry run first
    code, report = s.once()  # the hold is still reported: nothing was lost to the dry run
    assert code == 1
    item = items(report)[f"logikura:shipping_history:{sid}"]
    assert "LK-A: shipped 1 of 2" in item["reason"] and "partial" in item["reason"]
    assert "受注分割" in item["fix"] and "ship the rest" in item["fix"]
    assert s.ne.ledger.shipped_order_ids() == []
    assert (s.uploaded("A-1"), s.uploaded("B-2")) == (0, 0)  # never more than shipped
    assert s.once()[1]["intake"]["rejected"] == []  # held once, not re-reported as new


def test_second_shipments_and_unlisted_warehouses_are_not_dropped(site: SiteFactory) -> None:
    s = site(warehouses=("ITAKU", "SHINJUKU"))
    stocked(s, ("A-1", "LK-A", 10))
    first = s.ne.state.create_order([("A-1", 1)], shop_id=1)
    other = s.ne.state.create_order([("A-1", 1)], shop_id=1)
    s.once()
    s1, s2 = s.schedule(first), s.schedule(other)
    s.staff.set_tracking(s1, "T-1")
    s.staff.start(s1, "ITAKU")
    s.staff.ship(s1)
    s.staff.start(s2, "ASAKUSA")  # nebridge's schedule, shipped from an unlisted warehouse
    s.staff.ship(s2)
    code, report = s.once()
    assert s.ne.ledger.shipped_order_ids() == [first]
    unlisted = items(report)[f"logikura:shipping_history:{s2}"]
    assert "ASAKUSA" in unlisted["reason"] and "daemon.yaml" in unlisted["fix"]

    parcel = s.staff.ship_direct(
        "ITAKU", [("LK-A", 1)], order_number=str(first), tracking_number="T-2"
    )
    s.staff.ship_direct("ASAKUSA", [("LK-A", 2)], order_number="W-7")  # wholesale
    code, report = s.once()
    assert code == 1
    second = items(report)[f"logikura:shipping_history:{parcel['id']}"]
    assert "second shipment" in second["reason"] and "T-2" in second["reason"]
    assert "備考" in second["fix"]
    assert s.ne.ledger.shipped_order_ids() == [first]
    asakusa = s.lk.state.warehouse_by_code("ASAKUSA").id
    wholesale = items(report)[f"logikura:unlisted_warehouse:{asakusa}:shipping_histories"]
    assert wholesale["severity"] == "warning" and "ignore_warehouses" in wholesale["fix"]
    assert s.uploaded("A-1") == 0

    source = f"logikura:shipping_history:{parcel['id']}"
    assert f"{source}:leave" in second["fix"]  # the admin noted T-2 in Next Engine by hand
    assert s.cli("inbox", "retry", f"{source}:leave")[0] == 0
    code, report = s.once()
    assert source not in items(report)
    assert s.ne.ledger.shipped_order_ids() == [first] and s.uploaded("A-1") == 0


def test_malformed_histories_are_rejected_alone(site: SiteFactory) -> None:
    s = site()
    stocked(s, ("A-1", "LK-A", 50))
    made = [
        s.staff.ship_direct("ITAKU", [("LK-A", 1)], order_number=f"W-{n}")["id"] for n in range(7)
    ]
    variant = s.lk.state.variant_by_code("LK-A").id
    s.staff.garble("shipment", made[0], progress_state="shipping")
    s.staff.garble(
        "shipment",
        made[1],
        shipping_items=[{"product_variant_id": variant, "shipping_quantity": None}],
    )
    s.staff.garble("shipment", made[2], warehouse_id="ITAKU")
    s.staff.garble("shipment", made[3], shipping_items=[None])
    s.staff.garble("shipment", made[4], sales_order="39")
    s.staff.garble("shipment", made[6], id=None)
    code, report = s.once()
    assert code == 1
    rejected = report["intake"]["rejected"]
    assert rejected == [f"logikura:shipping_history:{i}" for i in made[:5]]
    assert [a for a in report["intake"]["accepted"] if "_history:" in a] == [
        f"logikura:shipping_history:{made[5]}"
    ]
    assert s.uploaded("A-1") == -1  # the good one flowed
    assert "without an integer id" in items(report)["logikura:shipping_histories:no_id"]["reason"]
    code, out = s.cli("inbox", "list", "--state", "rejected", "--json")
    reasons = json.dumps(json.loads(out), ensure_ascii=False)
    for text in (
        "progress_state is 'shipping'",
        "every shipping_quantity is null",
        "warehouse_id 'ITAKU'",
        "item 1 is None",
        "sales_order '39'",
    ):
        assert text in reasons, text


def test_read_failures_fail_the_run_and_are_reported(site: SiteFactory) -> None:
    s = site()
    stocked(s, ("A-1", "LK-A", 10))
    s.lk.state.faults.fail_next(503, count=10, path="/api/v1/shipping_histories")
    code, report = s.once()
    assert code == 1 and not report["ok"]
    assert any("shipments" in p and "503" in p for p in report["problems"])
    failed = items(report)["logikura:read_failed:shipping_histories"]
    assert failed["kind"] == "wms_read_failed"
    s.lk.state.faults.reset()
    code, report = s.once()  # Logikura is back: the item closes by itself
    assert "logikura:read_failed:shipping_histories" not in items(report)

    shinjuku = s.lk.state.warehouse_by_code("SHINJUKU")
    shinjuku.code = "SHINJUKU-2"  # renamed by staff
    s.staff.receive("SHINJUKU-2", [("LK-A", 3)], received_date=s.lk.clock.today().isoformat())
    code, report = s.once()
    renamed = items(report)["logikura:warehouse:SHINJUKU"]
    assert "SHINJUKU-2" in renamed["reason"] and "warehouse_codes" in renamed["fix"]
    assert any(a.endswith(":1") for a in report["intake"]["accepted"])  # still read
    shinjuku.code = "SHINJUKU"  # named back: the warning closes
    assert "logikura:warehouse:SHINJUKU" not in items(s.once()[1])

    s.lk.state.expire_access_tokens()
    s.lk.state.expire_refresh_tokens()
    code, report = s.once()
    assert code == 1
    assert any("nebridge wms connect" in p for p in report["problems"])
    lost = items(report)["logikura:read_failed:product_master"]
    assert lost["kind"] == "wms_auth_lost" and "nebridge wms connect" in lost["fix"]
    code, out = s.cli("status", "--json")
    assert json.loads(out)["attention"]["counts"].get("wms_auth_lost", 0) >= 1
    code, out = s.cli("doctor")
    assert "wait for a person" in out, out


def test_deleted_records_and_tracking_corrections_are_reported(site: SiteFactory) -> None:
    s = site(sweep_hours=0)  # every poll reads the whole window
    stocked(s, ("A-1", "LK-A", 10))
    kept = s.ne.state.create_order([("A-1", 1)], shop_id=1)
    dropped = s.ne.state.create_order([("A-1", 1)], shop_id=1)
    s.once()
    receipt = s.staff.receive("ITAKU", [("LK-A", 5)], received_date=s.lk.clock.today().isoformat())
    s.staff.set_tracking(s.schedule(kept), "T-1")
    s.staff.start(s.schedule(kept), "ITAKU")
    s.staff.ship(s.schedule(kept))
    gone = s.schedule(dropped)
    s.staff.delete_schedule(gone)
    code, report = s.once()
    assert s.uploaded("A-1") == 5 and s.ne.ledger.shipped_order_ids() == [kept]
    deleted = items(report)[f"logikura:shipping_history:{gone}:deleted"]
    assert f"order {dropped}" in deleted["reason"]

    s.staff.delete_receipt(receipt["id"])
    s.staff.correct_tracking(s.schedule(kept), "T-9")
    code, report = s.once()
    assert code == 1 and report["intake"]["rejected"] == []  # no "conflict"
    source = f"logikura:receiving_history:{receipt['id']}"
    assert "deleted in Logikura" in items(report)[f"{source}:deleted"]["reason"]
    changed = items(report)[f"logikura:shipping_history:{s.schedule(kept)}:changed"]
    assert "T-1 to T-9" in changed["reason"] and "発送伝票番号" in changed["fix"]
    assert s.ne.state.order_snapshot(kept)["receive_order_delivery_cut_form_id"] == "T-1"
    assert s.uploaded("A-1") == 5  # nebridge does not guess

    assert s.cli("inbox", "retry", source)[0] == 0  # the admin corrected NE stock by hand
    assert s.cli("inbox", "retry", f"logikura:shipping_history:{gone}")[0] == 0
    code, report = s.once()
    assert f"{source}:deleted" not in items(report)
    assert f"logikura:shipping_history:{gone}:deleted" not in items(report)
    assert f"logikura:shipping_history:{s.schedule(kept)}:changed" in items(report)


def test_backdated_histories_reach_next_engine(site: SiteFactory) -> None:
    s = site()
    today = s.lk.clock.today()
    stocked(s, ("A-1", "LK-A", 10))
    assert s.once()[0] == 0
    three_days_ago = (today - timedelta(days=3)).isoformat()
    s.staff.receive("ITAKU", [("LK-A", 4)], received_date=three_days_ago)  # entered today
    s.staff.ship_direct("ITAKU", [("LK-A", 1)], order_number="W-9", shipped_date=three_days_ago)
    code, report = s.once()
    assert code == 0, report["problems"]
    assert s.uploaded("A-1") == 3
