"""The sandbox kit (``hooks.sandbox``) on its own: a tiny sandbox written the way
``docs/sandbox-kit.md`` tells a connector author to, served over real HTTP on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import SplitResult

import pytest
import requests

from hooks.sandbox import (
    Clock,
    ControlApi,
    FaultBook,
    FaultSettings,
    Ledger,
    LedgerEntry,
    SandboxHandler,
    SandboxServer,
    SandboxSettings,
    SandboxWorld,
    StatePart,
    run_until_signal,
)


@dataclass
class TinyConfig(SandboxSettings):
    """A tiny WMS sandbox's settings."""

    LABEL: ClassVar[str] = "tiny sandbox"
    FAULTS: ClassVar[type[FaultSettings]] = FaultSettings

    client_secret: str = "tiny-secret"
    faults: FaultSettings = field(default_factory=FaultSettings)


@dataclass(frozen=True)
class TinyEntry(LedgerEntry):
    """A tiny WMS change: which item moved by how much."""

    item: str | None = None
    delta: int | None = None


class TinyFaults(FaultBook[FaultSettings]):
    """Statuses 500 and 503 can be injected."""

    def error_key(self, error: Any) -> str:
        if int(error) not in (500, 503):
            raise ValueError(f"status {error} cannot be injected; use 500 or 503")
        return str(int(error))


