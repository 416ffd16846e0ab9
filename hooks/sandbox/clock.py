"""A sandbox clock (JST) that tests move instead of sleeping.

Everything time-dependent in a sandbox (token expiry, queues, rate windows, default dates)
reads one :class:`Clock`: ``clock.advance(86_400)`` expires a day-long token at once.
Subclass it to add the upstream system's date forms (``text``/``parse``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

JST = timezone(timedelta(hours=9), "JST")


class Clock:
    """A JST clock running in real time from ``start`` plus an offset tests can move.

    ``frozen=True`` stops real time from passing: only :meth:`advance` and :meth:`set` move it.
    """

    #: How :meth:`parse` wants a time written (shown in error messages).
    TEXT_FORM = "ISO 8601 (e.g. 2026-04-01T09:00:00+09:00)"

    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        base = start if start is not None else datetime.now(JST)
        if base.tzinfo is None:
            base = base.replace(tzinfo=JST)
        self._start = base.astimezone(JST).replace(microsecond=0)
        self._frozen = frozen
        self._mono0 = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    @property
    def start(self) -> datetime:
        """The time the clock started at (the seeded world's "now")."""
        return self._start

    def now(self) -> datetime:
        """Current sandbox time (aware, JST)."""
        with self._lock:
            elapsed = 0.0 if self._frozen else time.monotonic() - self._mono0
            return self._start + timedelta(seconds=elapsed + self._offset)

    def text(self) -> str:
        """Current time in the upstream system's own form (ISO 8601 here)."""
        return self.now().isoformat(timespec="seconds")

    @classmethod
    def parse(cls, text: str) -> datetime | None:
        """Read a time written in :attr:`TEXT_FORM` (naive values are JST); ``None`` if it is
        not one."""
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=JST)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every :meth:`advance` / :meth:`set` (e.g. to run queues)."""
        self._listeners.append(listener)

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward (or back, if negative) and return the new time."""
        with self._lock:
            self._offset += seconds
        for listener in list(self._listeners):
            listener()
        return self.now()

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (naive values are read as JST) and return it."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=JST)
        return self.advance((when - self.now()).total_seconds())
