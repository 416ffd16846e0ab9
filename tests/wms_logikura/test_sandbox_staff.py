"""The Logikura sandbox plays the staff actions of issue #20 over HTTP: renumber and delete a
schedule, ship short, correct a shipped history's tracking number, delete a receipt, and
answer malformed histories (``/_sandbox/staff/garble``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugins.wms_logikura.sandbox import SandboxServer, StaffError, WarehouseStaff


@pytest.fixture
def staff(lk: SandboxServer) -> Iterator[WarehouseStaff]:
    with_staff = WarehouseStaff(lk.base_url)
    yield with_staff
    with_staff.close()


def schedule(staff: WarehouseStaff, number: str, quantity: int) -> int:
    variant = staff.variant_id("Mug-Red-S")
    body = {
        "sales_order": {"order_number": number},
        "shipping_schedule": {
            "consignee_id": staff.consignee_id("W-001"),
            "shipping_composite_items": [],
            "shipping_items": [
                {"product_variant_id": variant, "sales_order_quantity": quantity, "price": 0}
            ],
        },
    }
    return int(staff.call("POST", "/api/v1/shipping_schedules", body)["shipping_schedule"]["id"])


def test_staff_actions_over_http(lk: SandboxServer, staff: WarehouseStaff) -> None:
    before = lk.state.stock("ITAKU", "Mug-Red-S")["quantity"]
    sid = schedule(staff, "33", 2)
    assert staff.renumber(sid, "39")["sales_order"]["order_number"] == "39"
    assert staff.renumber(sid, None)["sales_order"]["order_number"] is None
    staff.start(sid, "ITAKU")
    shipped = staff.ship_partial(sid, {"Mug-Red-S": 1})["shipping_schedule"]
    assert [
        (i["sales_order_quantity"], i["shipping_quantity"]) for i in shipped["shipping_items"]
    ] == [(2, 1)]
    assert lk.state.stock("ITAKU", "Mug-Red-S")["quantity"] == before - 1
    corrected = staff.correct_tracking(sid, "T-9")
    assert corrected["tracking_number"] == "T-9"
    assert lk.ledger.count("history.tracking") == 1

    idle = schedule(staff, "40", 1)
    staff.delete_schedule(idle)
    with pytest.raises(StaffError) as gone:
        staff.call("GET", f"/api/v1/shipping_schedules/{idle}")
    assert gone.value.status == 404

    receipt = staff.receive("ITAKU", [("Mug-Red-S", 5)], received_date="2026-11-01")
    staff.delete_receipt(receipt["id"])
    assert lk.state.stock("ITAKU", "Mug-Red-S")["quantity"] == before - 1
    with pytest.raises(StaffError):
        staff.delete_receipt(receipt["id"])

    staff.garble("shipment", sid, warehouse_id="ITAKU", sales_order="39")
    listed = staff.get_all("/api/v1/shipping_histories", "shipping_histories")
    assert (listed[0]["warehouse_id"], listed[0]["sales_order"]) == ("ITAKU", "39")
    staff.garble("shipment", sid)  # restored
    assert (
        staff.get_all("/api/v1/shipping_histories", "shipping_histories")[0]["sales_order"][
            "order_number"
        ]
        is None
    )
    with pytest.raises(StaffError) as bad:
        staff.garble("order", sid, id=1)
    assert bad.value.status == 400
