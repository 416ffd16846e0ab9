"""NE sandbox: fault injection, control API, traffic records and the ledger (brief §8, §9)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from daemon.sandbox import (
    INJECTABLE_CODES,
    JST,
    FaultConfig,
    SandboxConfig,
    SandboxServer,
)
from daemon.sandbox.testing import SandboxCaller

START = datetime(2025, 3, 1, 10, 0, 0, tzinfo=JST)
BASE = "/api_v1_receiveorder_base"
INFO = "/api_v1_login_user/info"


def _server(**options: Any) -> SandboxServer:
    config = SandboxConfig(seed=8, seed_size=0, clock_start=START, clock_frozen=True, **options)
    return SandboxServer(config)


@pytest.fixture
def ne() -> Iterator[SandboxServer]:
    with _server() as server:
        server.state.create_goods("Widget-A", 10)
        yield server


@pytest.fixture
def caller(ne: SandboxServer) -> Iterator[SandboxCaller]:
    c = SandboxCaller.signed_in(ne)
    yield c
    c.close()


def _lm(ne: SandboxServer, order_id: int) -> str:
    value = ne.state.order_snapshot(order_id)["receive_order_last_modified_date"]
    assert isinstance(value, str)
    return value


def _ship(caller: SandboxCaller, ne: SandboxServer, order_id: int) -> dict[str, Any]:
    return caller.call(
        f"{BASE}/shipped",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=_lm(ne, order_id),
    )


# ---------------------------------------------------------------- error codes
@pytest.mark.parametrize("code", sorted(set(INJECTABLE_CODES) - {"999999"}))
def test_scheduled_error_codes_echo_tokens(
    ne: SandboxServer, caller: SandboxCaller, code: str
) -> None:
    ne.faults.fail_next(code, count=2, path=INFO)
    other = caller.call("/api_v1_login_company/info")
    assert other["result"] == "success"
    for _ in range(2):
        body = caller.call(INFO)
        assert (body["result"], body["code"]) == ("error", code)
        assert body["message"]
        assert body["access_token"] == caller.access_token
    assert caller.call(INFO)["result"] == "success"


def test_system_error_returns_no_tokens_and_does_not_rotate(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    ne.clock.advance(86_401)
    old = caller.access_token
    ne.faults.fail_next("999999")
    body = caller.call(INFO)
    assert body["code"] == "999999" and "access_token" not in body
    rotated = caller.call(INFO)
    assert rotated["result"] == "success" and rotated["access_token"] != old


def test_injected_error_after_rotation_still_carries_new_pair(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    ne.clock.advance(86_401)
    old = caller.access_token
    ne.faults.fail_next("003002")
    body = caller.call(INFO)
    assert body["code"] == "003002"
    assert body["access_token"] != old  # the client must keep it even from an error answer
    assert caller.call(INFO)["result"] == "success"


def test_overload_respects_wait_flag(ne: SandboxServer, caller: SandboxCaller) -> None:
    ne.faults.update(overload_wait_ms=120)
    ne.faults.fail_next("003002", count=2)
    assert caller.call(INFO)["code"] == "003002"
    started = time.perf_counter()
    waited = caller.call(INFO, wait_flag="1")
    assert waited["result"] == "success"
    assert time.perf_counter() - started >= 0.11
    ne.faults.fail_next("003001")
    assert caller.call(INFO, wait_flag="1")["code"] == "003001"


def test_rates_are_seeded_and_reproducible() -> None:
    def run() -> list[str]:
        faults = FaultConfig(seed=42, rates={"003002": 0.3, "002007": 0.1}, fault_paths=[INFO])
        config = SandboxConfig(seed_size=0, faults=faults)
        with SandboxServer(config) as ne:
            caller = SandboxCaller.signed_in(ne)
            try:
                return [str(caller.call(INFO).get("code", "ok")) for _ in range(30)]
            finally:
                caller.close()

    first, second = run(), run()
    assert first == second
    assert {"ok", "003002"} <= set(first)
    assert set(first) <= {"ok", "003002", "002007"}


def test_fault_paths_limit_rate_faults(ne: SandboxServer, caller: SandboxCaller) -> None:
    ne.faults.update(rates={"002007": 1.0}, fault_paths=[INFO])
    assert caller.call(INFO)["code"] == "002007"
    assert caller.call("/api_v1_login_company/info")["result"] == "success"
    ne.faults.reset()
    assert caller.call(INFO)["result"] == "success"


def test_latency_per_call(ne: SandboxServer, caller: SandboxCaller) -> None:
    ne.faults.update(latency_ms=150)
    started = time.perf_counter()
    caller.call(INFO)
    assert time.perf_counter() - started >= 0.15
    ne.faults.update(latency_ms=0)
    started = time.perf_counter()
    caller.call(INFO)
    assert time.perf_counter() - started < 0.15


# ---------------------------------------------------------------- dropped connections
def test_drop_before_applies_nothing(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 2)], status_id=40)
    ne.faults.drop_next(when="before", path=f"{BASE}/shipped")
    with pytest.raises(requests.ConnectionError):
        _ship(caller, ne, order_id)
    assert ne.ledger.count("order.shipped", order_id=order_id) == 0
    assert ne.state.order_snapshot(order_id)["receive_order_order_status_id"] == "40"
    assert ne.ledger.net_stock_change("Widget-A") == 0
    assert _ship(caller, ne, order_id)["result"] == "success"
    assert ne.ledger.shipped_order_ids() == [order_id]


def test_drop_after_applies_the_change(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 2)], status_id=40)
    stale = _lm(ne, order_id)
    ne.faults.drop_next(when="after")
    with pytest.raises(requests.ConnectionError):
        _ship(caller, ne, order_id)
    assert ne.ledger.shipped_order_ids() == [order_id]
    assert ne.ledger.net_stock_change("Widget-A") == -2
    # a blind resend is refused; the ledger still shows exactly one shipment
    resend = caller.call(
        f"{BASE}/shipped", receive_order_id=str(order_id), receive_order_last_modified_date=stale
    )
    assert resend["code"] == "020006"
    assert _ship(caller, ne, order_id)["code"] == "020014"
    assert ne.ledger.shipped_order_ids() == [order_id]


def test_drop_after_upload_creates_the_que(ne: SandboxServer, caller: SandboxCaller) -> None:
    ne.faults.update(drop_after_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        caller.upload_goods("syohin_code,zaiko_su\nWidget-A,4\n")
    ne.faults.update(drop_after_rate=0.0)
    ques = caller.search(
        "/api_v1_system_que/search",
        "que_id,que_status_id",
        **{
            "que_method_name-eq": "SYOHIN_KIHON_CSV",
            "que_creation_date-gte": "2025-03-01 10:00:00",
        },
    )
    assert len(ques) == 1
    ne.clock.advance(1)
    assert ne.ledger.net_stock_change("Widget-A") == 4


def test_drop_before_rate_via_control_api(ne: SandboxServer, caller: SandboxCaller) -> None:
    snapshot = caller.control("POST", "/faults", {"drop_before_rate": 1.0})
    assert snapshot["drop_before_rate"] == 1.0
    with pytest.raises(requests.ConnectionError):
        caller.call(INFO)
    caller.control("POST", "/faults/reset")
    assert caller.call(INFO)["result"] == "success"
    uses = caller.control("GET", "/token_uses")
    assert [u["verdict"] for u in uses] == ["current", "current"]


# ---------------------------------------------------------------- human edits, ques
def test_human_edit_races_the_next_write(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], status_id=40)
    caller.control("POST", "/faults/human_edit_next", {"count": 1})
    assert _ship(caller, ne, order_id)["code"] == "020006"
    kinds = [e.kind for e in ne.ledger.entries(order_id=order_id)]
    assert kinds[-1] == "order.human_edit"
    assert _ship(caller, ne, order_id)["result"] == "success"


def test_human_edit_rate_hits_bulk_writes(ne: SandboxServer, caller: SandboxCaller) -> None:
    ids = [ne.state.create_order([("Widget-A", 1)]) for _ in range(2)]
    items = "".join(
        f'<receiveorder receive_order_id="{i}" receive_order_last_modified_date="{_lm(ne, i)}">'
        "<receiveorder_base><receive_order_note>n</receive_order_note></receiveorder_base>"
        "</receiveorder>"
        for i in ids
    )
    ne.faults.update(human_edit_rate=1.0)
    reads = caller.search(f"{BASE}/search", "receive_order_id")  # reads are never raced
    assert len(reads) == 2
    body = caller.call(f"{BASE}/bulkupdate", data_type="xml", data=f"<root>{items}</root>")
    assert [(m["receive_order_id"], m["code"]) for m in body["message"]] == [
        (str(ids[0]), "020006")
    ]


def test_injected_que_failure(ne: SandboxServer, caller: SandboxCaller) -> None:
    caller.control("POST", "/faults/fail_next_ques", {"count": 1})
    failed = caller.upload_goods("syohin_code,zaiko_su\nWidget-A,4\n")["que_id"]
    ok = caller.upload_goods("syohin_code,zaiko_su\nWidget-A,1\n")["que_id"]
    ne.clock.advance(1)
    statuses = {
        r["que_id"]: r["que_status_id"]
        for r in caller.search("/api_v1_system_que/search", "que_id,que_status_id")
    }
    assert statuses == {failed: "-1", ok: "2"}
    assert ne.ledger.net_stock_change("Widget-A") == 1
    assert caller.control("GET", f"/state/ques/{failed}")["que_message"]


# ---------------------------------------------------------------- traffic and control API
def test_concurrent_requests_are_counted_per_company() -> None:
    faults = FaultConfig(latency_ms=200)
    with SandboxServer(SandboxConfig(seed_size=0, faults=faults)) as ne:
        pair = ne.state.issue_tokens()
        data = {"access_token": pair.access_token, "refresh_token": pair.refresh_token}

        def call() -> None:
            requests.post(f"{ne.base_url}{INFO}", data=data, timeout=5)

        call()
        company = ne.state.company_id
        assert ne.state.traffic.max_in_flight(company) == 1
        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ne.state.traffic.max_in_flight(company) == 3
        assert ne.state.traffic.in_flight(company) == 0
        stats = requests.get(f"{ne.base_url}/_sandbox/stats", timeout=5).json()
        assert stats["max_in_flight"] == {company: 3}
        assert stats["calls_by_path"][INFO] == 4


def test_faults_set_at_start_and_control_validation() -> None:
    faults = FaultConfig(rates={"011007": 1.0})
    with SandboxServer(SandboxConfig(seed_size=0, faults=faults)) as ne:
        caller = SandboxCaller(ne.base_url)
        try:
            uid, state = ne.state.issue_login()
            neauth = caller.call(
                "/api_neauth",
                uid=uid,
                state=state,
                client_id=ne.config.client_id,
                client_secret=ne.config.client_secret,
            )
            assert neauth["code"] == "011007"  # rate faults hit every API path, login too
            ne.faults.update(fault_paths=[INFO])
            uid, state = ne.state.issue_login()
            caller.call(
                "/api_neauth",
                uid=uid,
                state=state,
                client_id=ne.config.client_id,
                client_secret=ne.config.client_secret,
            )
            assert caller.call(INFO)["code"] == "011007"
            bad = caller.session.post(
                f"{ne.base_url}/_sandbox/faults", json={"rates": {"123456": 0.5}}, timeout=5
            )
            assert bad.status_code == 400
            unknown = caller.session.post(
                f"{ne.base_url}/_sandbox/faults", json={"nope": 1}, timeout=5
            )
            assert unknown.status_code == 400
            missing = caller.session.get(f"{ne.base_url}/_sandbox/nope", timeout=5)
            assert missing.status_code == 404
            listed = caller.control("GET", "/")
            routes = {(r["method"], r["path"]) for r in listed}
            assert ("POST", "/_sandbox/faults/drop_next") in routes
            config = caller.control("GET", "/config")
            assert config["client_secret"] == "***"
        finally:
            caller.close()


def test_ledger_over_http(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 3)], status_id=40)
    first_seq = len(ne.ledger)
    _ship(caller, ne, order_id)
    entries = caller.control("GET", f"/ledger?since={first_seq}")
    kinds = [e["kind"] for e in entries]
    assert kinds == ["stock.ship", "order.shipped"]
    ship = entries[0]
    assert ship["goods_code"] == "Widget-A" and ship["delta"] == -3
    assert ship["before"]["stock_quantity"] == 10 and ship["after"]["stock_quantity"] == 7
    assert ship["call_no"] == entries[1]["call_no"] is not None
    assert entries[1]["at"] == "2025-03-01 10:00:00"
    shipped = caller.control("GET", "/ledger?kind=order.shipped")
    assert [e["order_id"] for e in shipped] == [order_id]
    by_goods = caller.control("GET", "/ledger?goods_code=widget-a&kind=stock.*")
    assert [e["kind"] for e in by_goods] == ["stock.allocate", "stock.ship"]
    assert all(
        "token" not in str(e["after"]).lower() or "pair_id" in e["after"]
        for e in caller.control("GET", "/ledger")
    )
