"""The Logikura sandbox over HTTP: OAuth, the rate limit, paging, the schedule lifecycle,
stock, guessed options, faults, the control API and the ledger."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from plugins.wms_logikura.sandbox import (
    GUESSED_OPTIONS,
    SandboxConfig,
    SandboxServer,
    StaffError,
    WarehouseStaff,
)
from tests.wms_logikura.conftest import CLIENT_ID, REDIRECT, SECRET, sandbox_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "logikura-sandbox.md"


def token(server: SandboxServer, **data: str) -> requests.Response:
    return requests.post(
        f"{server.base_url}/oauth/token",
        data={"client_id": CLIENT_ID, "client_secret": SECRET, **data},
        timeout=5,
    )


def authorize(server: SandboxServer, **params: str) -> dict[str, list[str]]:
    answer = requests.get(
        f"{server.base_url}/oauth/authorize",
        allow_redirects=False,
        timeout=5,
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "state": "s-1",
            "scope": "read write",
            **params,
        },
    )
    assert answer.status_code == 302, answer.text
    return parse_qs(urlsplit(answer.headers["Location"]).query)


def api(
    server: SandboxServer, access: str, method: str, path: str, **kwargs: Any
) -> requests.Response:
    return requests.request(
        method,
        f"{server.base_url}{path}",
        timeout=5,
        headers={"Authorization": f"Bearer {access}"},
        **kwargs,
    )


def test_oauth_code_flow_refresh_rotation_and_errors(lk: SandboxServer) -> None:
    page = requests.get(
        f"{lk.base_url}/oauth/authorize",
        timeout=5,
        params={"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT},
    )
    assert page.status_code == 200 and "許可する" in page.text
    assert authorize(lk, decision="deny", auto="1") == {
        "error": ["access_denied"],
        "state": ["s-1"],
    }
    bad_client = requests.get(
        f"{lk.base_url}/oauth/authorize",
        timeout=5,
        params={
            "response_type": "code",
            "client_id": "other",
            "redirect_uri": REDIRECT,
            "auto": "1",
        },
        allow_redirects=False,
    )
    assert bad_client.status_code == 401 and "Location" not in bad_client.headers

    query = authorize(lk, auto="1")
    assert query["state"] == ["s-1"]
    code = query["code"][0]
    assert (
        token(
            lk, grant_type="authorization_code", code=code, redirect_uri="http://127.0.0.1:1/other"
        ).json()["error"]
        == "invalid_grant"
    )
    assert (
        requests.post(
            f"{lk.base_url}/oauth/token",
            timeout=5,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": CLIENT_ID,
                "client_secret": "wrong",
            },
        ).status_code
        == 401
    )
    first = token(lk, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    body = first.json()
    assert first.status_code == 200 and body["token_type"] == "Bearer"
    assert body["expires_in"] == 86_400 and body["scope"] == "read write"
    assert (
        token(lk, grant_type="authorization_code", code=code, redirect_uri=REDIRECT).status_code
        == 400
    )  # a code works once

    assert api(lk, body["access_token"], "GET", "/api/v1/warehouses").status_code == 200
    lk.clock.advance(86_400)
    expired = api(lk, body["access_token"], "GET", "/api/v1/warehouses")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]
    renewed = token(lk, grant_type="refresh_token", refresh_token=body["refresh_token"]).json()
    assert renewed["refresh_token"] != body["refresh_token"]
    assert (
        token(lk, grant_type="refresh_token", refresh_token=body["refresh_token"]).json()["error"]
        == "invalid_grant"
    )
    assert api(lk, renewed["access_token"], "GET", "/api/v1/warehouses").status_code == 200

    lk.clock.advance(90 * 86_400)
    assert (
        token(lk, grant_type="refresh_token", refresh_token=renewed["refresh_token"]).status_code
        == 400
    )
    code = authorize(lk, auto="1")["code"][0]
    lk.clock.advance(601)
    assert (
        token(lk, grant_type="authorization_code", code=code, redirect_uri=REDIRECT).status_code
        == 400
    )  # codes live 10 minutes


def test_read_scope_cannot_write(lk: SandboxServer) -> None:
    read_only = lk.state.issue_tokens("read")["access_token"]
    assert api(lk, read_only, "GET", "/api/v1/consignees").status_code == 200
    refused = api(lk, read_only, "POST", "/api/v1/consignees", json={"consignee": {"name": "x"}})
    assert refused.status_code == 403


@pytest.mark.parametrize(("status", "window"), [(429, "fixed"), (499, "sliding")])
def test_rate_limit_headers_and_over_limit_status(status: int, window: str) -> None:
    with SandboxServer(
        sandbox_config(rate_limit_per_minute=5, rate_limit_status=status, rate_limit_window=window)
    ) as lk:
        access = lk.state.issue_tokens()["access_token"]
        other = lk.state.issue_tokens()["access_token"]
        answers = []
        for _ in range(5):
            answers.append(api(lk, access, "GET", "/api/v1/warehouses"))
            lk.clock.advance(1)
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0"]
        assert all(a.headers["X-RateLimit-Limit"] == "5" for a in answers)
        over = api(lk, access, "GET", "/api/v1/warehouses")
        assert over.status_code == status and over.json() == {"error": "Too Many Requests"}
        assert int(over.headers["X-Rate-Limit-Reset"]) == 55
        assert api(lk, other, "GET", "/api/v1/warehouses").status_code == 200  # per grant
        lk.clock.advance(55)
        assert api(lk, access, "GET", "/api/v1/warehouses").status_code == 200
        assert lk.state.traffic.rate_limited() == 1


def test_link_paging_keeps_the_query() -> None:
    with SandboxServer(sandbox_config(page_size=4, seed_size=10)) as lk:
        access = lk.state.issue_tokens()["access_token"]
        first = api(lk, access, "GET", "/api/v1/inventories", params={"warehouse_id": "1"})
        assert len(first.json()["inventories"]) == 4 and 'rel="prev"' not in first.headers["Link"]
        following = first.links["next"]["url"]
        assert parse_qs(urlsplit(following).query) == {"warehouse_id": ["1"], "page": ["2"]}
        last = api(
            lk, access, "GET", "/api/v1/inventories", params={"warehouse_id": "1", "page": "3"}
        )
        assert len(last.json()["inventories"]) == 2 and "next" not in last.links
        assert last.links["prev"]["url"].endswith("page=2")
        staff = WarehouseStaff(lk.base_url)
        assert len(staff.get_all("/api/v1/product_variants", "product_variants")) == 10
        assert api(lk, access, "GET", "/api/v1/warehouses", params={"page": "x"}).status_code == 422
        staff.close()


def test_schedule_lifecycle_allocation_shortage_and_histories(lk: SandboxServer) -> None:
    staff = WarehouseStaff(lk.base_url)
    lk.state.add_variant("A-1", link_code="A-1", stock={"ITAKU": 3})
    lk.state.add_variant("B-2", stock={"ITAKU": 1, "SHINJUKU": 5})
    body = {
        "sales_order": {"order_number": "1001", "order_date": "2026-11-27"},
        "shipping_schedule": {
            "consignee_id": staff.consignee_id("W-001"),
            "delivery_method_code": "yamato_b2",
            "shipping_composite_items": [],
            "shipping_items": [
                {
                    "product_variant_id": staff.variant_id("A-1"),
                    "sales_order_quantity": 2,
                    "price": 0,
                },
                {
                    "product_variant_id": staff.variant_id("B-2"),
                    "sales_order_quantity": 2,
                    "price": 0,
                },
            ],
        },
    }
    schedule = staff.call("POST", "/api/v1/shipping_schedules", body)["shipping_schedule"]
    assert schedule["progress_state"] == "idle" and schedule["delivery_method"] == {
        "code": "yamato_b2",
        "name": "ヤマトB2クラウド",
    }
    with pytest.raises(StaffError) as short:
        staff.start(schedule["id"], "ITAKU")
    b_item = schedule["shipping_items"][1]["id"]
    assert short.value.status == 422 and short.value.body["shipping_item_ids"] == [b_item]
    assert lk.state.stock("ITAKU", "A-1")["will_pick"] == 0  # all or nothing
    with pytest.raises(StaffError) as early:
        staff.ship(schedule["id"])
    assert early.value.status == 422

    staff.receive("ITAKU", [("B-2", 4)], received_date="2026-11-27")
    started = staff.start(schedule["id"], "ITAKU")["shipping_schedule"]
    assert started["progress_state"] == "shipping" and started["warehouse_id"] == 1
    assert lk.state.stock("ITAKU", "A-1") == {"quantity": 3, "will_pick": 2, "not_assigned": 1}
    staff.set_tracking(schedule["id"], "TRACK-1")
    shipped = staff.ship(schedule["id"])["shipping_schedule"]
    assert shipped["progress_state"] == "completed" and shipped["tracking_number"] == "TRACK-1"
    assert shipped["shipping_items"][0]["packing_items"][0]["packed_quantity"] == 2
    assert lk.state.stock("ITAKU", "A-1") == {"quantity": 1, "will_pick": 0, "not_assigned": 1}
    assert lk.state.stock("ITAKU", "B-2")["quantity"] == 3
    assert staff.open_schedules() == []
    today = lk.clock.today().isoformat()
    history = staff.get_all(
        "/api/v1/shipping_histories",
        "shipping_histories",
        {"shipped_date_from": today, "shipped_date_to": today},
    )
    assert [h["id"] for h in history] == [schedule["id"]]
    assert history[0]["shipped_date"] == today
    assert (
        staff.get_all(
            "/api/v1/shipping_histories", "shipping_histories", {"shipped_date_to": "2000-01-01"}
        )
        == []
    )
    with pytest.raises(StaffError):
        staff.ship(schedule["id"])

    direct = staff.ship_direct("SHINJUKU", [("B-2", 2)], order_number="W-9")
    assert direct["warehouse_id"] == 2 and lk.state.stock("SHINJUKU", "B-2")["quantity"] == 3
    with pytest.raises(StaffError) as negative:
        staff.ship_direct("SHINJUKU", [("B-2", 9)])
    assert negative.value.status == 422
    assert lk.ledger.net_stock_change("B-2", "ITAKU") == 4 - 2
    assert lk.ledger.schedules_created() == {"1001": 1}
    kinds = [e.kind for e in lk.ledger.entries(since=0) if e.source == "api"]
    assert kinds[:3] == ["schedule.create", "schedule.allocation_failed", "stock.receive"]
    staff.close()


def test_schedule_validation_and_guessed_options() -> None:
    with SandboxServer(
        sandbox_config(
            duplicate_order_number="reject",
            history_warehouse_id=False,
            allocation_all_or_nothing=False,
            external_links="embedded",
        )
    ) as lk:
        staff = WarehouseStaff(lk.base_url)
        lk.state.add_variant("A-1", link_code="a-1", stock={"ITAKU": 1})
        lk.state.add_variant("B-2", stock={"ITAKU": 0})

        def create(number: str, **changes: Any) -> Any:
            schedule = {
                "consignee_id": staff.consignee_id("W-001"),
                "shipping_composite_items": [],
                "shipping_items": [
                    {
                        "product_variant_id": staff.variant_id("A-1"),
                        "sales_order_quantity": 1,
                        "price": 0,
                    },
                    {
                        "product_variant_id": staff.variant_id("B-2"),
                        "sales_order_quantity": 1,
                        "price": 0,
                    },
                ],
                **changes,
            }
            return staff.call(
                "POST",
                "/api/v1/shipping_schedules",
                {"sales_order": {"order_number": number}, "shipping_schedule": schedule},
            )["shipping_schedule"]

        for bad in (
            {"delivery_method_code": "no_such"},
            {"consignee_id": 999},
            {
                "shipping_items": [
                    {"product_variant_id": 999, "sales_order_quantity": 1, "price": 0}
                ]
            },
            {"shipping_composite_items": [{"composite_item_id": 1, "quantity": 1, "price": 0}]},
        ):
            with pytest.raises(StaffError) as refused:
                create("X", **bad)
            assert refused.value.status == 422 and refused.value.body["error"]
        schedule = create("1")
        with pytest.raises(StaffError):
            create("1")  # duplicate_order_number="reject"
        with pytest.raises(StaffError) as partial:
            staff.start(schedule["id"], "ITAKU")
        assert len(partial.value.body["shipping_item_ids"]) == 1
        assert lk.state.stock("ITAKU", "A-1")["will_pick"] == 1  # the rest was allocated
        assert "warehouse_id" not in staff.open_schedules()[0]
        variant = staff.call("GET", f"/api/v1/product_variants/{staff.variant_id('A-1')}")
        assert (
            variant["external_service_product_variants"][0]["external_service_product_code"]
            == "a-1"
        )
        with pytest.raises(StaffError) as no_list:
            staff.call("GET", "/api/v1/external_service_product_variants")
        assert no_list.value.status == 404
        with pytest.raises(StaffError) as busy:
            staff.call("DELETE", f"/api/v1/shipping_schedules/{schedule['id']}")
        assert busy.value.status == 422
        staff.close()


def test_consignees_links_inventories_and_stocks(lk: SandboxServer) -> None:
    staff = WarehouseStaff(lk.base_url)
    created = staff.call(
        "POST", "/api/v1/consignees", {"consignee": {"code": "C-1", "name": "佐藤"}}
    )["consignee"]
    with pytest.raises(StaffError) as taken:
        staff.call("POST", "/api/v1/consignees", {"consignee": {"code": "C-1", "name": "x"}})
    assert taken.value.status == 422
    assert staff.consignee_id("C-1") == created["id"]
    links = staff.get_all(
        "/api/v1/external_service_product_variants", "external_service_product_variants"
    )
    accounts = staff.get_all("/api/v1/external_service_accounts", "external_service_accounts")
    assert {a["external_service_name"] for a in accounts} == {"ネクストエンジン", "スマレジ"}
    assert len(links) == len([e for e in lk.state.links.values()])
    itaku = staff.get_all("/api/v1/inventories", "inventories", {"warehouse_id": "1"})
    assert itaku and {i["warehouse_id"] for i in itaku} == {1}
    first = itaku[0]
    assert first["quantity"] == first["will_pick_quantity"] + first["not_assigned_quantity"]
    stock = staff.call("GET", f"/api/v1/stocks/{first['id']}")["stock"]
    assert stock["inventory_id"] == first["id"] and stock["quantity"] == first["quantity"]
    with pytest.raises(StaffError) as missing:
        staff.call("GET", "/api/v1/stocks/99999")
    assert missing.value.status == 404
    staff.close()


def test_same_seed_same_world() -> None:
    with SandboxServer(sandbox_config(seed=5)) as a, SandboxServer(sandbox_config(seed=5)) as b:
        assert a.state.list_variants() == b.state.list_variants()
        assert a.state.list_links() == b.state.list_links()
        assert [a.state.inventory_json(i) for i in a.state.inventories.values()] == [
            b.state.inventory_json(i) for i in b.state.inventories.values()
        ]


def test_faults_and_control_api(lk: SandboxServer) -> None:
    staff = WarehouseStaff(lk.base_url)
    control = f"{lk.base_url}/_sandbox"
    assert (
        requests.post(
            f"{control}/faults/fail_next",
            timeout=5,
            json={"status": 503, "path": "/api/v1/warehouses"},
        ).status_code
        == 200
    )
    with pytest.raises(StaffError) as injected:
        staff.call("GET", "/api/v1/warehouses")
    assert injected.value.status == 503
    assert staff.call("GET", "/api/v1/warehouses")["warehouses"]

    lk.faults.drop_next(when="before", path="/api/v1/consignees", method="POST")
    with pytest.raises(requests.ConnectionError):
        staff.call("POST", "/api/v1/consignees", {"consignee": {"code": "D-1", "name": "x"}})
    assert lk.ledger.count("consignee.create") == 0  # nothing applied
    lk.faults.drop_next(when="after", path="/api/v1/consignees", method="POST")
    with pytest.raises(requests.ConnectionError):
        staff.call("POST", "/api/v1/consignees", {"consignee": {"code": "D-2", "name": "x"}})
    assert lk.ledger.count("consignee.create") == 1  # applied, answer lost
    assert (
        requests.post(f"{control}/faults/fail_next", timeout=5, json={"status": 418}).status_code
        == 400
    )

    assert (
        requests.post(f"{control}/clock", json={"advance_seconds": 3600}, timeout=5).status_code
        == 200
    )
    ledger = requests.get(f"{control}/ledger", params={"kind": "consignee.*"}, timeout=5).json()
    assert [e["kind"] for e in ledger] == ["consignee.create"]
    traffic = requests.get(f"{control}/traffic", params={"requests": "1"}, timeout=5).json()
    assert traffic["calls"] == len(traffic["requests"]) >= 4
    assert None in {r["status"] for r in traffic["requests"]}  # dropped calls are recorded
    routes = requests.get(f"{control}/", timeout=5).json()
    assert {"method": "PATCH", "path": "/api/v1/shipping_schedules/{id}/start"} in routes["api"]
    assert requests.get(f"{control}/config", timeout=5).json()["client_secret"] == "***"
    added = requests.post(
        f"{control}/state/variants",
        timeout=5,
        json={"product_code": "NEW-1", "link_code": "new-1", "stock": {"ASAKUSA": 4}},
    ).json()
    assert added["product_code"] == "NEW-1"
    assert (
        requests.get(
            f"{control}/state/stock",
            timeout=5,
            params={"warehouse": "ASAKUSA", "product_code": "NEW-1"},
        ).json()["quantity"]
        == 4
    )
    issued = requests.post(f"{control}/tokens", json={}, timeout=5).json()
    requests.post(f"{control}/tokens/expire_access", timeout=5)
    assert api(lk, issued["access_token"], "GET", "/api/v1/warehouses").status_code == 401
    assert requests.get(f"{control}/nope", timeout=5).status_code == 404
    staff.close()


def test_every_guessed_option_is_a_config_field_and_documented() -> None:
    fields = {f.name for f in dataclasses.fields(SandboxConfig)}
    doc = DOC.read_text(encoding="utf-8")
    for option in GUESSED_OPTIONS:
        assert option.name in fields
        assert f"| `{option.name}` |" in doc, option.name
    with pytest.raises(ValueError, match="unknown Logikura sandbox option"):
        SandboxConfig.from_mapping({"no_such": 1})
    with pytest.raises(ValueError, match="429 or 499"):
        SandboxConfig(rate_limit_status=500)
