"""② tracking_update — ステータス更新時、受注伝票の追跡番号を更新する.

With status_update, also write the shipment's tracking number (発送伝票番号,
``receive_order_delivery_cut_form_id``) to the order, in the same write-back as the shipped
status. Updating only the tracking number is impossible by design, hence the requirement.
"""

from __future__ import annotations

from hooks import hookimpl
from hooks.records import Action, Notice, PluginInfo, WmsShipment, WriteTracking


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="tracking_update",
        summary="Write the tracking number to Next Engine together with the shipped status",
        requires=("status_update",),
        setting_ja="ステータス更新時、受注伝票の追跡番号を更新する",
    )


@hookimpl
def nebridge_shipment_actions(shipment: WmsShipment) -> list[Action]:
    """Attach the tracking number; say so when the WMS sent none."""
    if not shipment.ne_order_id:
        return []
    if not shipment.tracking_number:
        return [
            Notice(
                f"shipment {shipment.shipment_id} has no tracking number; order "
                f"{shipment.ne_order_id} is shipped without one",
                level="warning",
            )
        ]
    return [
        WriteTracking(ne_order_id=shipment.ne_order_id, tracking_number=shipment.tracking_number)
    ]
