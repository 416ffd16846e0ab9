"""The ledger: an append-only record of every change the Logikura sandbox made to its world.

Tests read it to prove end-to-end properties ("one shipping schedule per Next Engine order",
"stock moved exactly by the shipped quantities"). Token values are never written here. The
plumbing is :class:`hooks.sandbox.Ledger`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hooks.sandbox.ledger import Ledger as KitLedger
from hooks.sandbox.ledger import LedgerEntry as KitLedgerEntry


@dataclass(frozen=True)
class LedgerEntry(KitLedgerEntry):
    """One change. ``delta`` is the change of the inventory ``quantity`` on ``stock.*`` entries
    (``stock.allocate`` moves free stock to allocated: its ``delta`` is 0)."""

    record_id: int | None = None
    order_number: str | None = None
    warehouse: str | None = None
    product_code: str | None = None
    delta: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Ledger(KitLedger[LedgerEntry]):
    """Thread-safe append-only list of Logikura :class:`LedgerEntry`."""

    def __init__(self) -> None:
        super().__init__(LedgerEntry)

    def entries(
        self,
        *,
        since: int = 0,
        kind: str | None = None,
        order_number: str | None = None,
        product_code: str | None = None,
        warehouse: str | None = None,
    ) -> list[LedgerEntry]:
        """Entries with ``seq > since``, optionally filtered (``kind`` may end in ``.*``)."""
        return self.select(
            lambda e: order_number is None or e.order_number == order_number,
            lambda e: product_code is None or e.product_code == product_code,
            lambda e: warehouse is None or e.warehouse == warehouse,
            since=since,
            kind=kind,
        )

    def count(self, kind: str, *, order_number: str | None = None) -> int:
        """How many entries of ``kind`` (for ``order_number``) exist."""
        return len(self.entries(kind=kind, order_number=order_number))

    def schedules_created(self) -> dict[str, int]:
        """Shipping schedules created per ``sales_order.order_number`` (>1 = created twice)."""
        counts: dict[str, int] = {}
        for entry in self.entries(kind="schedule.create"):
            if entry.order_number is not None:
                counts[entry.order_number] = counts.get(entry.order_number, 0) + 1
        return counts

    def net_stock_change(self, product_code: str, warehouse: str | None = None) -> int:
        """Sum of inventory ``quantity`` movements (ship, receive) of a product code."""
        return sum(
            e.delta or 0
            for e in self.entries(kind="stock.*", product_code=product_code, warehouse=warehouse)
        )
