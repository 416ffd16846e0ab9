"""The Logikura client against the sandbox: never more than 100 requests in any minute
(measured by the sandbox, with an injected clock), 429 and 499 as "slow down", the budget
headers, a budget shared by connectors, ``Link`` paging, and errors that say what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from hooks.connectors import ConnectorContext
from plugins.wms_logikura import LogikuraConnector
from plugins.wms_logikura.client import LogikuraClient
from plugins.wms_logikura.errors import (
    LogikuraAuthError,
    LogikuraError,
    LogikuraRefused,
    LogikuraUnavailable,
)
from plugins.wms_logikura.sandbox import SandboxServer
from tests.wms_logikura.conftest import (
    FakeTime,
    connect,
    logikura_config,
    make_ctx,
    sandbox_config,
)


def client_of(connector: LogikuraConnector, ctx: ConnectorContext) -> LogikuraClient:
    return connector._get(ctx).client


def nebridge_key(lk: SandboxServer) -> str:
    return next(
        f"grant:{e.record_id}"
        for e in lk.ledger.entries(kind="oauth.token")
        if e.detail["grant_type"] == "authorization_code"
    )


def test_a_burst_never_exceeds_100_requests_in_any_minute(
    tmp_path: Path, http: requests.Session
) -> None:
    with SandboxServer(sandbox_config(page_size=1, seed_size=260)) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        client = client_of(connector, ctx)
        variants = list(client.get_all("/api/v1/product_variants", "product_variants"))
        assert len(variants) == 260
        key = nebridge_key(lk)
        assert lk.state.traffic.max_in_window(60.0, key) <= 100
        assert lk.state.traffic.rate_limited(key) == 0
        assert clock.slept >= 120  # 260 requests need at least two more minutes


@pytest.mark.parametrize("status", [429, 499])
def test_over_limit_answers_pause_and_repeat(
    status: int, tmp_path: Path, http: requests.Session
) -> None:
    options = {
        "rate_limit_per_minute": 10,
        "rate_limit_status": status,
        "page_size": 1,
        "seed_size": 30,
    }
    with SandboxServer(sandbox_config(**options)) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        key = nebridge_key(lk)
        lk.faults.fail_next(status, path="/api/v1/product_variants")
        variants = list(
            client_of(connector, ctx).get_all("/api/v1/product_variants", "product_variants")
        )
        assert len(variants) == 30
        records = lk.state.traffic.requests(key)
        limited = [r for r in records if r.status == status]
        assert limited, "the injected answer reached the client"
        for refused in limited:  # nothing was sent again before the reset
            following = next(r for r in records if r.call_no > refused.call_no)
            assert following.at - refused.at >= 1
        assert lk.state.traffic.max_in_window(60.0, key) <= 10


def test_remaining_zero_is_honoured_before_a_429(tmp_path: Path, http: requests.Session) -> None:
    with SandboxServer(sandbox_config(rate_limit_per_minute=7, page_size=1, seed_size=20)) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        list(client_of(connector, ctx).get_all("/api/v1/product_variants", "product_variants"))
        key = nebridge_key(lk)
        assert lk.state.traffic.rate_limited(key) == 0
        assert lk.state.traffic.max_in_window(60.0, key) <= 7


def test_connectors_share_one_budget(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    first, ctx = connect(lk, tmp_path, http, clock)
    second = LogikuraConnector(first.config, clock=clock, sleep=clock.sleep)
    other_ctx = make_ctx(tmp_path, http, clock)
    for _ in range(70):
        client_of(first, ctx).get("/api/v1/warehouses")
        client_of(second, other_ctx).get("/api/v1/warehouses")
    key = nebridge_key(lk)
    assert lk.state.traffic.max_in_window(60.0, key) <= 100
    assert lk.state.traffic.rate_limited(key) == 0


def test_waiting_too_long_is_unavailable(tmp_path: Path, http: requests.Session) -> None:
    with SandboxServer(sandbox_config()) as lk:
        clock = FakeTime(lk)
        connect(lk, tmp_path, http, clock)
        clock.advance(61)
        slow = LogikuraConnector(
            logikura_config(lk, requests_per_minute=2, max_wait_seconds=10),
            clock=clock,
            sleep=clock.sleep,
        )
        client = client_of(slow, make_ctx(tmp_path, http, clock))
        client.get("/api/v1/warehouses")
        client.get("/api/v1/warehouses")
        with pytest.raises(LogikuraUnavailable, match="2 requests a minute"):
            client.get("/api/v1/warehouses")


def test_paging_to_the_end_and_never_to_another_host(
    tmp_path: Path, http: requests.Session
) -> None:
    with SandboxServer(sandbox_config(page_size=7, seed_size=30)) as lk:
        clock = FakeTime(lk)
        connector, ctx = connect(lk, tmp_path, http, clock)
        client = client_of(connector, ctx)
        ids = [v["id"] for v in client.get_all("/api/v1/product_variants", "product_variants")]
        assert ids == list(range(1, 31))
        lk.state.base_url = "http://127.0.0.2:9"
        with pytest.raises(LogikuraError, match="not followed"):
            list(client.get_all("/api/v1/product_variants", "product_variants"))


def test_errors_say_what_happened_and_what_to_do(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    connector, ctx = connect(lk, tmp_path, http, clock)
    client = client_of(connector, ctx)
    with pytest.raises(LogikuraRefused) as missing:
        client.get("/api/v1/shipping_schedules/999")
    assert missing.value.status == 404 and "api_base" in str(missing.value)
    with pytest.raises(LogikuraRefused) as invalid:
        client.post("/api/v1/consignees", {"consignee": {"code": "X"}})
    assert invalid.value.status == 422 and "名称を入力してください" in str(invalid.value)

    lk.faults.fail_next(503, count=2, path="/api/v1/warehouses")
    assert client.get("/api/v1/warehouses")["warehouses"]  # reads are repeated
    lk.faults.drop_next(when="before", path="/api/v1/warehouses")
    assert client.get("/api/v1/warehouses")["warehouses"]
    lk.faults.fail_next(503, path="/api/v1/consignees", method="POST")
    with pytest.raises(LogikuraUnavailable) as write:
        client.post("/api/v1/consignees", {"consignee": {"name": "x"}})
    assert write.value.ambiguous and "checks before sending again" in str(write.value)
    lk.faults.drop_next(when="after", path="/api/v1/consignees", method="POST")
    with pytest.raises(LogikuraUnavailable) as lost:
        client.post("/api/v1/consignees", {"consignee": {"name": "y"}})
    assert lost.value.ambiguous
    assert lk.ledger.count("consignee.create") == 1  # never repeated on its own

    lk.state.expire_refresh_tokens()
    lk.state.expire_access_tokens()
    with pytest.raises(LogikuraAuthError, match="nebridge wms connect"):
        client.get("/api/v1/warehouses")


def test_read_only_grant_is_told_to_reconnect(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    connector, ctx = connect(lk, tmp_path, http, clock)
    tokens = tmp_path / "logikura-tokens.json"
    read_only = lk.state.issue_tokens("read")
    stored = json.loads(tokens.read_text(encoding="utf-8"))
    stored["access_token"] = read_only["access_token"]
    tokens.write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(LogikuraAuthError, match="'read' and 'write'"):
        client_of(connector, ctx).post("/api/v1/consignees", {"consignee": {"name": "x"}})
