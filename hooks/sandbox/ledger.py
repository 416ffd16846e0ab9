"""The ledger: an append-only record of every change a sandbox made to its world.

Tests read it to prove end-to-end properties ("each order shipped exactly once", "stock moved
by exactly the shipped quantities"), whatever made the change: an API call, a simulated person
or a Python helper. Subclass :class:`LedgerEntry` with the fields your world needs (all with
defaults) and give :class:`Ledger` that type. Never write token values into it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar


@dataclass(frozen=True)
class LedgerEntry:
    """One change: its number, kind (``order.shipped``), sandbox time, who made it and, for an
    API call, the call's number."""

    seq: int
    kind: str
    at: str
    source: str
    call_no: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``GET /_sandbox/ledger``)."""
        return asdict(self)


EntryT = TypeVar("EntryT", bound=LedgerEntry)


class Ledger(Generic[EntryT]):
    """Thread-safe append-only list of entries of one :class:`LedgerEntry` subclass."""

    def __init__(self, entry_type: type[EntryT]) -> None:
        self._entry_type = entry_type
        self._entries: list[EntryT] = []
        self._lock = threading.Lock()

    def append(self, kind: str, at: str, source: str, **data: Any) -> EntryT:
        """Record one change and return the entry."""
        with self._lock:
            entry = self._entry_type(len(self._entries) + 1, kind, at, source, **data)
            self._entries.append(entry)
            return entry

    def select(
        self, *tests: Callable[[EntryT], bool], since: int = 0, kind: str | None = None
    ) -> list[EntryT]:
        """Entries with ``seq > since`` of ``kind`` (which may end in ``.*``) passing every
        test."""
        with self._lock:
            out = self._entries[since:]
        if kind is not None:
            prefix = kind[:-1] if kind.endswith(".*") else None
            out = [e for e in out if (e.kind.startswith(prefix) if prefix else e.kind == kind)]
        return [e for e in out if all(test(e) for test in tests)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
