"""The CLI behaves like the tools admins already use (issue #13 findings 6-9).

Walked through the real CLI (CliRunner, and a subprocess where the shell matters): the
config file stays the admin's when the CLI edits it, ``--config`` is taken anywhere,
completion installs, output has one style, errors of ``--json`` commands are JSON, nonsense
limits are usage errors, read-only commands create nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from daemon.cli import app
from tests.conftest import ConfigFactory, dump_yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "daemon.yaml"
ISO_WITH_OFFSET = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The shipped, commented example configuration, with its folders in tmp_path."""
    path = tmp_path / "etc" / "daemon.yaml"
    path.parent.mkdir()
    shutil.copy(EXAMPLE, path)
    return path


# -- finding 6: the config file stays the admin's ------------------------------------------


def test_edits_go_to_the_target_of_a_symlinked_config_and_keep_owner_group_mode(
    example: Path, tmp_path: Path
) -> None:
    os.chown(example, 0, 4)  # root:adm, as /etc/nebridge/daemon.yaml might be (root:nebridge)
    example.chmod(0o640)
    link = tmp_path / "daemon.yaml"
    link.symlink_to(example)
    before = os.stat(example)
    for args in (["plugins", "enable", "tag_filter"], ["warehouses", "unlink", "ITAKU"]):
        result = cli("--config", str(link), *args)
        assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == example
    after = os.stat(example)
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (
        before.st_uid,
        before.st_gid,
        0o640,
    )
    text = example.read_text(encoding="utf-8")
    assert "enabled: true\n    tag:" in text and "ne_linked: false" in text
    assert not [p for p in example.parent.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the file to another user")
def test_an_edit_that_would_change_the_files_group_is_refused() -> None:
    folder = Path(tempfile.mkdtemp(prefix="nebridge-cfg-"))  # reachable by nobody
    try:
        _refused_as_nobody(folder)
    finally:
        shutil.rmtree(folder)


def _refused_as_nobody(folder: Path) -> None:
    folder.chmod(0o777)
    example = folder / "daemon.yaml"
    shutil.copy(EXAMPLE, example)
    os.chown(example, 0, 4)
    example.chmod(0o666)
    original = example.read_text(encoding="utf-8")
    script = (
        "import os, sys, importlib.metadata; from daemon.cli import app; "
        "import plugins.tag_filter, plugins.wms_csv, daemon.admin; "
        "os.setgid(65534); os.setuid(65534); "  # nobody, who may not give files group adm
        "sys.argv = ['nebridge'] + sys.argv[1:]; app()"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "--config", str(example), "plugins", "enable", "tag_filter"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    if "Traceback" in result.stderr:
        pytest.skip(f"this installation cannot run as nobody: {result.stderr[-300:]}")
    assert result.returncode == 1, result.stderr
    assert "belongs to uid 0 and gid 4" in result.stderr and "sudo" in result.stderr
    assert example.read_text(encoding="utf-8") == original
    assert os.stat(example).st_gid == 4


# -- finding 7: --config anywhere, completion, plugins -------------------------------------


def test_config_is_taken_before_or_after_the_subcommand_and_from_the_environment(
    example: Path, tmp_path: Path
) -> None:
    for args in (
        ["--config", str(example), "warehouses", "list", "--json"],
        ["warehouses", "list", "--json", "--config", str(example)],
        ["warehouses", "list", f"--config={example}", "--json"],
        ["warehouses", "-c", str(example), "list", "--json"],
    ):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.output)
        assert json.loads(result.stdout)[0]["code"] == "ITAKU", args
    from_env = cli("warehouses", "list", "--json", env={"NEBRIDGE_CONFIG": str(example)})
    assert from_env.exit_code == 0 and json.loads(from_env.stdout)[0]["code"] == "ITAKU"


def test_shell_completion_installs(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    nebridge = Path(sys.executable).parent / "nebridge"
    if not nebridge.exists():
        pytest.skip("the nebridge script is not installed in this environment")
    # As an admin types it, in bash: typer detects the shell from the parent process (the
    # second command keeps bash from exec-ing nebridge in its place).
    shown = subprocess.run(
        ["bash", "-c", f"'{nebridge}' --show-completion; exit $?"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "_nebridge_completion" in shown.stdout
    installed = subprocess.run(
        ["bash", "-c", f"'{nebridge}' --install-completion; exit $?"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "nebridge.sh"
    assert script.is_file() and "_nebridge_completion" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()
    completed = subprocess.run(
        [str(nebridge)],
        env={
            **env,
            "_NEBRIDGE_COMPLETE": "complete_bash",
            "COMP_WORDS": "nebridge plug",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "plugins" in completed.stdout.split()


# -- finding 8: one output style --------------------------------------------------------------


#: Other parts' commands still to adopt ``limit_option`` / ``metavar`` (the integrator's
#: sweep empties this).
SWEEP_PENDING = {("attention",), ("orders", "list")}


def test_help_has_no_raw_markup() -> None:
    import typer

    command = typer.main.get_command(app)

    def walk(group: object, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, sub in getattr(group, "commands", {}).items():
            found += walk(sub, [*path, name])
        return found

    raw = re.compile(r"``|<bool>|list\[|\[bold|\[/\]|<int range>")
    for path in walk(command, []):
        if tuple(path) in SWEEP_PENDING:
            continue
        result = cli(*path, "--help")
        assert result.exit_code == 0, path
        assert not raw.findall(result.stdout), (path, raw.findall(result.stdout))


def test_booleans_are_yes_no_and_times_iso_with_offset_in_the_configured_zone(
    make_config: ConfigFactory,
) -> None:
    config = make_config(timezone="Asia/Tokyo")
    listed = cli("--config", str(config), "warehouses", "list")
    itaku = next(line for line in listed.stdout.splitlines() if "ITAKU" in line)
    assert " yes " in itaku and "True" not in listed.stdout
    shinjuku = next(line for line in listed.stdout.splitlines() if "SHINJUKU" in line)
    assert " no " in shinjuku and "False" not in listed.stdout
    inbox = config.parent / "wms" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "receipts-1.csv").write_text(
        "receipt_id,warehouse,confirmed_at,product_code,quantity\n"
        "R-1,ITAKU,2026-12-01T10:00:00+09:00,P-B,5\n",
        encoding="utf-8",
    )
    cli("--config", str(config), "run", "--once")  # rejected: no product master yet
    shown = cli("--config", str(config), "inbox", "list", "--state", "rejected")
    assert re.search(ISO_WITH_OFFSET.replace(r"[+-]\d\d:\d\d", r"\+09:00"), shown.stdout), (
        shown.stdout
    )
    assert " UTC" not in shown.stdout


def test_errors_of_json_commands_are_json(example: Path, tmp_path: Path) -> None:
    result = cli("--config", str(example), "history", "--order", "999", "--json")
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["exit_code"] == 1 and "there is no database" in error["error"]
    plain = cli("--config", str(example), "history", "--order", "999")
    assert plain.stdout == "" and "error:" in plain.stderr


# -- finding 9: usage errors, nothing created by reading --------------------------------------


@pytest.mark.parametrize("command", [["inbox", "list"], ["outbox", "list"]])
def test_an_absurd_limit_is_a_usage_error(make_config: ConfigFactory, command: list[str]) -> None:
    config = make_config()
    result = cli("--config", str(config), *command, "--limit", str(10**20))
    assert result.exit_code == 2
    assert f"'--limit': {10**20} is not between 1 and 100000" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    as_json = cli(*command, "--json", "--limit", "0", "--config", str(config))
    assert as_json.exit_code == 2
    assert json.loads(as_json.stdout) == {
        "error": "Invalid value for '--limit': 0 is not between 1 and 100000",
        "exit_code": 2,
    }


@pytest.mark.parametrize(
    "wms",
    [
        # the csv connector still creates its folders when it is built (its own tests rely on
        # it): to be moved into its first scan by the connector's owner, then add it here
        {"connector": "logikura", "logikura": {"client_id": "lk"}}
    ],
    ids=["logikura"],
)
def test_read_only_commands_create_no_folder_and_no_database(
    tmp_path: Path, wms: dict[str, object]
) -> None:
    config = tmp_path / "daemon.yaml"
    config.write_text(
        dump_yaml(
            {
                "state_dir": "state",
                "nextengine": {"client_id": "x"},
                "wms": wms,
                "warehouses": [{"code": "ITAKU"}],
            }
        ),
        encoding="utf-8",
    )
    for args in (
        ["config", "check"],
        ["status"],
        ["wms", "status"],
        ["inbox", "list"],
        ["outbox", "list"],
        ["history", "--order", "1"],
        ["systemd", "unit"],
        ["warehouses", "list"],
        ["plugins", "list"],
    ):
        result = cli("--config", str(config), *args)
        assert "Traceback" not in result.output, (args, result.output)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.yaml"], args
    status = cli("--config", str(config), "status")
    assert status.exit_code == 1 and "nebridge db upgrade" in status.stderr


def test_the_sign_in_url_is_printed_whole_on_its_own_line(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    from daemon.config import load_config
    from daemon.nelink import sign_in_url

    config = make_config(
        nextengine={
            "client_id": "c" * 40,
            "client_secret": "s",
            "redirect_uri": "http://127.0.0.1:1/a-long-callback-path-for-an-80-column-terminal",
        }
    )
    result = cli("--config", str(config), "connect", "--timeout", "0.2")
    assert result.exit_code == 1  # nobody signs in; the receiver gives up
    url = sign_in_url(load_config(config).config)
    assert len(url) > 80 and url in result.stderr.splitlines()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: /sys refuses new folders even to root")
def test_a_state_dir_that_cannot_be_created_is_one_line(make_config: ConfigFactory) -> None:
    config = make_config(migrate=False, state_dir="/sys/nebridge-state")
    result = cli("--config", str(config), "db", "upgrade")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "cannot use /sys/nebridge-state" in result.stderr
    assert "sudo install -d" in result.stderr
