"""④ stock_plus — 入荷確定でネクストエンジンの在庫をプラスする.

When a receipt is confirmed at a warehouse linked to Next Engine, increment Next Engine stock
by the received quantities. Receipts at unlinked warehouses (e.g. shop stock kept apart from
e-commerce stock) do not move Next Engine stock.
"""

from __future__ import annotations

from hooks import hookimpl
from hooks.records import Action, AdjustStock, PluginInfo, WarehouseInfo, WmsReceipt


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="stock_plus",
        summary="Increment Next Engine stock for receipts at linked warehouses",
        setting_ja="入荷確定でネクストエンジンの在庫をプラスする",
    )


@hookimpl
def nebridge_receipt_actions(receipt: WmsReceipt, warehouse: WarehouseInfo) -> list[Action]:
    """One positive stock change per received line."""
    if not warehouse.ne_linked:
        return []
    return [
        AdjustStock(product_code=line.product_code, delta=line.quantity) for line in receipt.lines
    ]
