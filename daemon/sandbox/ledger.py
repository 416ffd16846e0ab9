"""The ledger: an append-only record of every change the sandbox made to its world.

Tests read it to prove end-to-end properties ("each order shipped exactly once", "net stock
change per goods code"), whether the change came from an API call, a simulated human or a
Python helper. Token values are never written here, only pair ids.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LedgerEntry:
    """One change. ``delta`` is the change of ``stock_quantity`` for ``stock.*`` entries."""

    seq: int
    kind: str
    at: str
    source: str
    call_no: int | None = None
    order_id: int | None = None
    goods_code: str | None = None
    que_id: int | None = None
    delta: int | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (used by ``GET /_sandbox/ledger``)."""
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
        order_id: int | None = None,
        goods_code: str | None = None,
    ) -> list[LedgerEntry]:
        """Entries with ``seq > since``, optionally filtered (``kind`` may end in ``.*``)."""
        with self._lock:
            selected: Iterable[LedgerEntry] = self._entries[since:]
            out = list(selected)
        if kind is not None:
            if kind.endswith(".*"):
                prefix = kind[:-1]
                out = [e for e in out if e.kind.startswith(prefix)]
            else:
                out = [e for e in out if e.kind == kind]
        if order_id is not None:
            out = [e for e in out if e.order_id == order_id]
        if goods_code is not None:
            wanted = goods_code.casefold()
            out = [e for e in out if e.goods_code is not None and e.goods_code.casefold() == wanted]
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

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
