"""The ledger: an append-only record of every change the Logikura sandbox made to its world.

Tests read it to prove end-to-end properties ("one shipping schedule per Next Engine order",
"stock moved exactly by the shipped quantities"). Token values are never written here.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LedgerEntry:
    """One change. ``delta`` is the change of the inventory ``quantity`` on ``stock.*`` entries
    (``stock.allocate`` moves free stock to allocated: its ``delta`` is 0)."""

    seq: int
    kind: str
    at: str
    source: str
    call_no: int | None = None
    record_id: int | None = None
    order_number: str | None = None
    warehouse: str | None = None
    product_code: str | None = None
    delta: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``GET /_sandbox/ledger``)."""
        return asdict(self)


class Ledger:
    """Thread-safe append-only list of :class:`LedgerEntry`."""

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []
        self._lock = threading.Lock()

    def append(self, kind: str, at: str, source: str, **data: Any) -> LedgerEntry:
        """Record one change and return the entry."""
        with self._lock:
            entry = LedgerEntry(len(self._entries) + 1, kind, at, source, **data)
            self._entries.append(entry)
            return entry

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
        with self._lock:
            out = list(self._entries[since:])
        if kind is not None:
            prefix = kind[:-1] if kind.endswith(".*") else None
            out = [e for e in out if (e.kind.startswith(prefix) if prefix else e.kind == kind)]
        if order_number is not None:
            out = [e for e in out if e.order_number == order_number]
        if product_code is not None:
            out = [e for e in out if e.product_code == product_code]
        if warehouse is not None:
            out = [e for e in out if e.warehouse == warehouse]
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

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
        return sum(e.delta or 0 for e in self.entries(kind="stock.*", product_code=product_code,
                                                      warehouse=warehouse))
