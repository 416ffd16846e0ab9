"""The admin CLI through Typer's CliRunner: real config files, real databases."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory

EXAMPLE = Path(__file__).resolve().parents[1] / "daemon.yaml"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the shipped, commented example configuration."""
    path = tmp_path / "daemon.yaml"
    shutil.copy(EXAMPLE, path)
    return path


def invoke(runner: CliRunner, config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def test_config_check_ok_and_env_variable(
    runner: CliRunner, example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = invoke(runner, example, "config", "check")
    assert code == 0 and "configuration is valid" in out
    monkeypatch.setenv("NEBRIDGE_CONFIG", str(example))
    result = runner.invoke(app, ["config", "check", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["valid"] is True


def test_config_check_lists_every_problem_with_line(runner: CliRunner, example: Path) -> None:
    text = example.read_text(encoding="utf-8")
    text = text.replace(
        "  status_update:\n    enabled: true", "  status_update:\n    enabled: false"
    )
    text = text.replace("tag: ロジクラ受注取込対象", "tag: '[bad]'")
    text = text.replace("  tag_filter:\n    enabled: false", "  tag_filter:\n    enabled: true")
    example.write_text(text, encoding="utf-8")
    code, _out, err = invoke(runner, example, "config", "check")
    assert code == 1
    assert "plugins.tracking_update.enabled" in err and "plugins.stock_minus.enabled" in err
    assert "plugins.tag_filter.tag" in err and "line " in err
    code, out, _ = invoke(runner, example, "config", "check", "--json")
    data = json.loads(out)
    assert code == 1 and data["valid"] is False
    assert {i["path"] for i in data["issues"]} == {
        "plugins.tracking_update.enabled",
        "plugins.stock_minus.enabled",
        "plugins.tag_filter.tag",
    }


def test_plugins_list_json_and_info(runner: CliRunner, example: Path) -> None:
    code, out, _ = invoke(runner, example, "plugins", "list", "--all", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["tracking_update"]["requires"] == ["status_update"]
    assert rows["tag_filter"]["state"] == "disabled" and rows["status_update"]["state"] == "loaded"
    code, out, _ = invoke(runner, example, "plugins", "list", "--json")
    every = {r["name"]: r for r in json.loads(out)}
    assert every["tag_filter"]["enabled"] is False and every["status_update"]["enabled"] is True
    assert every["tag_filter"]["summary"]  # read while it stays disabled
    code, out, _ = invoke(runner, example, "plugins", "list", "--enabled", "--json")
    assert "tag_filter" not in {r["name"] for r in json.loads(out)}
    code, out, _ = invoke(runner, example, "plugins", "list")
    line = next(row for row in out.splitlines() if "tag_filter" in row)
    assert " no " in line and "disabled" in line
    code, out, _ = invoke(runner, example, "plugins", "info", "wms_csv", "--json")
    assert code == 0 and json.loads(out)["state"] == "loaded"
    code, out, _ = invoke(runner, example, "plugins", "info", "tag_filter", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["enabled"] is False and shown["state"] == "disabled"
    assert "tag" in shown["config_schema"]["properties"]
    assert "enabled: true" not in example.read_text(encoding="utf-8").split("tag_filter:")[1][:30]
    code, _out, err = invoke(runner, example, "plugins", "info", "nope")
    assert code == 1 and "`nebridge plugins list` shows the installed ones" in err


def test_enable_disable_round_trip_keeps_comments_and_order(
    runner: CliRunner, example: Path
) -> None:
    original = example.read_text(encoding="utf-8")
    code, _out, err = invoke(runner, example, "plugins", "enable", "tag_filter")
    assert code == 0 and "systemctl reload nebridge" in err
    enabled = example.read_text(encoding="utf-8")
    assert "  tag_filter:\n    enabled: true\n    tag: ロジクラ受注取込対象" in enabled
    assert enabled.count("#") == original.count("#")
    code, _out, _err = invoke(runner, example, "plugins", "disable", "tag_filter")
    assert code == 0
    assert example.read_text(encoding="utf-8") == original


def test_disabling_the_connector_in_use_is_refused(runner: CliRunner, example: Path) -> None:
    original = example.read_text(encoding="utf-8")
    found = re.search(r"^  connector: (\w+)", original, re.MULTILINE)
    assert found, "the example names its connector"
    connector = found[1]
    code, _out, err = invoke(runner, example, "plugins", "disable", f"wms_{connector}")
    assert code == 1
    assert (
        f"wms_{connector} is the WMS connector in use (`wms.connector: {connector}`); "
        "choose another connector first"
    ) in " ".join(err.split())
    assert example.read_text(encoding="utf-8") == original


def test_a_missing_daemon_yaml_says_how_to_start_one(runner: CliRunner, tmp_path: Path) -> None:
    code, _out, err = invoke(runner, tmp_path / "daemon.yaml", "status")
    assert code == 1 and "file not found" in err
    assert "nebridge config example > daemon.yaml" in " ".join(err.split())
    assert "Fix them" not in err


def test_changes_that_break_a_dependency_are_refused(runner: CliRunner, example: Path) -> None:
    original = example.read_text(encoding="utf-8")
    code, _out, err = invoke(runner, example, "plugins", "disable", "status_update")
    assert code == 1
    assert (
        "plugins stock_minus, tracking_update require status_update; disable them first "
        "(`nebridge plugins disable stock_minus && nebridge plugins disable "
        "tracking_update`)"
    ) in " ".join(err.split())
    assert example.read_text(encoding="utf-8") == original
    for name in ("tracking_update", "stock_minus"):
        assert invoke(runner, example, "plugins", "disable", name)[0] == 0
    assert invoke(runner, example, "plugins", "disable", "status_update")[0] == 0
    code, _out, err = invoke(runner, example, "plugins", "enable", "tracking_update")
    assert code == 1 and (
        "requires status_update, which is disabled; enable it first "
        "(`nebridge plugins enable status_update`)"
    ) in " ".join(err.split())
    code, _out, err = invoke(runner, example, "plugins", "enable", "no_such_plugin")
    assert code == 1 and "no installed plugin" in err


def test_warehouses_list_link_unlink(runner: CliRunner, example: Path) -> None:
    code, out, _ = invoke(runner, example, "warehouses", "list", "--json")
    assert code == 0
    assert [(w["code"], w["ne_linked"]) for w in json.loads(out)] == [
        ("ITAKU", True),
        ("SHINJUKU", False),
        ("ASAKUSA", False),
    ]
    assert invoke(runner, example, "warehouses", "link", "SHINJUKU")[0] == 0
    assert invoke(runner, example, "warehouses", "unlink", "ITAKU")[0] == 0
    _code, out, _ = invoke(runner, example, "warehouses", "list", "--json")
    assert [w["ne_linked"] for w in json.loads(out)] == [False, True, False]
    assert "# Warehouses (拠点)" in example.read_text(encoding="utf-8")
    code, _out, err = invoke(runner, example, "warehouses", "link", "OSAKA")
    assert code == 1 and "ITAKU, SHINJUKU, ASAKUSA" in err


def test_db_upgrade_status_and_run_once(
    runner: CliRunner, make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(migrate=False)
    code, _out, err = invoke(runner, config, "run", "--once")
    assert code == 1 and "nebridge db upgrade" in err
    for args in (("status",), ("status", "--json")):  # read-only: the hint, no traceback
        result = runner.invoke(app, ["--config", str(config), *args])
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "nebridge db upgrade" in result.stdout + result.stderr, result.output
    from daemon.config import load_config
    from daemon.store.engine import make_engine, upgrade

    engine = make_engine(load_config(config).config.resolved_database_url)
    upgrade(engine, "0003")  # an installation upgraded from before order watch (0004)
    engine.dispose()
    code, out, _ = invoke(runner, config, "status", "--json")
    assert json.loads(out)["problems"] == ["database not migrated: run `nebridge db upgrade`"]
    code, out, _ = invoke(runner, config, "db", "current", "--json")
    assert code == 1 and json.loads(out)["up_to_date"] is False
    assert invoke(runner, config, "db", "upgrade")[0] == 0
    code, out, _ = invoke(runner, config, "db", "current", "--json")
    assert code == 0 and json.loads(out)["up_to_date"] is True
    code, out, _ = invoke(runner, config, "run", "--once", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    assert {(s["warehouse"], s["stage"]) for s in report["stages"]} >= {
        ("ITAKU", "shipments"),
        ("SHINJUKU", "receipts"),
    }
    for args, out_word in (
        (("run", "--once"), "out"),
        (("run", "--once", "--dry-run"), "would go out"),
    ):
        code, out, _ = invoke(runner, config, *args)
        summaries = [line for line in out.splitlines() if " in, " in line]
        assert code == 0 and summaries, out
        for line in summaries:  # each count once, no stray space before a comma
            assert line.count(" held") == 1 and " ," not in line, line
            assert f" {out_word}, " in line, line
    code, out, _ = invoke(runner, config, "status", "--json")
    status = json.loads(out)
    assert code == 0
    assert status["database"]["up_to_date"] is True
    itaku = next(w for w in status["warehouses"] if w["code"] == "ITAKU")
    assert itaku["stages"]["shipments"]["outcome"] == "ok"
    assert itaku["stages"]["import_orders"]["outcome"] == "skipped"
    assert "status_update" in status["plugins"]["loaded"]


def test_usage_errors_exit_2(runner: CliRunner, make_config: ConfigFactory) -> None:
    config = make_config()
    assert invoke(runner, config, "run", "--dry-run")[0] == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_failed_plugin_is_shown_and_pauses_its_stages(
    runner: CliRunner, make_config: ConfigFactory, fake_site: Path
) -> None:
    config = make_config(plugins={**DEFAULT_PLUGINS, "fake_importerror": {"enabled": True}})
    _code, out, _ = invoke(runner, config, "plugins", "list", "--json")
    broken = next(r for r in json.loads(out) if r["name"] == "fake_importerror")
    assert broken["state"] == "failed" and "this_module_does_not_exist" in broken["error"]
    _code, out, _ = invoke(runner, config, "status", "--json")
    assert json.loads(out)["plugins"]["needs_attention"][0]["name"] == "fake_importerror"
    code, out, _ = invoke(runner, config, "run", "--once")  # fail closed (issue #12.1)
    assert code == 1 and "PAUSED" in out
