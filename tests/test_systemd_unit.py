"""`nebridge systemd unit`: the unit for this installation, checked by systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory


def render(config: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--config", str(config), "systemd", "unit", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_unit_has_notify_watchdog_reload_credentials_and_paths(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    unit = render(config, "--user", "nbsvc")
    for line in ("Type=notify", "WatchdogSec=60s", "ExecReload=/bin/kill -HUP $MAINPID",
                 "User=nbsvc", "Group=nbsvc", "StateDirectory=nebridge",
                 "ConfigurationDirectory=nebridge", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=", "UMask=0077", "KillMode=mixed"):
        assert line in unit.splitlines(), line
    assert re.search(r"^LoadCredential=nextengine-client-secret:/\S+$", unit, re.M)
    assert f"ExecStart={Path(__file__).resolve().parents[1]}" in unit or "ExecStart=/" in unit
    assert f"--config {config.resolve()} run" in unit
    assert "db upgrade" in unit  # migrations before every start
    writable = re.search(r"^ReadWritePaths=(.*)$", unit, re.M)
    assert writable is not None
    assert str(tmp_path / "wms" / "inbox") in writable.group(1)
    assert str(tmp_path / "wms" / "outbox") in writable.group(1)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
def test_unit_exposure_is_at_most_2(make_config: ConfigFactory, tmp_path: Path) -> None:
    unit_file = tmp_path / "nebridge.service"
    unit_file.write_text(render(make_config()), encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit_file)],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for nebridge\.service: (\d+\.\d+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout
