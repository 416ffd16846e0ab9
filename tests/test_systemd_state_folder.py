"""The unit's state and configuration folders are this installation's (review F16, F17).

`systemd unit` names ``StateDirectory=`` after ``state_dir`` (systemd manages only folders
under /var/lib: elsewhere the state folder is a ``ReadWritePaths=`` folder the admin creates),
and the command its note gives to create that folder makes a folder `nebridge run` accepts.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory
from tests.test_systemd_unit import ANALYZE, NO_ANALYZE, settings


def unit_of(config: Path, *args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["--config", str(config), "systemd", "unit", *args])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


@pytest.fixture
def var_lib_name() -> Iterator[str]:
    """A /var/lib folder name no installation uses; never created by rendering."""
    name = f"nebridge-test-{secrets.token_hex(4)}"
    yield name
    assert not (Path("/var/lib") / name).exists()  # `systemd unit` creates nothing


def test_a_state_dir_under_var_lib_is_its_own_state_directory(
    make_config: ConfigFactory, tmp_path: Path, var_lib_name: str
) -> None:
    state = Path("/var/lib") / var_lib_name
    config = make_config(migrate=False, state_dir=str(state))
    unit, notes = unit_of(config, "--user", "nbsvc")
    assert settings(unit, "StateDirectory") == [var_lib_name]
    assert settings(unit, "StateDirectoryMode") == ["0700"]
    assert f"# {state} (database, tokens): created 0700 for nbsvc by systemd." in unit
    assert "/var/lib/nebridge " not in unit and "/var/lib/nebridge\n" not in unit
    writable = settings(unit, "ReadWritePaths")[0].split()
    assert str(state) not in writable and str(tmp_path / "wms" / "inbox") in writable
    assert settings(unit, "ConfigurationDirectory") == []  # daemon.yaml is not under /etc
    assert str(state) not in notes


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write a config under /etc")
@pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)
def test_the_derived_folders_verify_with_systemd_analyze(tmp_path: Path, var_lib_name: str) -> None:
    assert ANALYZE is not None
    etc = Path("/etc") / var_lib_name
    etc.mkdir(mode=0o750)
    try:
        config = etc / "daemon.yaml"
        source = CliRunner().invoke(app, ["config", "example"])
        text = re.sub(r"(?m)^state_dir:.*$", f"state_dir: /var/lib/{var_lib_name}", source.stdout)
        config.write_text(text, encoding="utf-8")
        unit, _notes = unit_of(config)
    finally:
        shutil.rmtree(etc)
    assert settings(unit, "StateDirectory") == [var_lib_name]
    assert settings(unit, "ConfigurationDirectory") == [var_lib_name]
    unit_file = tmp_path / "nebridge.service"
    unit_file.write_text(unit, encoding="utf-8")
    verify = subprocess.run(
        [ANALYZE, "verify", str(unit_file)], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout + verify.stderr == "", verify.stdout + verify.stderr


def test_the_noted_command_for_a_state_folder_elsewhere_makes_one_run_accepts(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    state = tmp_path / "srv" / "nebridge-state"
    state.parent.mkdir()
    config = make_config(migrate=False, state_dir=str(state))
    user = os.environ.get("USER") or "root"
    group = Path("/").owner() if os.geteuid() == 0 else user
    unit, notes = unit_of(config, "--user", user)
    assert settings(unit, "StateDirectory") == []
    assert str(state) in settings(unit, "ReadWritePaths")[0].split()
    [note] = [n for n in notes.splitlines() if f" {state}" in n and "install -d" in n]
    command = note.split(": sudo ", 1)[1].replace(f"-g {user}", f"-g {group}")
    subprocess.run(shlex.split(command), check=True, timeout=60)  # as the admin would

    upgraded = CliRunner().invoke(app, ["--config", str(config), "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    run = CliRunner().invoke(app, ["--config", str(config), "run", "--once", "--dry-run"])
    assert "refusing to start" not in run.output, run.output


def test_a_state_folder_open_to_its_group_is_refused_in_those_words(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    state = tmp_path / "state"
    state.chmod(0o750)
    result = CliRunner().invoke(app, ["--config", str(config), "run", "--once"])
    assert result.exit_code == 1
    text = " ".join(result.stderr.split())
    assert f"the state folder {state} is open to its group (mode 0750)" in text
    assert f"chmod 700 {state}" in text
