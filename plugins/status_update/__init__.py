"""① status_update — 出荷確定時、受注伝票のステータスを「出荷済み」に更新する.

When a shipment of a Next Engine order is confirmed in the WMS, move the order to shipped
(status 50). Eligibility is decided when the shipment is confirmed, so orders imported before
the plugin was switched on are covered too. The engine checks the order in Next Engine before
shipping: an order cancelled there after import, or already shipped, is not shipped again
and is reported.
"""

from __future__ import annotations

from hooks import hookimpl
from hooks.records import Action, PluginInfo, ShipOrder, WarehouseInfo, WmsShipment


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="status_update",
        summary="Set Next Engine orders to shipped (50) when the WMS confirms their shipment",
        setting_ja="出荷確定時、受注伝票のステータスを「出荷済み」に更新する",
    )


@hookimpl
def nebridge_shipment_actions(shipment: WmsShipment, warehouse: WarehouseInfo) -> list[Action]:
    """Ship the Next Engine order a confirmed shipment fulfils."""
    if not shipment.ne_order_id:
        return []
    return [ShipOrder(ne_order_id=shipment.ne_order_id)]