class TinyState(SandboxWorld[TinyConfig, Clock, Ledger[TinyEntry], TinyFaults]):
    """The tiny world: stock per item."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config, Clock, Ledger(TinyEntry), TinyFaults(FaultSettings, config.faults))
        self.stock: dict[str, int] = {"A": 5}

    def ship(self, item: str, quantity: int, call_no: int | None) -> int:
        with self.lock:
            self.stock[item] -= quantity
            self.ledger.append(
                "stock.ship", self.clock.text(), "api", call_no=call_no, item=item, delta=-quantity
            )
            return self.stock[item]


class TinyServer(SandboxServer[TinyState]):
    """``POST /ship?item=A&quantity=1`` ships stock; faults apply."""

    LABEL = "tiny sandbox"
    SERVER_VERSION = "TinySandbox/1.0"
    THREAD_NAME = "tiny-sandbox"
    METHODS = ("GET", "POST")
    MAX_BODY = 1024

    faults = StatePart[TinyFaults]("faults", "Fault injection.")
    ledger = StatePart[Ledger[TinyEntry]]("ledger", "The change ledger.")

    def __init__(self, config: TinyConfig | None = None) -> None:
        state = TinyState(config if config is not None else TinyConfig())
        super().__init__(state, ControlApi(state.config, state.clock, state.faults, "tiny"))
        self.calls = 0

    def answer(self, request: SandboxHandler, method: str, split: SplitResult, body: bytes) -> None:
        if split.path != "/ship" or method != "POST":
            request.send_json(404, {"error": "Not Found"})
            return
        self.calls += 1
        draw = self.state.faults.draw(method, split.path)
        if draw.drop_before:
            request.drop()
            return
        if draw.error is not None:
            request.send_json(int(draw.error), {"error": "injected"})
            return
        left = self.state.ship("A", 1, self.calls)
        if draw.drop_after:
            request.drop()
            return
        request.send_json(200, {"left": left})


@pytest.fixture()
def tiny() -> Iterator[TinyServer]:
    with TinyServer(TinyConfig(clock_frozen=True)) as server:
        yield server


def test_a_kit_sandbox_answers_its_api_and_the_shared_control_routes(tiny: TinyServer) -> None:
    assert tiny.state.base_url == tiny.base_url
    shipped = requests.post(f"{tiny.base_url}/ship", timeout=5)
    assert shipped.status_code == 200 and shipped.json() == {"left": 4}
    assert shipped.headers["Server"].startswith("TinySandbox/1.0 ")
    assert [(e.kind, e.item, e.delta) for e in tiny.ledger.select(kind="stock.*")] == [
        ("stock.ship", "A", -1)
    ]
    config = requests.get(f"{tiny.base_url}/_sandbox/config", timeout=5).json()
    assert config["client_secret"] == "***" and config["clock_start"] is None
    before = requests.get(f"{tiny.base_url}/_sandbox/clock", timeout=5).json()["now"]
    moved = requests.post(
        f"{tiny.base_url}/_sandbox/clock", json={"advance_seconds": 3600}, timeout=5
    ).json()["now"]
    later, earlier = Clock.parse(moved), Clock.parse(before)
    assert later is not None and earlier is not None
    assert (later - earlier).total_seconds() == 3600
    bad_time = requests.post(f"{tiny.base_url}/_sandbox/clock", json={"set": "tomorrow"}, timeout=5)
    assert bad_time.status_code == 400 and "ISO 8601" in bad_time.json()["error"]
    missing = requests.get(f"{tiny.base_url}/_sandbox/nope", timeout=5)
    assert missing.status_code == 404 and "GET /_sandbox/" in missing.json()["error"]
    assert requests.put(f"{tiny.base_url}/ship", timeout=5).status_code == 501
    too_big = requests.post(f"{tiny.base_url}/ship", data=b"x" * 2048, timeout=5)
    assert too_big.status_code == 413


def test_kit_faults_are_scheduled_validated_and_reset(tiny: TinyServer) -> None:
    url = f"{tiny.base_url}/_sandbox/faults"
    refused = requests.post(url, json={"rates": {"404": 0.5}}, timeout=5)
    assert refused.status_code == 400 and "cannot be injected" in refused.json()["error"]
    unknown = requests.post(url, json={"nope": 1}, timeout=5)
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]
    tiny.faults.fail_next(503, count=2, path="/ship")
    snapshot = requests.post(
        f"{url}/drop_next",
        json={"when": "after", "method": "post", "path": "/elsewhere"},
        timeout=5,
    ).json()
    assert [
        (s["kind"], s["remaining"], s["method"], s["value"]) for s in snapshot["scheduled"]
    ] == [("error", 2, None, 503), ("drop_after", 1, "POST", None)]
    assert [requests.post(f"{tiny.base_url}/ship", timeout=5).status_code for _ in range(2)] == [
        503,
        503,
    ]
    assert tiny.state.stock["A"] == 5  # an injected error applies nothing
    tiny.faults.drop_next(when="after", path="/ship")
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{tiny.base_url}/ship", timeout=5)
    assert tiny.state.stock["A"] == 4  # dropped after: applied, never answered
    assert requests.post(f"{tiny.base_url}/ship", timeout=5).json() == {"left": 3}
    tiny.faults.update(rates={"500": 1.0}, fault_paths=["/elsewhere"])
    assert requests.post(f"{tiny.base_url}/ship", timeout=5).status_code == 200
    reset = requests.post(f"{url}/reset", timeout=5).json()
    assert reset["rates"] == {} and reset["scheduled"] == []


def test_kit_config_loading_is_strict() -> None:
    loaded = TinyConfig.from_mapping(
        {"seed": 3, "clock_start": "2026-04-01T09:00:00", "faults": {"latency_ms": 5}}
    )
    assert loaded.seed == 3 and loaded.faults.latency_ms == 5
    assert loaded.clock_start is not None and loaded.clock_start.utcoffset() is not None
    with pytest.raises(ValueError, match="unknown tiny sandbox option"):
        TinyConfig.from_mapping({"sead": 3})
    with pytest.raises(ValueError, match="unknown fault option"):
        TinyConfig.from_mapping({"faults": {"latncy_ms": 5}})
    with pytest.raises(ValueError, match=r"clock_start is not a date.*ISO 8601"):
        TinyConfig.from_mapping({"clock_start": "April"})


def test_run_until_signal_serves_until_stopped_and_frees_the_port() -> None:
    ready = threading.Event()
    servers: list[TinyServer] = []

    def on_ready(server: TinyServer) -> None:
        servers.append(server)
        ready.set()

    thread = threading.Thread(target=run_until_signal, args=(TinyServer(), on_ready))
    thread.start()
    assert ready.wait(10)
    server = servers[0]
    assert requests.post(f"{server.base_url}/ship", timeout=5).status_code == 200
    port = server.port
    server.stop()
    thread.join(10)
    assert not thread.is_alive()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # the listening socket is closed
