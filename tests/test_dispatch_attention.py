"""A dispatcher that cannot send is an attention item, not only a log line (review F31).

The daemon runs as its service user; a token file root took over (``sudo nebridge doctor``
before the fix) made every dispatch fail with ``PermissionError`` and nothing but the log said
so. Run here as the real thing: the dispatcher in a process of another user (uid 65534) whose
executor reads the token file as every Next Engine call does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.outbox import insert_ignoring_duplicates
from daemon.store.engine import make_engine, write_session
from daemon.store.models import utcnow
from daemon.testing.installation import write_config

SERVICE = 65534  # nobody: the service user
AS_SERVICE = ("setpriv", f"--reuid={SERVICE}", f"--regid={SERVICE}", "--clear-groups")
ROOT = Path(__file__).resolve().parents[1]
DISPATCH = """
import sys
from pathlib import Path
from daemon.nextengine.tokens import FileTokenStore
from daemon.outbox import Dispatcher, OutboxState, transition
from daemon.store.engine import make_engine

engine = make_engine(f"sqlite:///{sys.argv[1]}")


class Sender:
    def reconcile(self, items):
        pass

    def execute(self, items):
        FileTokenStore(Path(sys.argv[2])).load()  # what every Next Engine call does first
        transition(engine, [i.id for i in items], OutboxState.DONE, result="sent")


print(Dispatcher(engine, {"ship_order": Sender()}).run_once().errors)
"""


@pytest.fixture
def install() -> Iterator[Path]:
    """An installation the service user can reach (pytest's tmp_path is root's, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="nebridge-dispatch-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def dispatch_as_service(database: Path, tokens: Path) -> str:
    result = subprocess.run(
        [*AS_SERVICE, sys.executable, "-c", DISPATCH, str(database), str(tokens)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def nebridge_as_service(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AS_SERVICE, sys.executable, "-m", "daemon", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def crashed(config: Path) -> list[dict[str, str]]:
    listed = CliRunner().invoke(app, ["--config", str(config), "attention", "--json"])
    items = json.loads(listed.stdout)["items"]
    return [i for i in items if i["kind"] == "crashed_stage"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_token_file_the_daemon_cannot_read_is_an_attention_item_with_the_fix(
    install: Path,
) -> None:
    config = write_config(install)
    state = install / "state"
    database = state / "nebridge.db"
    engine = make_engine(f"sqlite:///{database}")
    now = utcnow()
    with write_session(engine) as session:
        insert_ignoring_duplicates(
            session,
            [
                {
                    "idempotency_key": "ship:S-41",
                    "kind": "ship_order",
                    "warehouse": "ITAKU",
                    "plugin": "p",
                    "subject": "S-41",
                    "event_id": None,
                    "payload": "{}",
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
    engine.dispose()
    tokens = state / "nextengine-tokens.json"
    tokens.write_text(json.dumps({"access_token": "a", "refresh_token": "r"}), encoding="utf-8")
    tokens.chmod(0o600)  # root's: as `sudo nebridge doctor` left it
    for path in state.iterdir():
        if path != tokens:
            os.chown(path, SERVICE, SERVICE)
    os.chown(state, SERVICE, SERVICE)

    assert "PermissionError" in dispatch_as_service(database, tokens)
    [item] = crashed(config)
    assert str(tokens) in item["reason"] and "Permission denied" in item["reason"]
    assert f"`sudo chown nobody: {tokens}`" in item["fix"]

    os.chown(tokens, SERVICE, SERVICE)  # the admin applies the fix
    assert dispatch_as_service(database, tokens).strip() == "[]"
    assert crashed(config) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_status_and_doctor_call_an_unreadable_token_file_a_permission_problem(
    install: Path,
) -> None:
    config = write_config(install)
    state = install / "state"
    tokens = state / "nextengine-tokens.json"
    tokens.write_text(json.dumps({"access_token": "a", "refresh_token": "r"}), encoding="utf-8")
    tokens.chmod(0o600)  # root's, in the service user's folder
    for path in (state, *state.iterdir()):
        if path != tokens:
            os.chown(path, SERVICE, SERVICE)
    result = nebridge_as_service(config, "status")
    line = next(x for x in result.stdout.splitlines() if x.startswith("Next Engine"))
    assert "RE-CONNECTION" not in line and "nebridge connect" not in line, line
    assert f"TOKEN FILE UNREADABLE: nobody may not read {tokens} (Permission denied)" in line
    assert f"`sudo chown nobody: {tokens}`" in line
    doctor = nebridge_as_service(config, "doctor", "--offline", "--json")
    [link] = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "nextengine link"]
    assert link["fix"] == f"give it back to nobody: `sudo chown nobody: {tokens}`"
