"""How hooks are called: through pluggy, one plugin at a time, each with its own options.

Third-party-style plugins are registered through ``extra=`` next to the built-in ones, exactly
as entry-point plugins are. Each test reads what the plugins recorded or returned.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pluggy import HookImpl
from pydantic import BaseModel

from daemon.config import load_config
from daemon.pluginmanager import PluginHost, PluginState
from hooks import HOOK_API_VERSION, hookimpl
from hooks.records import (
    Action,
    FilterVerdict,
    NeOrder,
    Notice,
    PluginInfo,
    ShipmentLine,
    WarehouseInfo,
    WmsShipment,
)
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory

WAREHOUSE = WarehouseInfo("ITAKU", "委託販売在庫", True, True)
SHIPMENT = WmsShipment("S1", "ITAKU", "77", "T-1", datetime.now(UTC), (ShipmentLine("P", 1),))
ORDER = NeOrder(
    order_id="77",
    shop_id="1",
    shop_order_id="A-77",
    status_id=20,
    grouping_tag="",
    last_modified="2026-12-01 10:00:00",
    rows=(),
)


def host_with(
    make_config: ConfigFactory,
    plugins: dict[str, object],
    sections: dict[str, dict[str, Any]] | None = None,
    base: dict[str, Any] | None = None,
) -> PluginHost:
    """A loaded and validated host: ``base`` (the default built-ins) and then ``plugins``
    enabled in that order (``sections`` adds options)."""
    configured = {**(DEFAULT_PLUGINS if base is None else base)}
    for name in plugins:
        configured[name] = {"enabled": True, **(sections or {}).get(name, {})}
    loaded = load_config(make_config(migrate=False, plugins=configured))
    host = PluginHost()
    host.load(loaded.config, extra=plugins)
    assert host.validate(loaded) == []
    return host


def info(name: str, **extra: Any) -> Callable[..., PluginInfo]:
    """A ``nebridge_plugin_info`` implementation for a test plugin."""

    @hookimpl
    def nebridge_plugin_info() -> PluginInfo:
        return PluginInfo(name=name, summary=f"test plugin {name}", **extra)

    return nebridge_plugin_info


class Plugin:
    """A namespace a test fills with hook implementations (like a plugin module)."""

    def __init__(self, name: str, **hooks: Callable[..., Any]) -> None:
        self.nebridge_plugin_info = info(name)
        for hook, function in hooks.items():
            setattr(self, hook, function)


def test_a_wrapper_wraps_each_plugins_call_and_sees_its_result(
    make_config: ConfigFactory,
) -> None:
    seen: list[list[str]] = []

    @hookimpl(wrapper=True)
    def nebridge_shipment_actions(shipment: WmsShipment) -> Generator[None, Any, Any]:
        actions = yield
        seen.append([type(a).__name__ for a in actions or ()])
        return [*(actions or ()), Notice(f"audited {shipment.shipment_id}")]

    host = host_with(
        make_config, {"audit": Plugin("audit", nebridge_shipment_actions=nebridge_shipment_actions)}
    )
    outcomes = host.shipment_actions(SHIPMENT, WAREHOUSE)

    # configuration order (the test's daemon.yaml lists plugins alphabetically)
    assert [o.plugin for o in outcomes] == ["status_update", "stock_minus", "tracking_update"]
    assert seen == [["ShipOrder"], [], ["WriteTracking"]]  # NE moves linked stock itself
    for outcome in outcomes:
        assert outcome.ok
        assert list(outcome.result or ())[-1] == Notice("audited S1")
    assert host.records["audit"].hooks == ["nebridge_plugin_info", "nebridge_shipment_actions"]
    assert host.records["audit"].stages() == ["shipments"]


def test_tryfirst_and_trylast_come_before_the_configured_order(
    make_config: ConfigFactory,
) -> None:
    called: list[str] = []

    def deciding(name: str, **opts: bool) -> Plugin:
        @hookimpl(**opts)
        def nebridge_shipment_actions() -> list[Action]:
            called.append(name)
            return []

        return Plugin(name, nebridge_shipment_actions=nebridge_shipment_actions)

    host = host_with(
        make_config,
        {
            "a_last": deciding("a_last", trylast=True),
            "b_plain": deciding("b_plain"),
            "z_first": deciding("z_first", tryfirst=True),
        },
    )
    outcomes = host.shipment_actions(SHIPMENT, WAREHOUSE)

    assert host.loaded_names()[:2] == ["a_last", "b_plain"]  # the configured order …
    assert called == ["z_first", "b_plain", "a_last"]  # … comes after tryfirst / trylast
    assert [o.plugin for o in outcomes] == [
        "z_first",
        "b_plain",
        "status_update",
        "stock_minus",
        "tracking_update",
        "a_last",
    ]


def test_a_firstresult_hook_stops_at_the_first_answer(make_config: ConfigFactory) -> None:
    called: list[str] = []

    def keying(name: str, key: Callable[[str], str] | None, raises: bool = False) -> Plugin:
        @hookimpl
        def nebridge_link_code_key() -> Callable[[str], str] | None:
            called.append(name)
            if raises:
                raise RuntimeError(f"{name} is broken")
            return key

        return Plugin(name, nebridge_link_code_key=nebridge_link_code_key)

    host = host_with(
        make_config,
        {
            "a_broken": keying("a_broken", str.lower, raises=True),
            "b_no_opinion": keying("b_no_opinion", None),
            "c_upper": keying("c_upper", str.upper),
            "d_lower": keying("d_lower", str.lower),
        },
        base={},
    )
    key = host.link_code_key()

    assert key is str.upper
    assert called == ["a_broken", "b_no_opinion", "c_upper"]  # d_lower is never asked


def test_hook_call_monitoring_sees_every_plugins_call(make_config: ConfigFactory) -> None:
    before: list[tuple[str, list[str], object]] = []
    after: list[object] = []

    def on_before(hook: str, impls: Sequence[HookImpl], kwargs: dict[str, Any]) -> None:
        before.append((hook, [i.plugin_name for i in impls], kwargs["options"]))

    def on_after(
        outcome: Any, hook: str, impls: Sequence[HookImpl], kwargs: dict[str, Any]
    ) -> None:
        after.append(outcome.get_result())

    host = host_with(make_config, {})
    undo = host.pm.add_hookcall_monitoring(on_before, on_after)
    host.shipment_actions(SHIPMENT, WAREHOUSE)
    undo()

    assert [(hook, impls) for hook, impls, _ in before] == [
        ("nebridge_shipment_actions", ["status_update"]),
        ("nebridge_shipment_actions", ["stock_minus"]),
        ("nebridge_shipment_actions", ["tracking_update"]),
    ]
    assert [[type(a).__name__ for a in r] for r in after] == [  # type: ignore[attr-defined]
        ["ShipOrder"],
        [],
        ["WriteTracking"],
    ]


class Label(BaseModel):
    label: str


def test_each_plugin_and_each_wrapper_gets_its_own_options(make_config: ConfigFactory) -> None:
    wrapped: list[tuple[str, str]] = []

    def filtering(name: str) -> Plugin:
        @hookimpl
        def nebridge_filter_order(options: Label) -> FilterVerdict:
            return FilterVerdict(accept=True, reason=f"{name} says {options.label}")

        plugin = Plugin(name, nebridge_filter_order=nebridge_filter_order)
        plugin.nebridge_plugin_info = info(name, config_model=Label)
        return plugin

    @hookimpl(wrapper=True)
    def nebridge_filter_order(options: Label, order: NeOrder) -> Generator[None, Any, Any]:
        verdict = yield
        wrapped.append((options.label, verdict.reason))
        return verdict

    wrapper = Plugin("watcher", nebridge_filter_order=nebridge_filter_order)
    wrapper.nebridge_plugin_info = info("watcher", config_model=Label)
    host = host_with(
        make_config,
        {"one": filtering("one"), "two": filtering("two"), "watcher": wrapper},
        sections={"one": {"label": "A"}, "two": {"label": "B"}, "watcher": {"label": "W"}},
    )
    outcomes = host.filter_order(ORDER, WAREHOUSE)

    assert [o.result.reason for o in outcomes if o.result] == ["one says A", "two says B"]
    assert wrapped == [("W", "one says A"), ("W", "two says B")]


def test_a_raising_plugin_is_attributed_and_the_others_still_run(
    make_config: ConfigFactory,
) -> None:
    passed_through: list[str] = []

    @hookimpl
    def raising(shipment: WmsShipment) -> list[Action]:
        raise ValueError("kaboom")

    @hookimpl(wrapper=True)
    def passing(shipment: WmsShipment) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except ValueError as exc:
            passed_through.append(str(exc))
            raise

    host = host_with(
        make_config,
        {
            "exploding": Plugin("exploding", nebridge_shipment_actions=raising),
            "passing": Plugin("passing", nebridge_shipment_actions=passing),
        },
    )
    by_plugin = {o.plugin: o for o in host.shipment_actions(SHIPMENT, WAREHOUSE)}

    assert isinstance(by_plugin["exploding"].error, ValueError)
    assert passed_through == ["kaboom"]
    assert by_plugin["status_update"].ok and by_plugin["stock_minus"].ok
    assert "passing" not in by_plugin


@pytest.mark.parametrize("with_options", [False, True])
def test_a_wrapper_that_raises_is_blamed_not_the_plugin_it_wraps(
    make_config: ConfigFactory,
    with_options: bool,
) -> None:
    def failing(actions: Any) -> Any:
        if any(type(a).__name__ == "WriteTracking" for a in actions):
            raise RuntimeError("wrapper bug")
        return actions

    @hookimpl(wrapper=True)
    def plain(shipment: WmsShipment) -> Generator[None, Any, Any]:
        return failing((yield))

    @hookimpl(wrapper=True)
    def configured(options: None, shipment: WmsShipment) -> Generator[None, Any, Any]:
        return failing((yield))

    host = host_with(
        make_config,
        {"buggy": Plugin("buggy", nebridge_shipment_actions=configured if with_options else plain)},
    )
    outcomes = host.shipment_actions(SHIPMENT, WAREHOUSE)

    assert [(o.plugin, o.ok) for o in outcomes] == [
        ("status_update", True),
        ("stock_minus", True),
        ("buggy", False),
    ]
    assert isinstance(outcomes[2].error, RuntimeError)


def test_old_style_hookwrappers_and_unknown_hooks_are_refused_at_load(
    make_config: ConfigFactory,
) -> None:
    @hookimpl(hookwrapper=True)
    def old_style(shipment: WmsShipment) -> Generator[None, Any, None]:
        yield

    @hookimpl
    def nebridge_shipment_action(shipment: WmsShipment) -> list[Action]:
        return []

    @hookimpl(optionalhook=True)
    def nebridge_from_the_future() -> None:
        raise AssertionError("never called")

    configured = {
        **DEFAULT_PLUGINS,
        "old": {"enabled": True},
        "typo": {"enabled": True},
        "future": {"enabled": True},
    }
    host = PluginHost()
    host.load(
        load_config(make_config(migrate=False, plugins=configured)).config,
        extra={
            "old": Plugin("old", nebridge_shipment_actions=old_style),
            "typo": Plugin("typo", nebridge_shipment_action=nebridge_shipment_action),
            "future": Plugin("future", nebridge_from_the_future=nebridge_from_the_future),
        },
    )

    old, typo = host.records["old"], host.records["typo"]
    assert old.state is PluginState.FAILED
    assert "nebridge_shipment_actions as an old-style hookwrapper=True" in old.error
    assert "@hookimpl(wrapper=True)" in old.error
    assert typo.state is PluginState.FAILED
    assert "implements nebridge_shipment_action, which is not a hook" in typo.error
    assert "optionalhook=True" in typo.error
    assert host.records["future"].state is PluginState.LOADED
    assert "shipments" in host.paused_stages()  # fail closed: old takes part in shipments
    assert "old" not in [o.plugin for o in host.shipment_actions(SHIPMENT, WAREHOUSE)]


@pytest.mark.parametrize(
    ("wanted", "says"),
    [
        (">=2,<3", f"needs hook API >=2,<3 but this nebridge provides hook API {HOOK_API_VERSION}"),
        ("one point one", "is not a version range"),
        ("", "is not a version range"),  # an empty range would accept every hook API
        ("  ", "is not a version range"),
    ],
)
def test_a_plugin_for_another_hook_api_is_refused_naming_both_versions(
    make_config: ConfigFactory,
    wanted: str,
    says: str,
) -> None:
    @hookimpl
    def nebridge_filter_order() -> None:
        return None

    plugin = Plugin("future_filter", nebridge_filter_order=nebridge_filter_order)
    plugin.nebridge_plugin_info = info("future_filter", hook_api=wanted)
    configured = {**DEFAULT_PLUGINS, "future_filter": {"enabled": True}}
    loaded = load_config(make_config(migrate=False, plugins=configured))
    host = PluginHost()
    host.load(loaded.config, extra={"future_filter": plugin})
    host.validate(loaded)

    record = host.records["future_filter"]
    assert record.state is PluginState.FAILED
    assert says in record.error
    assert "import_orders" in host.paused_stages()
    assert "future_filter" in host.paused_stages()["import_orders"]
    assert record.as_dict()["hook_api"] == wanted


def test_a_plugin_accepting_this_hook_api_loads(make_config: ConfigFactory) -> None:
    plugin = Plugin("current")
    plugin.nebridge_plugin_info = info("current", hook_api=f"=={HOOK_API_VERSION}")
    host = host_with(make_config, {"current": plugin})
    assert host.records["current"].state is PluginState.LOADED
    assert host.failed() == []


def test_built_in_plugins_accept_this_hook_api(make_config: ConfigFactory, tmp_path: Path) -> None:
    host = host_with(make_config, {})
    assert all(r.info is not None for r in host.records.values() if r.state is PluginState.LOADED)
    assert host.failed() == []


def test_an_installed_wrapper_plugin_changes_what_the_pipeline_stores(
    fake_site: Path,
    make_config: ConfigFactory,
    database_url: str,
    tmp_path: Path,
) -> None:
    from tests.test_pipeline import AT, SHIP_HEADER, build, drop, imported, outbox_items, products

    inbox = tmp_path / "wms" / "inbox"
    rt = build(
        make_config,
        database_url,
        plugins={
            **DEFAULT_PLUGINS,
            "fake_wrapper": {"enabled": True, "reason": "the WMS uploads it"},
        },
    )
    imported(rt, "ITAKU", "1001")
    products(inbox)
    drop(
        inbox,
        "shipments-1.csv",
        SHIP_HEADER,
        [
            f"S-1,ITAKU,1001,TRACK-1,{AT},P-A,1",
            f"S-3,ITAKU,,,{AT},P-A,3",  # not from Next Engine: stock_minus would lower P-A by 3
        ],
    )
    try:
        from daemon.admin import run_once

        report = run_once(rt)
        items = outbox_items(rt)
    finally:
        rt.close()

    assert report.ok, report.problems
    assert [(i["kind"], i["subject"]) for i in items] == [("ship_order", "1001")]
    notices = [n for r in report.stages for n in r.notices]
    assert any("S-3: 1 stock change(s) left out: the WMS uploads it" in n for n in notices)


def test_a_plugin_for_another_hook_api_is_shown_and_pauses_its_stage(
    fake_site: Path,
    make_config: ConfigFactory,
) -> None:
    import json

    from typer.testing import CliRunner

    from daemon.cli import app

    config = str(make_config(plugins={**DEFAULT_PLUGINS, "fake_future": {"enabled": True}}))
    runner = CliRunner()
    listed = runner.invoke(app, ["--config", config, "plugins", "list", "--json"])
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "fake_future")
    assert row["state"] == "failed"
    assert (
        f"needs hook API >=2,<3 but this nebridge provides hook API {HOOK_API_VERSION}"
        in row["error"]
    )
    shown = runner.invoke(app, ["--config", config, "plugins", "info", "fake_future"])
    assert "hook_api: >=2,<3" in shown.stdout
    ran = runner.invoke(app, ["--config", config, "run", "--once"])
    assert ran.exit_code == 1 and "PAUSED" in ran.stdout


def test_specname_lets_a_function_of_another_name_implement_a_hook(
    make_config: ConfigFactory,
) -> None:
    @hookimpl(specname="nebridge_filter_order")
    def refuse_everything(order: NeOrder) -> FilterVerdict:
        return FilterVerdict(accept=False, reason=f"no {order.order_id}")

    host = host_with(make_config, {"strict": Plugin("strict", refuse=refuse_everything)})
    assert host.records["strict"].stages() == ["import_orders"]
    assert [(o.plugin, o.result) for o in host.filter_order(ORDER, WAREHOUSE)] == [
        ("strict", FilterVerdict(accept=False, reason="no 77"))
    ]


def test_every_hook_has_one_typed_handle_and_every_stage_its_hooks() -> None:
    from daemon import pluginmanager
    from daemon.pipeline import Stage
    from tests.test_hookspecs import hookspec_names

    handles = [v.name for v in vars(pluginmanager).values() if isinstance(v, pluginmanager.Hook)]
    assert sorted(handles) == sorted(hookspec_names())
    assert set(pluginmanager.STAGE_HOOKS) == {stage.value for stage in Stage}
