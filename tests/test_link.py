"""connect / status / unlink end to end through the CLI against the sandbox over HTTP."""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from daemon.cli import app
from daemon.sandbox import SandboxConfig, SandboxServer
from tests.conftest import ConfigFactory

CLIENT_ID, SECRET = "nebridge-test-client", "nebridge-test-secret-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(client_id=CLIENT_ID, client_secret=SECRET, seed=3)) as sb:
        yield sb


@pytest.fixture
def linked_config(make_config: ConfigFactory, sandbox: SandboxServer) -> Path:
    return make_config(
        nextengine={
            "api_base": sandbox.base_url,
            "login_base": sandbox.base_url,
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "redirect_uri": f"http://127.0.0.1:{free_port()}/callback",
        }
    )


def cli(config: Path, *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, ["--config", str(config), *args], input=input)


def test_connect_through_the_loopback_redirect(
    linked_config: Path, sandbox: SandboxServer, tmp_path: Path
) -> None:
    result: dict[str, Any] = {}

    def run() -> None:
        result["r"] = cli(linked_config, "connect", "--timeout", "20", "--json")

    thread = threading.Thread(target=run)
    thread.start()
    text = linked_config.read_text()
    redirect = text.split("redirect_uri: ")[1].split()[0]
    for _ in range(100):  # the admin's browser: sign in, follow NE's redirect to nebridge
        try:
            page = requests.get(
                f"{sandbox.base_url}/users/sign_in/",
                params={"client_id": CLIENT_ID, "redirect_uri": redirect, "auto": "1"},
                timeout=5,
            )
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    thread.join(30)
    assert page.status_code == 200 and "Next Engine sign-in received" in page.text
    outcome = result["r"]
    assert outcome.exit_code == 0, outcome.output
    linked = json.loads(outcome.stdout)
    assert linked["state"] == "connected"
    assert linked["company_name"] and linked["refresh_token_end"]
    tokens_file = tmp_path / "state" / "nextengine-tokens.json"
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    pair = sandbox.state.current_tokens()
    assert pair is not None
    assert pair.access_token not in outcome.output and pair.refresh_token not in outcome.output


def test_connect_with_uid_state_then_status_then_unlink(
    linked_config: Path, sandbox: SandboxServer, tmp_path: Path
) -> None:
    uid, state = sandbox.state.issue_login()
    connected = cli(linked_config, "connect", "--uid", uid, "--state", state)
    assert connected.exit_code == 0, connected.output
    assert "connected to" in connected.stdout
    assert uid not in connected.output and state not in connected.output
    status = json.loads(cli(linked_config, "status", "--json").stdout)
    assert status["nextengine"]["state"] == "connected"
    assert status["nextengine"]["access_token_end"] < status["nextengine"]["refresh_token_end"]
    human = cli(linked_config, "status").stdout
    assert "Next Engine: connected to" in human and "refresh token until" in human
    # a used state cannot be used again (NE's state is single-use and lives 5 minutes)
    again = cli(linked_config, "connect", "--uid", uid, "--state", state)
    assert again.exit_code == 1 and "could not connect" in again.stderr

    refused = cli(linked_config, "unlink", input="n\n")
    assert refused.exit_code == 1
    assert (tmp_path / "state" / "nextengine-tokens.json").exists()
    done = cli(linked_config, "unlink", "--yes", "--json")
    assert done.exit_code == 0, done.output
    export = Path(json.loads(done.stdout)["exported_to"])
    assert export.is_file() and json.loads(export.read_text())["actions"] == []
    assert not (tmp_path / "state" / "nextengine-tokens.json").exists()
    status = json.loads(cli(linked_config, "status", "--json").stdout)
    assert status["nextengine"]["state"] == "not_connected"


def test_connect_without_secret_says_what_to_configure(
    make_config: ConfigFactory, sandbox: SandboxServer
) -> None:
    config = make_config(nextengine={"api_base": sandbox.base_url, "client_id": CLIENT_ID})
    uid, state = sandbox.state.issue_login()
    result = cli(config, "connect", "--uid", uid, "--state", state)
    assert result.exit_code == 1
    assert "NEBRIDGE_NE_CLIENT_SECRET" in result.stderr
