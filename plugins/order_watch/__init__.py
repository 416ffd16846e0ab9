"""⑦ order_watch — 取り込み後にキャンセル・変更された受注伝票を倉庫に伝える.

Watches every order nebridge instructed to a warehouse and that is not shipped yet. When the
order is cancelled or deleted in Next Engine, the WMS is told to drop it; when it is edited in
a way that matters to the warehouse (rows, quantities, consignee, delivery method), the WMS is
told to drop it (reason ``edited``) and gets its new content as a new instruction, in that
order. Changes nebridge makes itself (status, tracking number, claim tag) and changes the
warehouse never sees (tags, notes, payment) are not edits: an order is edited exactly when the
instruction nebridge would send now differs from the one it sent.

The watch rides on the order import's own Next Engine search (one search reads what changed
since the import cursor, for import and watch alike), so it costs no extra call while nothing
changes. Works with every connector: one that cannot cancel
(:class:`~hooks.connectors.CancellingConnector`) gets each change shown in ``nebridge
attention`` for a person to stop the order by hand.
"""

from __future__ import annotations

from hooks import hookimpl
from hooks.records import PluginInfo


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="order_watch",
        summary="Tell the WMS about orders cancelled or edited in Next Engine after import",
        setting_ja="取り込み後にキャンセル・変更された受注伝票を倉庫に伝える",
    )
