"""Authorising nebridge in Logikura: ``nebridge wms connect`` (loopback and ``--code``), the
token file, refreshing before expiry and after a 401, one refresh across connectors, the
re-connect state when the refresh token is gone, and secrets kept out of every output."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from typer.testing import CliRunner

from daemon.cli import app
from daemon.cli.wms import RedirectError, wait_for_code
from hooks.records import EventKind
from plugins.wms_logikura import LogikuraConnector
from plugins.wms_logikura.errors import LogikuraAuthError
from plugins.wms_logikura.sandbox import SandboxServer
from tests.conftest import ConfigFactory
from tests.wms_logikura.conftest import (
    REDIRECT,
    SECRET,
    FakeTime,
    batch,
    connect,
    logikura_section,
    make_ctx,
    order,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def logikura_yaml(make_config: ConfigFactory, lk: SandboxServer, redirect: str) -> Path:
    return make_config(
        wms={
            "connector": "logikura",
            "logikura": logikura_section(lk, redirect_uri=redirect),
        }
    )


def token_values(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [data[k] for k in ("access_token", "refresh_token") if k in data]


def refreshes(lk: SandboxServer) -> int:
    return sum(
        1
        for e in lk.ledger.entries(kind="oauth.token")
        if e.detail.get("grant_type") == "refresh_token"
    )


def test_wms_connect_over_the_loopback_redirect(
    make_config: ConfigFactory, lk: SandboxServer, tmp_path: Path
) -> None:
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    config = logikura_yaml(make_config, lk, redirect)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon",
            "--config",
            str(config),
            "wms",
            "connect",
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        url = ""
        for line in process.stderr:
            if "/oauth/authorize?" in line:
                url = line.strip()
                break
        assert url.startswith(lk.base_url), url
        assert dict(parse_qsl(urlsplit(url).query))["redirect_uri"] == redirect
        for _ in range(50):  # the receiver starts right after the URL is printed
            approved = requests.get(url + "&auto=1", allow_redirects=False, timeout=5)
            try:
                requests.get(approved.headers["Location"], timeout=5)
                break
            except requests.ConnectionError:
                threading.Event().wait(0.1)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "logikura: connected" in out and "ITAKU → 拠点 #1" in out
    tokens = tmp_path / "state" / "logikura-tokens.json"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert not [p for p in tokens.parent.iterdir() if p.name.endswith(".tmp")]
    for secret in (*token_values(tokens), SECRET):
        assert secret not in out + err

    result = CliRunner().invoke(app, ["--config", str(config), "wms", "status", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["state"] == "connected"


def test_wms_connect_with_code_status_and_errors(
    make_config: ConfigFactory, lk: SandboxServer, tmp_path: Path
) -> None:
    config = logikura_yaml(make_config, lk, REDIRECT)
    runner = CliRunner()
    result = runner.invoke(app, ["--config", str(config), "wms", "status"])
    assert result.exit_code == 1 and "nebridge wms connect" in result.stdout
    code = lk.state.issue_code(REDIRECT)
    result = runner.invoke(
        app, ["--config", str(config), "wms", "connect", "--code", code, "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "connected"
    assert code not in result.stdout + result.stderr
    again = runner.invoke(app, ["--config", str(config), "wms", "connect", "--code", code])
    assert again.exit_code == 1 and "valid 10 minutes, once" in again.stderr

    csv_config = make_config()
    result = runner.invoke(app, ["--config", str(csv_config), "wms", "connect"])
    assert result.exit_code == 1 and "needs no authorisation" in result.stderr


def test_connect_refuses_a_warehouse_logikura_lacks(
    make_config: ConfigFactory, lk: SandboxServer
) -> None:
    config = make_config(
        warehouses=[{"code": "ITAKU", "import_orders": True}, {"code": "OSAKA"}],
        wms={
            "connector": "logikura",
            "logikura": logikura_section(lk),
        },
    )
    result = CliRunner().invoke(
        app, ["--config", str(config), "wms", "connect", "--code", lk.state.issue_code(REDIRECT)]
    )
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "authorised in Logikura, but" in message and "OSAKA" in message
    assert "ASAKUSA, ITAKU, SHINJUKU" in message and "warehouse_codes" in message


def test_redirect_receiver_checks_state_and_refusals() -> None:
    port = free_port()
    answers: list[int] = []

    def browser() -> None:
        for query in ("code=abc&state=other", "error=access_denied&state=s-1"):
            for _ in range(50):
                try:
                    answers.append(
                        requests.get(f"http://127.0.0.1:{port}/cb?{query}", timeout=5).status_code
                    )
                    break
                except requests.ConnectionError:
                    threading.Event().wait(0.05)

    thread = threading.Thread(target=browser)
    thread.start()
    with pytest.raises(RedirectError, match="refused"):
        wait_for_code(f"http://127.0.0.1:{port}/cb", "s-1", 10)
    thread.join()
    assert answers == [404, 200]  # another state is not taken: the wait goes on
    with pytest.raises(RedirectError, match="--code"):
        wait_for_code("https://example.com/cb", "s", 1)


def test_refresh_before_expiry_and_after_a_401(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    connector, ctx = connect(lk, tmp_path, http, clock)
    tokens = tmp_path / "logikura-tokens.json"
    first = token_values(tokens)
    clock.advance(22 * 3600)
    assert connector.product_snapshot(ctx, None) is not None
    assert refreshes(lk) == 0
    clock.advance(1.5 * 3600)  # within an hour of the 24 h end: refreshed first
    assert connector.product_snapshot(ctx, "old") is not None
    assert refreshes(lk) == 1
    second = token_values(tokens)
    assert second[0] != first[0] and second[1] != first[1]
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600

    lk.state.expire_access_tokens()  # Logikura ends it early: 401, refresh once, repeat
    clock.advance(901)  # the cached product master is due again
    assert connector.product_snapshot(ctx, "older") is not None
    assert refreshes(lk) == 2
    assert connector.link_status(ctx).state == "connected"


def test_one_refresh_for_two_connectors_at_once(
    lk: SandboxServer, tmp_path: Path, http: requests.Session
) -> None:
    clock = FakeTime(lk)
    first, _ = connect(lk, tmp_path, http, clock)
    clock.advance(23.5 * 3600)
    twins = [LogikuraConnector(first.config, clock=clock, sleep=clock.sleep) for _ in range(4)]
    errors: list[BaseException] = []

    def work(connector: LogikuraConnector) -> None:
        session = requests.Session()
        try:
            connector.product_snapshot(make_ctx(tmp_path, session, clock), "x")
        except BaseException as exc:
            errors.append(exc)
        finally:
            session.close()

    threads = [threading.Thread(target=work, args=(c,)) for c in twins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert refreshes(lk) == 1  # the others read the rotated grant from the file


def test_refresh_token_gone_means_reconnect(
    lk: SandboxServer,
    tmp_path: Path,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
    make_config: ConfigFactory,
) -> None:
    clock = FakeTime(lk)
    masked: list[str] = []
    connector, ctx = connect(lk, tmp_path, http, clock, mask_secret=masked.append)
    tokens = tmp_path / "logikura-tokens.json"
    secrets = [*token_values(tokens), SECRET]
    caplog.set_level(logging.DEBUG)
    clock.advance(91 * 86_400)
    with pytest.raises(LogikuraAuthError, match="nebridge wms connect") as gone:
        connector.push_orders(batch("k", order("1", ("TSHIRT-Red-S", 1))), ctx)
    assert "90 days" in str(gone.value)
    data = json.loads(tokens.read_text(encoding="utf-8"))
    assert data["state"] == "needs_reconnect" and "access_token" not in data
    assert connector.link_status(ctx).state == "needs_reconnect"
    before = refreshes(lk)
    with pytest.raises(LogikuraAuthError):  # reported to the engine, no new token request
        connector.product_snapshot(ctx, None)
    with pytest.raises(LogikuraAuthError):
        list(connector.pending_batches(EventKind.SHIPMENT, ctx))
    assert refreshes(lk) == before
    assert "nebridge wms connect" in caplog.text
    assert set(secrets[:2]) <= set(masked)
    for secret in secrets:
        assert secret not in caplog.text and secret not in str(gone.value)


def test_client_secret_from_env_wins(
    lk: SandboxServer, tmp_path: Path, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEBRIDGE_LOGIKURA_CLIENT_SECRET", SECRET)
    clock = FakeTime(lk)
    connector, ctx = connect(lk, tmp_path, http, clock, client_secret="wrong-in-file")
    assert connector.link_status(ctx).state == "connected"
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "logikura-client-secret").write_text("from-systemd\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert connector.config.client_secret_value() == "from-systemd"
    assert os.environ["NEBRIDGE_LOGIKURA_CLIENT_SECRET"] == SECRET
