"""``nebridge plugins new``: refusals with their reasons, and — as a new author would — each
kind generated, installed into a fresh venv with nebridge, passing its own tests there and
working in ``nebridge run --once`` against the Next Engine sandbox."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from typer.testing import CliRunner

import daemon
from daemon.cli import app
from daemon.sandbox import SandboxServer
from daemon.scaffold import hook_api_range, nebridge_range
from daemon.testing.installation import (
    DEFAULT_PLUGINS,
    kit_sandbox_config,
    sandbox_settings,
    sign_in,
    write_config,
)
from hooks import HOOK_API_VERSION

REPO = Path(__file__).resolve().parents[2]
KINDS = {
    "filter": "skip_shops",
    "actions": "track_warn",
    "connector": "wms_json",
    "notifier": "jsonl_notify",
}


def new(*args: str) -> tuple[int, str]:
    """``nebridge plugins new ARGS``: exit code and everything printed."""
    result = CliRunner().invoke(app, ["plugins", "new", *args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["1st"], "not a valid plugin name"),
        (["Skip"], "not a valid plugin name"),
        (["class"], "not a valid plugin name"),
        (["\uff4a\uff53\uff4f\uff4e"], "not a valid plugin name"),  # full-width ｊｓｏｎ
        (["caf\u00e9"], "not a valid plugin name"),
        (["wms_csv"], "already installed"),
        (["json"], "a Python module named 'json' already exists"),
        (["json_wms", "--kind", "connector"], "named wms_<connector>"),
        (["fine_name", "--kind", "exporter"], "choose one of filter, actions, connector, notifier"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(
    args: list[str], reason: str, tmp_path: Path
) -> None:
    code, out = new(*args, "--dir", str(tmp_path / "pkg"))
    assert code == 2 and reason in out, out
    assert not (tmp_path / "pkg").exists()


def test_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    code, out = new("fine_name", "--dir", str(tmp_path))
    assert code == 2 and "not an empty folder" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_generated_package_declares_versions_and_entry_point(tmp_path: Path) -> None:
    code, out = new("skip_shops", "--dir", str(tmp_path / "pkg"), "--json")
    assert code == 0, out
    made = json.loads(out)
    assert made["distribution"] == "nebridge-skip-shops"
    assert made["files"] == [
        "README.md",
        "pyproject.toml",
        "skip_shops/__init__.py",
        "tests/test_skip_shops.py",
    ]
    pyproject = (tmp_path / "pkg" / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points.nebridge]\nskip_shops = "skip_shops"' in pyproject
    assert f'"nebridge{nebridge_range(daemon.__version__)}"' in pyproject
    plugin = (tmp_path / "pkg" / "skip_shops" / "__init__.py").read_text(encoding="utf-8")
    assert f'hook_api="{hook_api_range(HOOK_API_VERSION)}"' in plugin


def test_version_ranges() -> None:
    assert nebridge_range("0.1.0") == ">=0.1.0,<0.2"
    assert nebridge_range("1.4.2") == ">=1.4.2,<2"
    assert nebridge_range("0.0.0+source") == ">=0.0.0,<0.1"
    assert hook_api_range("1.1") == ">=1.1,<2"


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """A subprocess, its output kept for the assertion message."""
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
def test_every_kind_works_as_generated_in_a_fresh_venv(tmp_path: Path) -> None:
    for kind, name in KINDS.items():
        code, out = new(name, "--kind", kind, "--dir", str(tmp_path / name))
        assert code == 0, out
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python, nebridge = env_dir / "bin" / "python", env_dir / "bin" / "nebridge"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "-e",
            f"{REPO}[test]",
            *(arg for name in KINDS.values() for arg in ("-e", str(tmp_path / name))),
        ],
        tmp_path,
        env,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    isolated = run([str(python), "-c", "import sys; print(sys.prefix, sys.path)"], tmp_path, env)
    assert str(Path(sys.prefix).resolve()) not in isolated.stdout  # not the project's venv

    for name in KINDS.values():
        tested = run(
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], tmp_path / name, env
        )
        assert tested.returncode == 0, f"{name}: {tested.stdout[-3000:]}{tested.stderr[-2000:]}"

    with SandboxServer(kit_sandbox_config()) as ne:
        wms = tmp_path / "site" / "wms"
        plugins = {
            **DEFAULT_PLUGINS,
            "skip_shops": {"enabled": True, "skip_shop_ids": ["2"]},
            "track_warn": {"enabled": True},
            "jsonl_notify": {"enabled": True, "path": str(tmp_path / "told.jsonl")},
        }
        config = write_config(
            tmp_path / "site",
            plugins=plugins,
            **sandbox_settings(ne),
            wms={"connector": "json", "json": {"folder": str(wms)}},
        )
        sign_in(config, ne)
        ne.state.create_goods("A-1", quantity=5)
        kept = ne.state.create_order([("A-1", 1)], shop_id=1)
        ne.state.create_order([("A-1", 1)], shop_id=2)
        (wms / "in").mkdir(parents=True)
        (wms / "in" / "products.json").write_text('{"P-A": "A-1"}', encoding="utf-8")
        once = [str(nebridge), "--config", str(config), "run", "--once", "--json"]
        first = run(once, tmp_path, env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        (written,) = list((wms / "out").glob("orders-*.json"))
        assert [o["ne_order_id"] for o in json.loads(written.read_text("utf-8"))] == [str(kept)]

        (wms / "in" / "shipment-1.json").write_text(
            json.dumps(
                {
                    "id": "S-1",
                    "warehouse": "ITAKU",
                    "ne_order_id": str(kept),
                    "tracking_number": "",
                    "confirmed_at": "2026-11-27T10:00:00+09:00",
                    "lines": [["P-A", 1]],
                }
            ),
            encoding="utf-8",
        )
        second = run(once, tmp_path, env)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert f"order {kept} shipped without a tracking number" in second.stdout
        assert ne.ledger.shipped_order_ids() == [kept]
        listed = run(
            [str(nebridge), "--config", str(config), "plugins", "list", "--json"], tmp_path, env
        )
        states = {row["name"]: row["state"] for row in json.loads(listed.stdout)}
        assert all(states[name] == "loaded" for name in KINDS.values()), states


@pytest.mark.parametrize("kind", list(KINDS))
def test_generated_code_is_lint_clean(kind: str, tmp_path: Path) -> None:
    code, out = new(KINDS[kind], "--kind", kind, "--dir", str(tmp_path / "pkg"))
    assert code == 0, out
    linted = run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], tmp_path / "pkg")
    assert linted.returncode == 0, linted.stdout


@pytest.mark.parametrize("kind", list(KINDS))
def test_generated_options_are_described_and_the_readme_says_how_to_switch_it_on(
    kind: str,
    tmp_path: Path,
) -> None:
    name = KINDS[kind]
    code, out = new(name, "--kind", kind, "--dir", str(tmp_path / "pkg"))
    assert code == 0, out
    spec = importlib.util.spec_from_file_location(
        f"generated_{name}", tmp_path / "pkg" / name / "__init__.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fields = module.Options.model_fields  # what `nebridge plugins info` shows
    assert fields and all(f.description for f in fields.values()), fields
    readme = " ".join((tmp_path / "pkg" / "README.md").read_text(encoding="utf-8").split())
    assert "pip install -e /path/to/nebridge" in readme
    switch_on = (
        "`wms.connector: json`" if kind == "connector" else f"`nebridge plugins enable {name}`"
    )
    assert switch_on in readme, readme
