"""NE sandbox: configuration, documentation of guesses, foreground serving, code overrides."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
import requests

from daemon.sandbox import (
    GUESSED_OPTIONS,
    FaultConfig,
    SandboxConfig,
    SandboxServer,
    serve_forever,
)
from daemon.sandbox import config as config_module
from daemon.sandbox.errors import ERROR_TABLE
from daemon.sandbox.testing import SandboxCaller

DOC = Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"


def test_every_guessed_option_is_a_config_field_and_documented() -> None:
    fields = {f.name: f for f in dataclasses.fields(SandboxConfig)}
    doc = DOC.read_text(encoding="utf-8")
    module_doc = config_module.__doc__ or ""
    for option in GUESSED_OPTIONS:
        assert option.name in fields
        assert f"| `{option.name}` |" in doc, option.name
        assert f"\n{option.name} " in module_doc, option.name


def test_every_guessed_error_code_is_documented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for key, (code, _message, confidence) in ERROR_TABLE.items():
        if confidence == "G":
            assert f"`{key}`" in doc and code in doc, key


def test_config_from_mapping() -> None:
    config = SandboxConfig.from_mapping(
        {
            "seed": 3,
            "clock_start": "2025-01-02 03:04:05",
            "faults": {"latency_ms": 150, "rates": {"003002": 0.1}},
        }
    )
    assert config.seed == 3
    assert config.clock_start is not None and config.clock_start.hour == 3
    assert config.faults == FaultConfig(latency_ms=150, rates={"003002": 0.1})
    with pytest.raises(ValueError, match="nope"):
        SandboxConfig.from_mapping({"nope": 1})
    with pytest.raises(ValueError, match="bogus"):
        SandboxConfig.from_mapping({"faults": {"bogus": 1}})
    with pytest.raises(ValueError, match="not_a_key"):
        SandboxServer(SandboxConfig(seed_size=0, error_codes={"not_a_key": "1"}))


def test_error_codes_can_be_overridden() -> None:
    config = SandboxConfig(
        seed_size=0,
        error_codes={"order_not_found": "020101", "fields_missing": ("009999", "fieldsを指定")},
    )
    with SandboxServer(config) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            body = caller.call(
                "/api_v1_receiveorder_base/shipped",
                receive_order_id="5",
                receive_order_last_modified_date="2025-01-01 00:00:00",
            )
            assert body["code"] == "020101"
            missing = caller.call("/api_v1_receiveorder_base/search")
            assert (missing["code"], missing["message"]) == ("009999", "fieldsを指定")
        finally:
            caller.close()


def test_serve_forever_blocks_until_stopped() -> None:
    ready = threading.Event()
    servers: list[SandboxServer] = []

    def on_ready(server: SandboxServer) -> None:
        servers.append(server)
        ready.set()

    runner = threading.Thread(target=serve_forever, args=(SandboxConfig(seed_size=3), on_ready))
    runner.start()
    assert ready.wait(10)
    server = servers[0]
    answer = requests.get(f"{server.base_url}/_sandbox/clock", timeout=5)
    assert answer.status_code == 200
    server.stop()
    runner.join(10)
    assert not runner.is_alive()


def test_get_on_api_path_and_bad_control_json() -> None:
    with SandboxServer(SandboxConfig(seed_size=0)) as ne:
        got = requests.get(f"{ne.base_url}/api_v1_login_user/info", timeout=5)
        assert got.status_code == 200 and got.json()["code"] == "000001"
        bad = requests.post(f"{ne.base_url}/_sandbox/faults", data=b"{", timeout=5)
        assert bad.status_code == 400
        assert requests.get(f"{ne.base_url}/_sandbox/state/ques/99", timeout=5).status_code == 404
        assert ne.state.traffic.calls == 0


def test_status_index_handles_in_lists_and_status_changes() -> None:
    with SandboxServer(SandboxConfig(seed=6, seed_size=60)) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            expected = sorted(o.id for o in ne.state.orders.values() if o.status_id in (40, 50))
            rows = caller.search(
                "/api_v1_receiveorder_base/search",
                "receive_order_id",
                **{"receive_order_order_status_id-in": "40,50"},
            )
            assert [int(r["receive_order_id"]) for r in rows] == expected
            moved = expected[0]
            ne.state.human_edit(moved, {"receive_order_order_status_id": "20"})
            again = caller.search(
                "/api_v1_receiveorder_base/search",
                "receive_order_id",
                **{"receive_order_order_status_id-in": "40,50"},
            )
            assert moved not in [int(r["receive_order_id"]) for r in again]
            twenty = caller.search(
                "/api_v1_receiveorder_base/search",
                "receive_order_id",
                **{"receive_order_order_status_id-eq": "20"},
            )
            assert moved in [int(r["receive_order_id"]) for r in twenty]
        finally:
            caller.close()
