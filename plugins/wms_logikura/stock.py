"""Logikura stock snapshots: ``GET /api/v1/inventories?warehouse_id=`` per linked warehouse.

Read only when asked (``nebridge stock take``, the ``stock_reconcile`` schedule): a full read
costs one request per page of each warehouse, inside the shared requests-per-minute budget
(the client waits for the limiter and for a 429's ``Retry-After``, like every other read).
``quantity`` is the on-hand stock of one product variant at one warehouse; the count is
dated when the read started (events confirmed while the pages are read may or may not be in
it; the comparison names any difference they cause).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from hooks.connectors import ConnectorContext, StockSnapshot
from hooks.errors import BatchRejected, RecordError
from plugins.wms_logikura.catalog import Catalog
from plugins.wms_logikura.client import LogikuraClient

Json = Mapping[str, object]


class LogikuraStockBatch:
    """One read of the inventories of the linked warehouses (a
    :class:`~hooks.connectors.StockBatch`; nothing to move away, so commit does nothing)."""

    def __init__(
        self,
        client: LogikuraClient,
        catalog: Callable[[], Catalog],
        warehouses: Callable[[], Mapping[int, str]],
        ctx: ConnectorContext,
    ) -> None:
        self._client, self._catalog, self._warehouses, self._ctx = (
            client,
            catalog,
            warehouses,
            ctx,
        )
        self.started: datetime = ctx.clock()
        self.source = f"logikura:inventories:{self.started.isoformat(timespec='seconds')}"

    def snapshots(self) -> list[StockSnapshot]:
        """Read every page of each linked warehouse's inventories; a record that names no
        product code rejects the read whole (nothing half-stored)."""
        catalog = self._catalog()
        errors: list[RecordError] = []
        out: list[StockSnapshot] = []
        for wid, code in sorted(self._warehouses().items()):
            info = self._ctx.warehouses.get(code)
            if info is None or not info.ne_linked:
                continue
            counts: dict[str, int] = {}
            for number, record in enumerate(
                self._client.get_all(
                    "/api/v1/inventories", "inventories", {"warehouse_id": str(wid)}
                ),
                1,
            ):
                product = _product_code(record, catalog)
                quantity = record.get("quantity")
                if not product or not isinstance(quantity, int) or quantity < 0:
                    errors.append(
                        RecordError(
                            self.source,
                            f"inventory {record.get('id')!r} of 拠点 #{wid} names no "
                            f"product code or has no whole quantity ({quantity!r})",
                            number,
                            "quantity" if product else "product_variant",
                        )
                    )
                    continue
                counts[product] = counts.get(product, 0) + quantity
            out.append(StockSnapshot(code, self.started, counts))
        if errors:
            raise BatchRejected(self.source, errors)
        return out

    def commit(self) -> None:
        """Nothing to move away: the next read is a new count."""

    def reject(self, error: BatchRejected) -> None:
        """Log it; the engine records the rejection (``nebridge inbox list``)."""
        self._ctx.log.error(
            "Logikura stock read %s rejected: %s",
            self.source,
            "; ".join(e.reason for e in error.errors[:5]),
        )


def _product_code(record: Json, catalog: Catalog) -> str:
    """The product code of an inventory: the embedded variant's, else the catalog's."""
    variant = record.get("product_variant")
    if isinstance(variant, Mapping) and isinstance(variant.get("product_code"), str):
        return str(variant["product_code"])
    vid = record.get("product_variant_id")
    found = catalog.by_id.get(vid) if isinstance(vid, int) else None
    return found.product_code if found is not None else ""
