"""A plugin that requires another third-party plugin."""

from hooks import hookimpl
from hooks.records import PluginInfo


@hookimpl
def nebridge_plugin_info():
    return PluginInfo(name="fake_needs_good", summary="needs fake_good", requires=("fake_good",))
