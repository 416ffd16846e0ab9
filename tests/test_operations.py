"""Operating nebridge: token guard, doctor, metrics over HTTP, status warnings."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from daemon.cli import app
from daemon.nelink import connect, token_store
from daemon.runtime import build_runtime
from hooks import hookimpl
from hooks.records import Notification, PluginInfo
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory
from tests.ne_world import AT, SHIP_HEADER, World, make_world


class Collector:
    """A notification plugin that keeps what it is told."""

    def __init__(self) -> None:
        self.received: list[Notification] = []

    @hookimpl
    def nebridge_plugin_info(self) -> PluginInfo:
        return PluginInfo(name="collector", summary="collects notifications")

    @hookimpl
    def nebridge_notify(self, notification: Notification) -> None:
        self.received.append(notification)


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path)


@pytest.fixture
def notified_world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    plugins = {**DEFAULT_PLUGINS, "collector": {"enabled": True}}
    yield from make_world(make_config, tmp_path, plugins=plugins)


def test_token_guard_keeps_the_link_alive_and_warns_before_it_lapses(
    notified_world: World,
) -> None:
    world = notified_world
    collector = Collector()
    rt = build_runtime(world.config, extra_plugins={"collector": collector})
    store = token_store(rt.config)
    issued = store.load()
    assert issued is not None and issued.refresh_token_end_date is not None
    offset = timedelta()

    def clock() -> datetime:
        return datetime.now(issued.access_token_end_date.tzinfo) + offset  # type: ignore[union-attr]

    rt.clock = clock  # type: ignore[method-assign]
    try:
        guard = rt.token_guard()
        notifier = rt.notifier()
        quiet = guard.check()
        assert not quiet.kept_alive and quiet.warning is None
        # a day and a half later (NE's clock too): the access token expired → keep-alive renews
        offset = timedelta(hours=36)
        world.sandbox.clock.advance(offset.total_seconds())
        renewed = guard.check()
        assert renewed.kept_alive
        after = store.load()
        assert after is not None and after.refresh_token_end_date is not None
        assert after.refresh_token_end_date > issued.refresh_token_end_date
        assert collector.received == []
        # Next Engine unreachable (maintenance) while time goes on: warn at 24 h, then at 6 h
        world.sandbox.faults.update(rates={"002007": 1.0})
        offset += after.refresh_token_end_date - clock() - timedelta(hours=20)
        first = guard.check()
        assert first.warning and "lapses in 20.0 h" in first.warning
        notifier.run_once()
        guard.check()  # announced once, not every tick
        notifier.run_once()
        offset += timedelta(hours=15)
        guard.gate.paused_until = None
        second = guard.check()
        assert second.warning and "nebridge connect" in second.warning
        notifier.run_once()
    finally:
        rt.close()
    told = [(n.event, n.key, n.severity) for n in collector.received]
    assert told == [
        ("open", "ne_token_expiring:24h", "warning"),
        ("open", "ne_token_expiring:6h", "error"),
    ]
    assert "nebridge connect" in collector.received[1].fix


def test_token_guard_announces_a_lost_link_once(notified_world: World) -> None:
    world = notified_world
    collector = Collector()
    rt = build_runtime(world.config, extra_plugins={"collector": collector})
    try:
        world.sandbox.clock.advance(4 * 86400)  # the daemon was down for 4 days
        guard = rt.token_guard()
        rt.clock = lambda: datetime.now().astimezone() + timedelta(days=4)  # type: ignore[method-assign]
        guard.clock = rt.clock
        notifier = rt.notifier()
        for _ in range(3):
            guard.check()
            notifier.run_once()
        assert [(n.event, n.kind) for n in collector.received] == [("open", "ne_link_lost")]
        assert "nebridge connect" in collector.received[0].fix
        connect(rt.config, rt.engine, *world.sandbox.state.issue_login())  # the admin
        guard.check()
        notifier.run_once()
    finally:
        rt.close()
    assert [(n.event, n.kind) for n in collector.received] == [
        ("open", "ne_link_lost"),
        ("resolved", "ne_link_lost"),
    ]


def test_doctor_passes_then_names_each_problem_with_a_fix(world: World) -> None:
    def doctor() -> dict[str, Any]:
        result = CliRunner().invoke(app, ["--config", str(world.config), "doctor", "--json"])
        data: dict[str, Any] = json.loads(result.stdout)
        data["exit"] = result.exit_code
        return data

    inbox, outbox = "wms_csv: wms.csv.inbox", "wms_csv: wms.csv.outbox"
    fresh = doctor()  # nothing made the WMS folders yet: the daemon makes them when it starts
    failing = {c["name"]: c for c in fresh["checks"] if not c["ok"]}
    assert (fresh["exit"], set(failing)) == (1, {inbox, outbox}), fresh
    owner = pwd.getpwuid(os.geteuid()).pw_name  # the state folder's: the service user
    assert failing[outbox]["fix"] == (
        f"start the service (`nebridge run` creates it), or "
        f"mkdir -p {world.outbox} && chown {owner}: {world.outbox}"
    )
    assert not world.inbox.exists() and not world.outbox.exists()  # doctor made nothing
    assert CliRunner().invoke(app, ["--config", str(world.config), "run", "--once"]).exit_code == 0

    healthy = doctor()
    assert healthy["exit"] == 0, healthy
    names = {c["name"] for c in healthy["checks"]}
    assert {
        "config",
        "plugins",
        "database",
        "nextengine link",
        "token file",
        "refresh-token horizon",
        "nextengine reachable",
        "clock",
        "wms_csv: wms.csv.inbox",
        "wms_csv: wms.csv.outbox",
    } <= names
    tokens = world.config.parent / "state" / "nextengine-tokens.json"
    os.chmod(tokens, 0o644)
    world.outbox.rmdir()  # empty: nothing was ordered
    broken = doctor()
    assert broken["exit"] == 1
    failing = {c["name"]: c for c in broken["checks"] if not c["ok"]}
    assert set(failing) == {"token file", outbox}
    assert failing["token file"]["fix"] == f"chmod 600 {tokens}"
    assert failing[outbox]["detail"] == f"{world.outbox} is missing"
    human = CliRunner().invoke(app, ["--config", str(world.config), "doctor"])
    assert human.exit_code == 1 and "chmod 600" in human.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_are_scraped_over_http_from_the_running_daemon(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    port = free_port()
    for world in make_world(
        make_config,
        tmp_path,
        metrics={"port": port},
        schedule={
            "interval_seconds": 60,
            "jitter_seconds": 0,
            "dispatch_interval_seconds": 1,
            "intake_poll_seconds": 0.2,
        },
    ):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=50)
        world.products([("P-A", "A-1")])
        world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,,,{AT},P-A,2"])
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(world.config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            text, deadline = "", time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except requests.ConnectionError:
                    text = ""
                if (
                    'nebridge_actions{kind="adjust_stock",plugin="stock_minus",state="done"} 1.0'
                    in text
                ):
                    break
                time.sleep(0.2)
            assert 'nebridge_events_in_total{kind="shipment",warehouse="ITAKU"} 1.0' in text
            assert (
                'nebridge_actions{kind="adjust_stock",plugin="stock_minus",state="done"} 1.0'
                in text
            ), text[-3000:]
            assert 'nebridge_outbox_backlog{state="done"} 1.0' in text
            assert 'endpoint="/api_v1_master_goods/upload",result="success"' in text
            assert "nebridge_last_success_timestamp_seconds" in text
            # bound to 127.0.0.1 only: another loopback address (0.0.0.0 would accept) refuses
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.2:{port}/metrics", timeout=2)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0


def test_history_of_an_order_a_shipment_and_a_receipt(world: World) -> None:
    from daemon.admin import run_once
    from tests.ne_world import RECEIPT_HEADER

    st = world.sandbox.state
    st.create_goods("A-1", quantity=50)
    order = st.create_order([("A-1", 1)], shop_id=1)
    world.products([("P-A", "A-1")])
    for step in ("import", "confirm"):
        if step == "confirm":
            world.drop(
                "shipments-1.csv",
                SHIP_HEADER,
                [f"S-1,ITAKU,{order},TRK-1,{AT},P-A,1", f"S-2,ITAKU,,,{AT},P-A,2"],
            )
            world.drop("receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-A,5"])
        rt = world.runtime()
        try:
            run_once(rt)
        finally:
            rt.close()

    def history(*args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(
            app, ["--config", str(world.config), "history", *args, "--json"]
        )
        return result.exit_code, json.loads(result.stdout) if result.exit_code == 0 else {}

    code, trail = history("--order", str(order))
    whats = [s["what"] for s in trail["steps"]]
    assert code == 0
    assert whats[0] == f"order {order} imported into warehouse ITAKU"
    assert "instructions delivered to the WMS" in whats
    assert "shipment S-1 accepted into the inbox" in whats
    assert f"action #1: ship Next Engine order {order} with tracking number TRK-1" in whats
    assert any(w.startswith("action #1 done after 1 attempt") for w in whats)
    code, trail = history("--shipment", "S-2")
    stock = [
        s for s in trail["steps"] if s["what"].startswith("action #") and " done " in s["what"]
    ]
    assert code == 0 and "upload" in stock[0]["detail"] and "queue" in stock[0]["detail"]
    code, trail = history("--receipt", "R-1")
    assert code == 0 and any("by +5" in s["what"] for s in trail["steps"])
    missing = CliRunner().invoke(
        app, ["--config", str(world.config), "history", "--receipt", "R-404"]
    )
    assert missing.exit_code == 1 and "inbox list" in missing.stderr
    both = CliRunner().invoke(
        app, ["--config", str(world.config), "history", "--order", "1", "--receipt", "R-1"]
    )
    assert both.exit_code == 2


def test_logs_carry_context_and_journald_priorities(
    make_config: ConfigFactory, tmp_path: Path, fake_site: Path
) -> None:
    config = make_config(
        warehouses=[{"code": "BUGGY", "ne_linked": True, "import_orders": False}],
        plugins={**DEFAULT_PLUGINS, "fake_raises": {"enabled": True}},
    )
    inbox = tmp_path / "wms" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "products.csv").write_text("product_code,link_code\nP-A,a\n", encoding="utf-8")
    (inbox / "shipments-1.csv").write_text(
        f"{SHIP_HEADER}\nS-1,BUGGY,77,T,{AT},P-A,1\n", encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "JOURNAL_STREAM": "8:12345"},
    )
    assert result.returncode == 1
    held = [line for line in result.stderr.splitlines() if "held" in line]
    assert held, result.stderr
    assert held[0].startswith("<3>")  # journalctl -p err shows it
    assert "[warehouse=BUGGY run=" in held[0]
    assert any(line.startswith("<6>") for line in result.stderr.splitlines())
