"""Commands run as root keep the service user's state the service user's (review F30, F31).

An admin runs `sudo nebridge doctor` (or `connect`) on a host where the daemon runs as its own
user. Whatever root writes in the state folder (a rotated token pair, a lock, a new SQLite
database) must take the owner of the file it replaces, or of the folder: a root-owned token
file stops every Next Engine call of the running daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.sandbox import SandboxConfig, SandboxServer
from hooks.files import locked_file, make_private_folder, open_private, write_private
from tests.conftest import ConfigFactory

#: A uid/gid that is not root's (``nobody``): the service user of these tests.
SERVICE = 65534
CLIENT_ID, SECRET = "nebridge-test-client", "nebridge-test-secret-42"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")


def owner(path: Path) -> tuple[int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid


def service_folder(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chown(path, SERVICE, SERVICE)
    return path


@needs_root
def test_root_writes_in_a_service_folder_keep_the_service_owner(tmp_path: Path) -> None:
    state = service_folder(tmp_path / "state")
    new = state / "tokens.json"
    write_private(new, b"{}")
    assert owner(new) == (SERVICE, SERVICE)
    assert stat.S_IMODE(new.stat().st_mode) == 0o600

    taken = state / "taken.json"  # root took it over before the fix: it goes back
    taken.write_bytes(b"{}")
    write_private(taken, b"{ }")
    assert owner(taken) == (SERVICE, SERVICE)

    with locked_file(state / "tokens.json.lock"):
        pass
    assert owner(state / "tokens.json.lock") == (SERVICE, SERVICE)
    os.close(open_private(state / "nebridge.lock"))
    assert owner(state / "nebridge.lock") == (SERVICE, SERVICE)
    make_private_folder(state / "sub" / "deeper")
    assert owner(state / "sub") == owner(state / "sub" / "deeper") == (SERVICE, SERVICE)


@needs_root
def test_root_writes_in_roots_own_folder_stay_roots(tmp_path: Path) -> None:
    state = tmp_path / "root-state"
    state.mkdir(mode=0o700)
    os.chown(state, 0, 0)
    write_private(state / "tokens.json", b"{}")
    assert owner(state / "tokens.json") == (0, 0)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(client_id=CLIENT_ID, client_secret=SECRET, seed=3)) as sb:
        yield sb


@needs_root
def test_sudo_connect_and_doctor_leave_the_token_file_to_the_service_user(
    make_config: ConfigFactory,
    sandbox: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEBRIDGE_NE_CLIENT_SECRET", SECRET)
    config = make_config(
        nextengine={
            "api_base": sandbox.base_url,
            "login_base": sandbox.base_url,
            "client_id": CLIENT_ID,
        }
    )
    state = tmp_path / "state"
    for path in (state, *state.iterdir()):  # the service user's installation
        os.chown(path, SERVICE, SERVICE)
    tokens = state / "nextengine-tokens.json"

    uid, login_state = sandbox.state.issue_login()
    connected = CliRunner().invoke(
        app, ["--config", str(config), "connect", "--uid", uid, "--state", login_state]
    )
    assert connected.exit_code == 0, connected.output
    assert owner(tokens) == (SERVICE, SERVICE)  # F30

    before = json.loads(tokens.read_text(encoding="utf-8"))["access_token"]
    sandbox.state.expire_access_token()
    CliRunner().invoke(app, ["--config", str(config), "doctor"])
    assert json.loads(tokens.read_text(encoding="utf-8"))["access_token"] != before  # rotated
    assert owner(tokens) == (SERVICE, SERVICE)  # F31
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    leftovers = [p.name for p in state.iterdir() if owner(p) != (SERVICE, SERVICE)]
    assert leftovers == [], leftovers
    shutil.rmtree(state)


@needs_root
def test_sudo_db_upgrade_in_a_service_folder_leaves_the_database_to_the_service_user(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(migrate=False)
    state = service_folder(tmp_path / "state")
    upgraded = CliRunner().invoke(app, ["--config", str(config), "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    made = sorted(p.name for p in state.iterdir())
    assert "nebridge.db" in made
    assert {p.name: owner(p) for p in state.iterdir()} == dict.fromkeys(made, (SERVICE, SERVICE))


@needs_root
def test_root_refused_on_the_service_users_tokens_is_told_to_run_as_that_user(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    tokens = tmp_path / "state" / "nextengine-tokens.json"
    write_private(tokens, json.dumps({"access_token": "a", "refresh_token": "r"}).encode())
    os.chown(tokens, SERVICE, SERVICE)
    result = CliRunner().invoke(app, ["--config", str(config), "run", "--once"])
    assert result.exit_code == 1
    text = " ".join(result.stderr.split())
    assert f"the token file {tokens} belongs to nobody, not to root: run nebridge as nobody" in text
    assert "(`sudo -u nobody nebridge …`); only if it really belongs to root:" in text


@needs_root
def test_doctors_fix_for_a_missing_wms_folder_names_the_state_folders_owner(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    os.chown(tmp_path / "state", SERVICE, SERVICE)  # the service user's installation
    result = CliRunner().invoke(app, ["--config", str(config), "doctor", "--offline", "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    outbox = tmp_path / "wms" / "outbox"
    assert checks["wms_csv: wms.csv.outbox"]["fix"] == (
        f"start the service (`nebridge run` creates it), or "
        f"mkdir -p {outbox} && chown nobody: {outbox}"
    )


@needs_root
def test_the_logikura_store_root_creates_is_the_service_users(tmp_path: Path) -> None:
    from plugins.wms_logikura.store import LocalStore

    state = service_folder(tmp_path / "state")
    store = LocalStore(state / "logikura.db")
    assert store.path.exists()
    assert {p.name: owner(p) for p in state.iterdir()} == {
        p.name: (SERVICE, SERVICE) for p in state.iterdir()
    }
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
