"""Fail closed and show what waits (issue #12 findings 1, 3, 8), through the real CLI.

An enabled plugin that cannot run pauses the stages it takes part in (never imports what a
filter would refuse); a configuration typo is an error, never a feature silently off; and
everything that waits for a person is listed by ``nebridge attention``, counted by ``status``,
warned of by ``doctor``, exported as gauges and makes ``run --once`` exit 1.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon import attention
from daemon.cli import app
from daemon.config import load_config
from daemon.metrics import Metrics
from daemon.runtime import build_runtime
from daemon.store.engine import make_engine
from hooks.records import Problem
from tests.conftest import DEFAULT_PLUGINS, DEFAULT_WAREHOUSES, ConfigFactory, dump_yaml
from tests.ne_world import AT, RECEIPT_HEADER, SHIP_HEADER, World, make_world


def cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def cli_json(config: Path, *args: str) -> tuple[int, Any]:
    code, out, err = cli(config, *args, "--json")
    assert out.strip(), err
    return code, json.loads(out)


@pytest.fixture
def broken_world(make_config: ConfigFactory, tmp_path: Path, fake_site: Path) -> Iterator[World]:
    """A linked world whose configuration enables a plugin that cannot even be imported."""
    plugins = {
        **DEFAULT_PLUGINS,
        "tag_filter": {"enabled": True},
        "fake_importerror": {"enabled": True},
    }
    yield from make_world(make_config, tmp_path, plugins=plugins)


def scrape(world: World) -> str:
    """The daemon's Prometheus page for ``world``'s configuration, over HTTP."""
    rt = world.runtime()
    metrics = Metrics()
    metrics.watch_store(rt.db, rt.host)
    metrics.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics") as resp:
            return str(resp.read().decode())
    finally:
        metrics.stop()
        rt.close()


def set_plugin(config: Path, name: str, enabled: bool) -> None:
    code, out, err = cli(config, "plugins", "enable" if enabled else "disable", name)
    assert code == 0, out + err


# -- finding 1: an enabled plugin that cannot run pauses its stages ----------------------------


def test_unimportable_plugin_pauses_every_stage_until_disabled(broken_world: World) -> None:
    world = broken_world
    st = world.sandbox.state
    st.create_goods("A-1", quantity=10)
    untagged = st.create_order([("A-1", 1)], shop_id=1)  # tag_filter must refuse it
    world.products([("P-A", "A-1")])
    world.drop("receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-A,5"])

    code, out, _err = cli(world.config, "run", "--once")
    assert code == 1, out
    assert "ITAKU/import_orders: PAUSED" in out and "fake_importerror" in out
    assert world.instructed() == []  # nothing imported behind a filter's back
    assert world.uploaded("A-1") == 0  # nor the receipt applied: all stages paused
    assert "paused stage" in out and "nebridge plugins disable fake_importerror" in out

    code, report = cli_json(world.config, "run", "--once")
    assert code == 1 and not report["ok"]
    outcomes = {(s["warehouse"], s["stage"]): s["outcome"] for s in report["stages"]}
    assert outcomes[("ITAKU", "import_orders")] == "paused"
    assert outcomes[("ITAKU", "shipments")] == outcomes[("ITAKU", "receipts")] == "paused"

    code, status = cli_json(world.config, "status")
    assert set(status["paused_stages"]) == {"import_orders", "shipments", "receipts"}
    assert status["attention"]["counts"]["paused_stage"] == 3
    itaku = next(w for w in status["warehouses"] if w["code"] == "ITAKU")
    assert itaku["stages"]["import_orders"]["outcome"] == "paused"
    _code, human, _ = cli(world.config, "status")
    assert "PAUSED import_orders: plugin fake_importerror is enabled but failed" in human

    code, doctor = cli_json(world.config, "doctor", "--offline")
    assert code == 1
    paused = next(c for c in doctor["checks"] if c["name"] == "paused stages")
    assert paused["status"] == "fail" and "fake_importerror" in paused["detail"]

    code, _out, err = cli(world.config, "config", "check")
    assert code == 1
    assert "plugins.fake_importerror.enabled" in err and "this_module_does_not_exist" in err
    assert 'nebridge_attention{kind="paused_stage"} 3.0' in scrape(world)

    set_plugin(world.config, "fake_importerror", False)
    code, out, _ = cli(world.config, "run", "--once")
    assert code == 0, out
    assert world.instructed() == [] and untagged  # tag_filter refused the untagged order
    assert world.uploaded("A-1") == 5
    assert cli_json(world.config, "attention")[1]["total"] == 0


def test_failed_plugin_pauses_only_the_stage_it_takes_part_in(
    make_config: ConfigFactory, tmp_path: Path, fake_site: Path
) -> None:
    plugins = {**DEFAULT_PLUGINS, "fake_badinfo": {"enabled": True}}
    for world in make_world(make_config, tmp_path, plugins=plugins):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=10)
        order = st.create_order([("A-1", 1)], shop_id=1)
        world.products([("P-A", "A-1")])
        cli(world.config, "run", "--once")
        assert [r["ne_order_id"] for r in world.instructed()] == [str(order)]
        world.drop("shipments-1.csv", SHIP_HEADER, [f"S-1,ITAKU,{order},T-1,{AT},P-A,1"])
        world.drop("receipts-1.csv", RECEIPT_HEADER, [f"R-1,ITAKU,{AT},P-A,5"])
        code, report = cli_json(world.config, "run", "--once")
        assert code == 1
        outcomes = {(s["warehouse"], s["stage"]): s["outcome"] for s in report["stages"]}
        assert outcomes[("ITAKU", "receipts")] == "paused"
        assert outcomes[("ITAKU", "shipments")] == "ok"  # other stages keep running
        assert world.sandbox.ledger.shipped_order_ids() == [order]
        assert world.uploaded("A-1") == 0  # the receipt's +5 waits in its paused stage
        items = report["attention"]["items"]
        assert [i["key"] for i in items if i["kind"] == "paused_stage"] == ["paused_stage:receipts"]


def test_crashed_stage_is_attention_until_it_runs_through(
    make_config: ConfigFactory, database_url: str
) -> None:
    config = make_config(database_url=database_url)
    rt = build_runtime(config)
    pipeline = next(p for p in rt.pipelines() if p.warehouse.code == "SHINJUKU")
    original = pipeline._process_events

    def crash(*args: Any) -> Any:  # a bug nobody foresaw: the only way to get one on purpose
        raise RuntimeError("disk on fire")

    try:
        pipeline._process_events = crash  # type: ignore[method-assign,assignment]
        results = pipeline.run_once()
        assert [r.outcome for r in results if r.stage.value != "import_orders"] == [
            "crashed",
            "crashed",
        ]
        code, data = cli_json(config, "attention", "--warehouse", "SHINJUKU")
        assert code == 0 and data["counts"] == {"crashed_stage": 2}
        assert "disk on fire" in data["items"][0]["reason"]
        assert cli_json(config, "attention", "--warehouse", "ITAKU")[1]["total"] == 0
        code, out, _ = cli(config, "attention")
        assert "crashed_stage SHINJUKU" in out and "journalctl -u nebridge" in out
        pipeline._process_events = original  # type: ignore[method-assign]
        pipeline.run_once()
    finally:
        rt.close()
    assert cli_json(config, "attention")[1]["total"] == 0


# -- finding 8: one place lists what needs a person --------------------------------------------


def test_held_order_stays_visible_everywhere_until_resolved(
    make_config: ConfigFactory, tmp_path: Path, database_url: str
) -> None:
    for world in make_world(make_config, tmp_path, database_url=database_url):
        st = world.sandbox.state
        st.create_goods("A-1", quantity=5)
        order = st.create_order([("ZZZ-9", 1)], shop_id=1)  # no such WMS product
        world.products([("P-A", "A-1")])
        for _ in range(2):  # not only on the run that held it
            code, out, _ = cli(world.config, "run", "--once")
            assert code == 1 and f"held_order ITAKU {order}" in out and "ZZZ-9" in out
        code, data = cli_json(world.config, "attention")
        assert code == 0 and data["counts"] == {"held_order": 1}
        item = data["items"][0]
        assert item["subject"] == str(order) and "ZZZ-9" in item["reason"] and item["fix"]
        _code, status = cli_json(world.config, "status")
        assert status["attention"]["total"] == 1
        assert status["attention"]["items"][0]["kind"] == "held_order"
        code, doctor = cli_json(world.config, "doctor", "--offline")
        warning = next(c for c in doctor["checks"] if c["name"] == "attention")
        assert code == 0 and warning["status"] == "warn" and "1 held order" in warning["detail"]
        _code, human, _ = cli(world.config, "doctor", "--offline")
        assert "WARN" in human and "1 warning(s)" in human
        text = scrape(world)
        assert 'nebridge_attention{kind="held_order"} 1.0' in text
        assert 'nebridge_attention{kind="paused_stage"} 0.0' in text
        world.products([("P-A", "A-1"), ("P-Z", "ZZZ-9")])  # fixed in the WMS
        code, out, _ = cli(world.config, "run", "--once")
        assert code == 0, out
        assert cli_json(world.config, "attention")[1]["total"] == 0


def test_attention_listing_is_bounded_and_validates_its_options(
    make_config: ConfigFactory, database_url: str
) -> None:
    config = make_config(database_url=database_url)
    engine = make_engine(load_config(config).config.resolved_database_url)
    for i in range(5):
        attention.report(
            engine,
            Problem(
                key=f"test:{i}",
                kind="file_not_taken",
                reason=f"reason {i}",
                fix="do X",
                warehouse="ITAKU",
                subject=f"f{i}",
            ),
        )
    engine.dispose()
    code, data = cli_json(config, "attention", "--limit", "2")
    assert code == 0 and data["total"] == 5 and len(data["items"]) == 2
    assert [i["subject"] for i in data["items"]] == ["f4", "f3"]  # newest first
    code, out, _ = cli(config, "attention", "--limit", "2")
    assert "the newest 2 of 5" in out
    assert cli(config, "attention", "--limit", "100000000000000000000")[0] == 2
    assert cli(config, "attention", "--limit", "0")[0] == 2
    code, _out, err = cli(config, "attention", "--warehouse", "NOPE")
    assert code == 2 and "ITAKU" in err


def test_attention_needs_a_migrated_database(make_config: ConfigFactory) -> None:
    config = make_config(migrate=False)
    code, _out, err = cli(config, "attention")
    assert code == 1 and "nebridge db upgrade" in err


# -- finding 3: a typo never switches a feature off silently -----------------------------------


def write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(dump_yaml(data), encoding="utf-8")


def base_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "wms": {
            "connector": "csv",
            "csv": {"inbox": str(tmp_path / "in"), "outbox": str(tmp_path / "out")},
        },
        "warehouses": DEFAULT_WAREHOUSES,
        "plugins": dict(DEFAULT_PLUGINS),
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("change", "path", "expect"),
    [
        (
            {"plugins": {**DEFAULT_PLUGINS, "tag_filter": {"enable": True}}},
            "plugins.tag_filter.enable",
            "unknown key `enable` — did you mean `enabled`?",
        ),
        (
            {"plugins": {**DEFAULT_PLUGINS, "tag_filter": {"enabled": "yes"}}},
            "plugins.tag_filter.enabled",
            "must be true or false",
        ),
        (
            {"schedule": {"interval_secs": 5}},
            "schedule.interval_secs",
            "did you mean `interval_seconds`?",
        ),
        (
            {"warehouses": [{**DEFAULT_WAREHOUSES[0], "import_order": True}]},
            "warehouses[0].import_order",
            "did you mean `import_orders`?",
        ),
        ({"databse_url": "sqlite:///x.db"}, "databse_url", "did you mean `database_url`?"),
        (
            {"plugins": {**DEFAULT_PLUGINS, "tag_filtr": {"enabled": False}}},
            "plugins.tag_filtr",
            "did you mean `tag_filter`?",
        ),
        (
            {"plugins": {**DEFAULT_PLUGINS, "status_update": {"enabled": True, "tag": "x"}}},
            "plugins.status_update.tag",
            "takes no options",
        ),
        ({"wms": {"connector": "csv", "cvs": {"inbox": "in"}}}, "wms.cvs", "did you mean `csv`?"),
        (
            {"schedule": {"interval_seconds": "often"}},
            "schedule.interval_seconds",
            "must be a number",
        ),
    ],
)
def test_config_typo_is_an_error_with_path_line_and_suggestion(
    tmp_path: Path, change: dict[str, Any], path: str, expect: str
) -> None:
    config = tmp_path / "daemon.yaml"
    write(config, base_config(tmp_path, **change))
    code, out, err = cli(config, "config", "check")
    assert code == 1, out
    assert path in err and expect in err and "line " in err
    assert "Extra inputs" not in err and "Input should" not in err
    code, data = cli_json(config, "config", "check")
    assert code == 1
    issue = next(i for i in data["issues"] if i["path"] == path)
    assert expect in issue["message"] and issue["line"]


def test_options_of_a_disabled_plugin_are_checked_by_config_check(tmp_path: Path) -> None:
    config = tmp_path / "daemon.yaml"
    plugins = {**DEFAULT_PLUGINS, "tag_filter": {"enabled": False, "tagg": "foo"}}
    write(config, base_config(tmp_path, plugins=plugins))
    code, _out, err = cli(config, "config", "check")
    assert code == 1
    assert "plugins.tag_filter.tagg" in err and "did you mean `tag`?" in err
    plugins["tag_filter"] = {"enabled": False, "tag": "ロジクラ受注取込対象"}
    write(config, base_config(tmp_path, plugins=plugins))
    assert cli(config, "config", "check")[0] == 0


def test_plugin_options_without_an_enabled_line_are_warned_of(tmp_path: Path) -> None:
    config = tmp_path / "daemon.yaml"
    plugins = {**DEFAULT_PLUGINS, "tag_filter": {"tag": "ロジクラ受注取込対象"}}
    write(config, base_config(tmp_path, plugins=plugins))
    code, _out, err = cli(config, "config", "check")
    assert code == 0 and "plugin tag_filter has options but no `enabled:` line" in err
    code, data = cli_json(config, "config", "check")
    assert code == 0 and any("tag_filter" in w for w in data["warnings"])
