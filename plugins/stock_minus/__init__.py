"""③ stock_minus — 出荷確定でネクストエンジンの在庫をマイナスする.

For shipments that did not come from Next Engine (wholesale, physical shops ...) confirmed at
a warehouse linked to Next Engine, decrement Next Engine stock by the shipped quantities, so
Next Engine stock reflects every sales channel. Shipments of Next Engine orders are left
alone: Next Engine itself takes their stock when the order is shipped.
"""

from __future__ import annotations

from hooks import hookimpl
from hooks.records import Action, AdjustStock, PluginInfo, WarehouseInfo, WmsShipment


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="stock_minus",
        summary="Decrement Next Engine stock for non-Next-Engine shipments at linked warehouses",
        requires=("status_update",),
        setting_ja="出荷確定でネクストエンジンの在庫をマイナスする",
    )


@hookimpl
def nebridge_shipment_actions(shipment: WmsShipment, warehouse: WarehouseInfo) -> list[Action]:
    """One negative stock change per shipped line."""
    if shipment.from_next_engine or not warehouse.ne_linked:
        return []
    return [
        AdjustStock(product_code=line.product_code, delta=-line.quantity) for line in shipment.lines
    ]
