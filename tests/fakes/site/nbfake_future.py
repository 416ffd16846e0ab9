"""A third-party plugin written for a hook API this nebridge does not provide."""

from hooks import hookimpl
from hooks.records import PluginInfo


@hookimpl
def nebridge_plugin_info():
    return PluginInfo(name="fake_future", summary="made for hook API 2", hook_api=">=2,<3")


@hookimpl
def nebridge_shipment_actions(shipment):
    return []
