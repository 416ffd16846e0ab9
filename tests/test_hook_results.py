"""A hook implementation's result of the wrong type is that plugin's failure (fail closed).

Third-party-style plugins are registered through ``extra=`` as in ``test_hookcalls``; each
test reads the outcome the engine acts on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon import doctor, pluginmanager
from daemon.cli import app
from daemon.pluginmanager import HookResultError
from hooks import hookimpl
from hooks.records import FilterVerdict, HealthCheck
from tests.conftest import DEFAULT_PLUGINS, ConfigFactory
from tests.ne_world import make_world
from tests.test_hookcalls import ORDER, SHIPMENT, WAREHOUSE, Plugin, host_with


@pytest.mark.parametrize("returned", [False, 42, "reject", FilterVerdict])
def test_a_filter_returning_no_verdict_is_that_plugins_error_not_an_accept(
    make_config: ConfigFactory,
    returned: object,
) -> None:
    @hookimpl
    def nebridge_filter_order() -> object:
        return returned

    host = host_with(
        make_config, {"sloppy": Plugin("sloppy", nebridge_filter_order=nebridge_filter_order)}
    )
    [outcome] = [o for o in host.filter_order(ORDER, WAREHOUSE) if o.plugin == "sloppy"]

    assert isinstance(outcome.error, HookResultError)
    assert "not a FilterVerdict or None" in str(outcome.error)


def test_a_wrapper_turning_a_verdict_into_42_is_blamed_for_it(
    make_config: ConfigFactory,
) -> None:
    @hookimpl
    def nebridge_filter_order() -> FilterVerdict:
        return FilterVerdict(accept=False, reason="no")

    @hookimpl(wrapper=True)
    def wrapping() -> Generator[None, Any, Any]:
        yield
        return 42

    wrapper = Plugin("meddler")
    wrapper.nebridge_filter_order = wrapping  # type: ignore[attr-defined]
    host = host_with(
        make_config,
        {
            "strict": Plugin("strict", nebridge_filter_order=nebridge_filter_order),
            "meddler": wrapper,
        },
    )
    [outcome] = [o for o in host.filter_order(ORDER, WAREHOUSE) if o.plugin != "tag_filter"]

    assert outcome.plugin == "meddler"  # strict's own verdict was right: the wrapper's error
    assert isinstance(outcome.error, HookResultError)
    assert "a wrapper around plugin strict" in str(outcome.error)


def test_a_wrong_result_a_wrapper_only_passes_on_is_the_wrapped_plugins(
    make_config: ConfigFactory,
) -> None:
    @hookimpl
    def nebridge_filter_order() -> object:
        return False

    @hookimpl(wrapper=True)
    def passing_on() -> Generator[None, Any, Any]:
        return (yield)

    wrapper = Plugin("watcher")
    wrapper.nebridge_filter_order = passing_on  # type: ignore[attr-defined]
    host = host_with(
        make_config,
        {
            "sloppy": Plugin("sloppy", nebridge_filter_order=nebridge_filter_order),
            "watcher": wrapper,
        },
    )
    [outcome] = [o for o in host.filter_order(ORDER, WAREHOUSE) if o.plugin != "tag_filter"]

    assert outcome.plugin == "sloppy" and isinstance(outcome.error, HookResultError)


def test_actions_that_are_not_a_list_or_fail_halfway_are_that_plugins_error(
    make_config: ConfigFactory,
) -> None:
    @hookimpl
    def not_a_list() -> object:
        return 42

    @hookimpl
    def halfway() -> Iterator[object]:
        yield from ()
        raise RuntimeError("lost the label printer")

    host = host_with(
        make_config,
        {
            "number": Plugin("number", nebridge_shipment_actions=not_a_list),
            "halfway": Plugin("halfway", nebridge_shipment_actions=halfway),
        },
    )
    by_plugin = {o.plugin: o for o in host.shipment_actions(SHIPMENT, WAREHOUSE)}

    assert isinstance(by_plugin["number"].error, HookResultError)
    assert isinstance(by_plugin["halfway"].error, RuntimeError)
    assert by_plugin["status_update"].ok  # the others still run


def test_a_link_code_key_that_is_not_a_function_is_logged_and_skipped_like_a_raise(
    make_config: ConfigFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    @hookimpl
    def nebridge_link_code_key() -> object:
        return 42

    host = host_with(
        make_config,
        {"keyed": Plugin("keyed", nebridge_link_code_key=nebridge_link_code_key)},
        base={},
    )
    with caplog.at_level(logging.ERROR):
        assert host.link_code_key() is None  # exact matching, not a call of 42
    assert "plugin keyed" in caplog.text and "not a function or None" in caplog.text


def test_doctor_shows_a_check_generator_failing_halfway_and_wrong_items_as_fail_rows(
    make_config: ConfigFactory,
) -> None:
    @hookimpl
    def halfway() -> Iterator[HealthCheck]:
        yield HealthCheck("first", True, "fine")
        raise RuntimeError("lost the disk")

    @hookimpl
    def wrong_items() -> Iterator[object]:
        yield "all good"

    @hookimpl
    def good() -> list[HealthCheck]:
        return [HealthCheck("disk", True, "ok")]

    host = host_with(
        make_config,
        {
            "halfway": Plugin("halfway", nebridge_health_checks=halfway),
            "wrong": Plugin("wrong", nebridge_health_checks=wrong_items),
            "good": Plugin("good", nebridge_health_checks=good),
        },
    )
    rows = {check.name: check for check in doctor._plugin_checks(host, None)}

    assert not rows["plugin halfway"].ok
    assert "RuntimeError: lost the disk" in rows["plugin halfway"].detail
    assert not rows["plugin wrong"].ok and "not a HealthCheck" in rows["plugin wrong"].detail
    assert rows["good: disk"].ok


def test_a_slow_health_check_is_named_in_a_warning(
    make_config: ConfigFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    released = threading.Event()

    @hookimpl
    def stuck() -> list[HealthCheck]:
        released.wait(5)
        return []

    monkeypatch.setattr(pluginmanager, "SLOW_HEALTH_CHECK_SECONDS", 0.05)
    host = host_with(make_config, {"stuck": Plugin("stuck", nebridge_health_checks=stuck)})
    warned = threading.Timer(0.5, released.set)
    warned.start()
    with caplog.at_level(logging.WARNING):
        doctor._plugin_checks(host, None)
    assert "still waiting for plugin stuck's nebridge_health_checks" in caplog.text


def test_an_order_a_filter_answers_42_for_is_held_naming_the_plugin(
    make_config: ConfigFactory,
    tmp_path: Path,
    fake_site: Path,
) -> None:
    plugins = {**DEFAULT_PLUGINS, "fake_sloppy_filter": {"enabled": True}}
    for world in make_world(make_config, tmp_path, plugins=plugins):
        world.sandbox.state.create_goods("A-1", quantity=10)
        order = world.sandbox.state.create_order([("A-1", 1)], shop_id=1)
        world.products([("P-A", "A-1")])

        CliRunner().invoke(app, ["--config", str(world.config), "run", "--once"])
        listed = CliRunner().invoke(
            app, ["--config", str(world.config), "orders", "list", "--state", "held", "--json"]
        )

        assert world.instructed() == []  # fail closed: not sent to the WMS
        held = {str(row["ne_order_id"]): row for row in json.loads(listed.stdout)}
        assert str(order) in held, listed.stdout
        assert "fake_sloppy_filter" in json.dumps(held[str(order)])
