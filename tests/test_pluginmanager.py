"""Plugin discovery, fail-soft loading, blocking, dependencies, option validation, isolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.pluginload import load_plugins
from daemon.pluginmanager import PluginHost, PluginState, discover_entry_points
from hooks import hookimpl
from hooks.records import PluginInfo, WarehouseInfo, WmsShipment
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory


def test_builtin_plugins_are_found_through_the_entry_point_group() -> None:
    names = set(discover_entry_points())
    assert {
        "status_update",
        "tracking_update",
        "stock_minus",
        "stock_plus",
        "tag_filter",
        "case_insensitive_match",
        "wms_csv",
    } <= names


def test_third_party_plugin_is_discovered_from_an_installed_distribution(
    fake_site: Path, make_config: ConfigFactory
) -> None:
    path = make_config(migrate=False, plugins={**DEFAULT_PLUGINS, "fake_good": {"enabled": True}})
    host, issues, _connector, _err = load_plugins(load_config(path))
    assert issues == []
    record = host.records["fake_good"]
    assert record.state is PluginState.LOADED
    assert record.distribution == "fake-nebridge-plugins"
    assert record.version == "1.0"
    assert "nebridge_shipment_actions" in record.hooks
    assert record.options.greeting == "hello"


def test_import_error_is_recorded_and_the_rest_still_loads(
    fake_site: Path, make_config: ConfigFactory
) -> None:
    path = make_config(
        migrate=False,
        plugins={
            **DEFAULT_PLUGINS,
            "fake_importerror": {"enabled": True},
            "fake_good": {"enabled": True},
        },
    )
    host, issues, connector, _err = load_plugins(load_config(path))
    broken = host.records["fake_importerror"]
    assert broken.state is PluginState.FAILED
    assert "ModuleNotFoundError" in broken.error and "this_module_does_not_exist" in broken.error
    assert host.records["fake_good"].state is PluginState.LOADED
    assert host.records["status_update"].state is PluginState.LOADED
    assert connector is not None
    assert issues == []  # a broken plugin is reported, not a reason to refuse the config
    assert [r.name for r in host.failed()] == ["fake_importerror"]


def test_disabled_plugins_are_blocked_before_import(
    fake_site: Path,
    make_config: ConfigFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("NBFAKE_IMPORT_MARKER", str(marker))
    path = make_config(
        migrate=False, plugins={**DEFAULT_PLUGINS, "fake_blocked": {"enabled": False}}
    )
    host, _issues, _c, _e = load_plugins(load_config(path))
    assert host.records["fake_blocked"].state is PluginState.DISABLED
    assert host.pm.is_blocked("fake_blocked")
    assert not marker.exists(), "a disabled plugin's module was imported"
    # enabled → imported
    path = make_config(
        migrate=False, plugins={**DEFAULT_PLUGINS, "fake_blocked": {"enabled": True}}
    )
    load_plugins(load_config(path))
    assert marker.read_text() == "imported"


def test_missing_requirement_is_refused_naming_both_plugins_and_the_fix(
    make_config: ConfigFactory,
) -> None:
    path = make_config(
        migrate=False,
        plugins={
            "status_update": {"enabled": False},
            "tracking_update": {"enabled": True},
            "stock_minus": {"enabled": True},
        },
    )
    _host, issues, _c, _e = load_plugins(load_config(path))
    messages = [str(i) for i in issues]
    assert len(issues) == 2
    assert any("'tracking_update' requires plugin 'status_update'" in m for m in messages)
    assert any("'stock_minus' requires plugin 'status_update'" in m for m in messages)
    assert all("nebridge plugins enable status_update" in m for m in messages)
    assert {i.path for i in issues} == {
        "plugins.tracking_update.enabled",
        "plugins.stock_minus.enabled",
    }
    assert all(i.line is not None for i in issues)


def test_dependency_failing_to_load_makes_dependent_inactive(
    fake_site: Path, make_config: ConfigFactory
) -> None:
    class BrokenGood:
        @hookimpl
        def nebridge_plugin_info(self) -> PluginInfo:
            raise RuntimeError("boom")

    path = make_config(
        migrate=False,
        plugins={
            **DEFAULT_PLUGINS,
            "fake_good": {"enabled": True},
            "fake_needs_good": {"enabled": True},
        },
    )
    loaded = load_config(path)
    host = PluginHost()
    host.load(loaded.config, extra={"fake_good": BrokenGood()})
    issues = host.validate(loaded)
    assert host.records["fake_good"].state is PluginState.FAILED
    assert "boom" in host.records["fake_good"].error
    dependent = host.records["fake_needs_good"]
    assert dependent.state is PluginState.INACTIVE
    assert "fake_good" in dependent.error
    assert host.pm.get_plugin("fake_needs_good") is None
    assert issues == []


def test_plugin_option_errors_carry_yaml_path_and_line(
    fake_site: Path, make_config: ConfigFactory
) -> None:
    path = make_config(
        migrate=False,
        plugins={
            **DEFAULT_PLUGINS,
            "tag_filter": {"enabled": True, "tag": "[bracketed]"},
            "fake_good": {"enabled": True, "limit": "many", "colour": "red"},
            "status_update": {"enabled": True, "unexpected": 1},
        },
    )
    _host, issues, _c, _e = load_plugins(load_config(path))
    by_path = {i.path: i for i in issues}
    assert set(by_path) == {
        "plugins.tag_filter.tag",
        "plugins.fake_good.limit",
        "plugins.fake_good.colour",
        "plugins.status_update.unexpected",
    }
    lines = path.read_text().splitlines()
    limit = by_path["plugins.fake_good.limit"]
    assert limit.line is not None and "limit: many" in lines[limit.line - 1]
    assert "takes no options" in by_path["plugins.status_update.unexpected"].message
    assert by_path["plugins.fake_good.colour"].message.startswith("unknown key `colour`")
    assert "Extra inputs" not in str(issues) and "Input should" not in str(issues)


def test_unknown_plugin_name_in_config_is_an_error(make_config: ConfigFactory) -> None:
    path = make_config(
        migrate=False, plugins={**DEFAULT_PLUGINS, "stauts_update": {"enabled": True}}
    )
    _host, issues, _c, _e = load_plugins(load_config(path))
    assert any(
        i.path == "plugins.stauts_update"
        and "no installed plugin" in i.message
        and "did you mean `status_update`?" in i.message
        for i in issues
    )


def test_a_raising_plugin_is_isolated(make_config: ConfigFactory) -> None:
    class Exploding:
        @hookimpl
        def nebridge_plugin_info(self) -> PluginInfo:
            return PluginInfo(name="exploding", summary="raises")

        @hookimpl
        def nebridge_shipment_actions(self, shipment: WmsShipment) -> list[object]:
            raise ValueError("kaboom")

    path = make_config(migrate=False, plugins={**DEFAULT_PLUGINS, "exploding": {"enabled": True}})
    host = PluginHost()
    loaded = load_config(path)
    host.load(loaded.config, extra={"exploding": Exploding()})
    assert host.validate(loaded) == []
    from datetime import UTC, datetime

    from hooks.records import ShipmentLine

    shipment = WmsShipment("S1", "ITAKU", "77", "T-1", datetime.now(UTC), (ShipmentLine("P", 1),))
    outcomes = host.shipment_actions(shipment, WarehouseInfo("ITAKU", "x", True, True))
    by_plugin = {o.plugin: o for o in outcomes}
    assert isinstance(by_plugin["exploding"].error, ValueError)
    assert by_plugin["status_update"].ok and by_plugin["tracking_update"].ok
    assert [type(a).__name__ for a in by_plugin["status_update"].result] == ["ShipOrder"]


def test_plugin_whose_info_name_differs_from_entry_point_fails(
    make_config: ConfigFactory,
) -> None:
    class Misnamed:
        @hookimpl
        def nebridge_plugin_info(self) -> PluginInfo:
            return PluginInfo(name="other_name", summary="x")

    path = make_config(migrate=False, plugins={**DEFAULT_PLUGINS, "misnamed": {"enabled": True}})
    host = PluginHost()
    host.load(load_config(path).config, extra={"misnamed": Misnamed()})
    assert host.records["misnamed"].state is PluginState.FAILED
    assert "entry-point name must equal" in host.records["misnamed"].error
