"""The demo as a new admin meets it (issue #13 finding 10): it refuses a folder that holds
something, says where its files are (or removes them), and runs from an installed package
without a source checkout next to it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_demo_refuses_a_folder_that_is_not_empty_unless_forced(tmp_path: Path) -> None:
    installation = tmp_path / "site"
    installation.mkdir()
    (installation / "daemon.yaml").write_text("state_dir: state\n", encoding="utf-8")
    (installation / "state").mkdir()
    result = CliRunner().invoke(app, ["demo", "--dir", str(installation)])
    assert result.exit_code == 2
    assert "holds a nebridge installation" in result.stderr and "--force" in result.stderr
    assert (installation / "daemon.yaml").read_text(encoding="utf-8") == "state_dir: state\n"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("x", encoding="utf-8")
    refused = CliRunner().invoke(app, ["demo", "--dir", str(other)])
    assert refused.exit_code == 2 and "is not empty (todo.txt)" in refused.stderr
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    assert CliRunner().invoke(app, ["demo", "--dir", str(a_file)]).exit_code == 2


def test_the_example_configuration_ships_inside_the_package() -> None:
    shipped = ROOT / "daemon" / "resources" / "daemon.yaml"
    assert shipped.read_bytes() == (ROOT / "daemon.yaml").read_bytes()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "resources/*" in pyproject["tool"]["setuptools"]["package-data"]["daemon"]


def test_demo_runs_from_an_installed_package_and_removes_its_temporary_folder(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site-packages"
    for package in ("daemon", "plugins", "hooks"):  # what the wheel holds (links followed)
        shutil.copytree(
            ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "TMPDIR": str(temp)}
    where = subprocess.run(
        [sys.executable, "-c", "import daemon; print(daemon.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip() == str(site / "daemon" / "__init__.py")
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "demo"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "demo check passed" in result.stderr
    assert "removed the demo folder" in result.stderr
    assert list(temp.iterdir()) == [] and list(elsewhere.iterdir()) == []


def test_config_example_prints_the_shipped_example(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config", "example"])
    assert result.exit_code == 0
    assert result.stdout == (ROOT / "daemon.yaml").read_text(encoding="utf-8")
    written = tmp_path / "daemon.yaml"
    written.write_text(result.stdout, encoding="utf-8")
    checked = CliRunner().invoke(app, ["--config", str(written), "config", "check"])
    assert checked.exit_code == 0, checked.output
