"""Secrets outside systemd, and the privacy of the state folder (issue #13 finding 5).

Walked as the README's install does: the client secret lives only in the credentials folder
the unit's ``LoadCredential=`` points into, and ``nebridge connect`` run by hand (no
``$CREDENTIALS_DIRECTORY``) finds it there. Token files that others could read, or symbolic
links, make ``nebridge run`` refuse to start with the fix; a new SQLite database is 0600 in a
0700 state folder.
"""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.sandbox import SandboxConfig, SandboxServer
from tests.conftest import ConfigFactory

CLIENT_ID, SECRET = "nebridge-test-client", "nebridge-test-secret-42"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(client_id=CLIENT_ID, client_secret=SECRET, seed=3)) as sb:
        yield sb


def test_connect_by_hand_reads_the_secret_where_the_unit_loads_it_from(
    make_config: ConfigFactory,
    sandbox: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("NEBRIDGE_NE_CLIENT_SECRET", raising=False)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o750)
    secret_file = credentials / "nextengine-client-secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    secret_file.chmod(0o640)
    config = make_config(
        credentials_dir="credentials",
        nextengine={
            "api_base": sandbox.base_url,
            "login_base": sandbox.base_url,
            "client_id": CLIENT_ID,
        },
    )
    unit = CliRunner().invoke(app, ["--config", str(config), "systemd", "unit"])
    assert unit.exit_code == 0, unit.output
    loaded = re.search(r"^LoadCredential=nextengine-client-secret:(\S+)$", unit.stdout, re.M)
    assert loaded is not None and Path(loaded.group(1)) == secret_file

    uid, state = sandbox.state.issue_login()
    connected = CliRunner().invoke(
        app, ["--config", str(config), "connect", "--uid", uid, "--state", state, "--json"]
    )
    assert connected.exit_code == 0, connected.output
    assert json.loads(connected.stdout)["state"] == "connected"
    assert SECRET not in connected.output


def test_a_secret_file_missing_everywhere_names_the_credentials_folder(
    make_config: ConfigFactory,
    sandbox: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NEBRIDGE_NE_CLIENT_SECRET", raising=False)
    config = make_config(
        credentials_dir=str(tmp_path / "creds"),
        nextengine={"api_base": sandbox.base_url, "client_id": CLIENT_ID},
    )
    uid, state = sandbox.state.issue_login()
    result = CliRunner().invoke(
        app, ["--config", str(config), "connect", "--uid", uid, "--state", state]
    )
    assert result.exit_code == 1
    assert f"{tmp_path / 'creds'}/nextengine-client-secret" in result.stderr


def test_a_new_sqlite_database_is_0600_in_a_0700_state_folder(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(migrate=False)
    upgraded = CliRunner().invoke(app, ["--config", str(config), "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.glob("nebridge.db*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _tokens(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps({"access_token": "a", "refresh_token": "r"}), encoding="utf-8")


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_run_refuses_a_token_file_others_can_read(
    make_config: ConfigFactory, tmp_path: Path, mode: int
) -> None:
    config = make_config()
    tokens = tmp_path / "state" / "nextengine-tokens.json"
    _tokens(tokens)
    tokens.chmod(mode)
    result = CliRunner().invoke(app, ["--config", str(config), "run", "--once"])
    assert result.exit_code == 1
    assert "refusing to start" in result.stderr
    assert f"chmod 600 {tokens}" in result.stderr.replace("\n", "")


def test_run_refuses_a_symlinked_token_file_and_a_connector_token_file_open_to_others(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    real = tmp_path / "elsewhere" / "tokens.json"
    _tokens(real)
    real.chmod(0o600)
    (tmp_path / "state").mkdir(mode=0o700, exist_ok=True)
    (tmp_path / "state" / "nextengine-tokens.json").symlink_to(real)
    wms = tmp_path / "state" / "logikura-tokens.json"
    _tokens(wms)
    wms.chmod(0o644)
    result = CliRunner().invoke(app, ["--config", str(config), "run", "--once"])
    assert result.exit_code == 1
    err = result.stderr.replace("\n", "")
    assert "nextengine-tokens.json is a symbolic link" in err
    assert f"chmod 600 {wms}" in err


def test_run_refuses_a_state_folder_open_to_others(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    state = tmp_path / "state"
    os.chmod(state, 0o755)
    result = CliRunner().invoke(app, ["--config", str(config), "run", "--once"])
    assert result.exit_code == 1
    assert f"chmod 700 {state}" in result.stderr.replace("\n", "")


def test_state_dir_pointing_at_a_file_is_a_config_error(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    occupied = tmp_path / "occupied"
    occupied.write_text("not a folder", encoding="utf-8")
    config = make_config(migrate=False, state_dir=str(occupied / "state"))
    for args in (["config", "check"], ["status"], ["db", "upgrade"]):
        result = CliRunner().invoke(app, ["--config", str(config), *args])
        assert result.exit_code == 1, (args, result.output)
        assert f"{occupied} is a file, not a folder" in result.stderr.replace("\n", ""), args
        assert "Traceback" not in result.output


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to read as another user")
def test_a_credential_the_service_user_cannot_read_names_the_fix() -> None:
    folder = Path(tempfile.mkdtemp(prefix="nebridge-creds-"))
    try:
        folder.chmod(0o755)
        secret = folder / "nextengine-client-secret"
        secret.write_text("s\n", encoding="utf-8")
        secret.chmod(0o600)  # root's only, as the README once said
        script = (
            "import os, sys; from hooks.credentials import read_credential, "
            "SecretUnreadable; os.setgid(65534); os.setuid(65534)\n"
            "try:\n    read_credential('nextengine-client-secret', "
            f"__import__('pathlib').Path({str(folder)!r}), {{}})\n"
            "except SecretUnreadable as exc:\n    print(exc)"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert result.returncode == 0, result.stderr
        assert f"the credential {secret} cannot be read by this user" in result.stdout
        group = grp.getgrgid(65534).gr_name  # the reader's group, not a guessed "nebridge"
        assert f"sudo chgrp {group} {folder} {secret}" in result.stdout
        assert f"sudo chmod 0640 {secret}" in result.stdout
    finally:
        shutil.rmtree(folder)
