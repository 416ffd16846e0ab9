"""A receipts plugin whose own description raises: registered (its hooks are known), then
failed — so only the receipts stage it takes part in is paused."""

from hooks import hookimpl
from hooks.records import AdjustStock


@hookimpl
def nebridge_plugin_info():
    raise RuntimeError("broken release: plugin info unavailable")


@hookimpl
def nebridge_receipt_actions(receipt):
    return [AdjustStock(line.product_code, line.quantity) for line in receipt.lines]
