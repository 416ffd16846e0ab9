"""Orders cancelled or edited in Next Engine after import, with Logikura (issue #15).

Both sandboxes over HTTP, the real CLI: the idle shipping schedule of a cancelled order is
deleted; an edited order's schedule is deleted and a new one created with its new content;
when picking already started Logikura refuses the deletion (422) and the order waits in
``nebridge attention`` ("stop picking …", also told to the staff's webhook) while nebridge
keeps watching; the goods shipped
anyway never ship the cancelled order in Next Engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.cli.demo import StaffInbox, notify_receiver
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
    told: StaffInbox

    def cli(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, ["--config", str(self.config), *args])
        return result.exit_code, result.stdout, " ".join(result.stderr.split())

    def run(self) -> None:
        code, _out, err = self.cli("run", "--once")
        assert code in (0, 1), err  # 1: something waits for a person

    def schedule(self, order: int) -> dict[str, object]:
        (found,) = self.lk.state.schedules_for(str(order))
        return dict(found)


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
        notify_receiver() as told,
    ):
        config = make_config(
            nextengine={
                "api_base": ne.base_url,
                "login_base": ne.base_url,
                "client_id": "ne-e2e",
                "client_secret": "ne-e2e-secret",
            },
            dispatch={"queue_poll_seconds": 0.05, "queue_timeout_seconds": 30},
            warehouses=[{"code": "ITAKU", "ne_linked": True, "import_orders": True}],
            plugins={
                **DEFAULT_PLUGINS,
                "order_watch": {"enabled": True},
                "notify_webhook": {"enabled": True, "format": "json", "url": told.url},
            },
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
        yield Linked(ne, lk, config, staff, told)
        staff.close()


def test_cancel_and_edit_delete_idle_schedules_and_a_started_one_goes_to_attention(
    linked: Linked,
) -> None:
    ne, lk, staff = linked.ne, linked.lk, linked.staff
    ne.state.create_goods("A-1", quantity=50)
    lk.state.add_variant("LK-A", link_code="A-1", stock={"ITAKU": 50})
    o1 = ne.state.create_order([("A-1", 1)], shop_id=1)
    o2 = ne.state.create_order([("A-1", 2)], shop_id=1)
    o3 = ne.state.create_order([("A-1", 3)], shop_id=1)
    linked.run()
    assert lk.ledger.schedules_created() == {str(o1): 1, str(o2): 1, str(o3): 1}
    old_consignee = linked.schedule(o2)["consignee_id"]
    s3 = int(linked.schedule(o3)["id"])  # type: ignore[call-overload]
    staff.start(s3, "ITAKU")  # picking of o3 started

    ne.state.human_edit(o1, {"receive_order_cancel_type_id": "1"})
    ne.state.human_edit(o2, {"receive_order_consignee_address1": "大阪府大阪市北区1-1"})
    ne.state.human_edit(o3, {"receive_order_cancel_type_id": "1"})
    linked.run()
    assert lk.state.schedules_for(str(o1)) == []  # deleted while idle
    assert lk.ledger.schedules_created() == {str(o1): 1, str(o2): 2, str(o3): 1}
    assert linked.schedule(o2)["consignee_id"] != old_consignee  # the new address
    assert linked.schedule(o3)["id"] == s3  # Logikura refused: picking started

    code, out, err = linked.cli("attention", "--json")
    assert code in (0, 1), err
    items = {i["key"]: i for i in json.loads(out)["items"]}
    stop = items[f"order_watch:stop:{o3}"]
    assert stop["reason"].startswith(
        f"stop picking order {o3} in ITAKU: cancelled in Next Engine at "
    )
    assert "picking started" in stop["reason"] and f"history --order {o3}" in stop["fix"]
    assert f"order_watch:stop:{o1}" not in items and f"order_watch:stop:{o2}" not in items
    assert f"order_watch:stop:{o3}" in {str(m.get("key")) for m in linked.told.messages}

    linked.run()  # nothing deleted or created twice; the refusal stays in front of a person
    assert lk.ledger.schedules_created() == {str(o1): 1, str(o2): 2, str(o3): 1}
    code, out, _err = linked.cli("attention", "--json")
    keys = {i["key"] for i in json.loads(out)["items"]}
    assert f"order_watch:stop:{o3}" in keys
    assert not [k for k in keys if k.startswith("logikura:")], keys  # not "deleted by staff"

    staff.ship(s3)  # shipped anyway
    s2 = int(linked.schedule(o2)["id"])  # type: ignore[call-overload]
    staff.start(s2, "ITAKU")
    staff.ship(s2)
    linked.run()
    linked.run()
    assert ne.ledger.shipped_order_ids() == [o2]  # never the cancelled o3
    code, out, _err = linked.cli("attention", "--json")
    keys = {i["key"]: i for i in json.loads(out)["items"]}
    assert f"order_watch:stop:{o3}" not in keys  # what happened physically replaces it
    assert keys[f"order_watch:shipped:{o3}"]["reason"].startswith(
        f"goods left ITAKU for order {o3}, which was cancelled in Next Engine"
    )
    code, out, _err = linked.cli("history", "--order", str(o3), "--json")
    steps = json.loads(out)["steps"]
    assert any(
        "cancelled in Next Engine" in s["what"] and "refused" in s["detail"] for s in steps
    ), steps
