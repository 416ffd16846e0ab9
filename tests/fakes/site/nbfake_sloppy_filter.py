"""A third-party filter that returns no verdict (42): its orders must be held, not imported."""

from hooks import hookimpl
from hooks.records import PluginInfo


@hookimpl
def nebridge_plugin_info():
    return PluginInfo(name="fake_sloppy_filter", summary="a filter returning 42")


@hookimpl
def nebridge_filter_order(order):
    return 42
