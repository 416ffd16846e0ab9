"""The ledger: an append-only record of every change the sandbox made to its world.

Tests read it to prove end-to-end properties ("each order shipped exactly once", "net stock
change per goods code"), whether the change came from an API call, a simulated human or a
Python helper. Token values are never written here, only pair ids. The plumbing is
:class:`hooks.sandbox.Ledger`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hooks.sandbox.ledger import Ledger as KitLedger
from hooks.sandbox.ledger import LedgerEntry as KitLedgerEntry


@dataclass(frozen=True)
class LedgerEntry(KitLedgerEntry):
    """One change. ``delta`` is the change of ``stock_quantity`` for ``stock.*`` entries."""

    order_id: int | None = None
    goods_code: str | None = None
    que_id: int | None = None
    delta: int | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


class Ledger(KitLedger[LedgerEntry]):
    """Thread-safe append-only list of NE :class:`LedgerEntry`."""

    def __init__(self) -> None:
        super().__init__(LedgerEntry)

    def entries(
        self,
        *,
        since: int = 0,
        kind: str | None = None,
        order_id: int | None = None,
        goods_code: str | None = None,
    ) -> list[LedgerEntry]:
        """Entries with ``seq > since``, optionally filtered (``kind`` may end in ``.*``;
        goods codes match ignoring case)."""
        wanted = None if goods_code is None else goods_code.casefold()
        return self.select(
            lambda e: order_id is None or e.order_id == order_id,
            lambda e: (
                wanted is None or (e.goods_code is not None and e.goods_code.casefold() == wanted)
            ),
            since=since,
            kind=kind,
        )

    def count(self, kind: str, *, order_id: int | None = None) -> int:
        """How many entries of ``kind`` (for ``order_id``) exist."""
        return len(self.entries(kind=kind, order_id=order_id))

    def net_stock_change(self, goods_code: str) -> int:
        """Sum of ``stock_quantity`` movements (ship, upload) of ``goods_code``, ignoring case.

        Initial stock (seed world, ``goods.create``) is not a movement.
        """
        return sum(e.delta or 0 for e in self.entries(kind="stock.*", goods_code=goods_code))

    def shipped_order_ids(self) -> list[int]:
        """Order ids in the order they were shipped (repeats would show double shipping)."""
        return [e.order_id for e in self.entries(kind="order.shipped") if e.order_id is not None]
