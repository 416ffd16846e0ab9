"""A plugin with a bug: raises on every shipment of one warehouse."""

from hooks import hookimpl
from hooks.records import PluginInfo


@hookimpl
def nebridge_plugin_info():
    return PluginInfo(name="fake_raises", summary="raises on warehouse BUGGY")


@hookimpl
def nebridge_shipment_actions(shipment, warehouse):
    if warehouse.code == "BUGGY":
        raise RuntimeError(f"bug while looking at {shipment.shipment_id}")
    return []
