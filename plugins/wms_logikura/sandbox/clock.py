"""The Logikura sandbox clock (JST).

Everything time-dependent in the sandbox (code and token expiry, the rate-limit window,
``shipped_date`` / ``received_date`` defaults) reads one :class:`Clock`, so a test moves time
instead of sleeping: ``state.clock.advance(86_400)`` expires an access token.
"""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta, timezone

JST = timezone(timedelta(hours=9), "JST")


class Clock:
    """A JST clock running in real time from ``start`` plus an offset tests can move.

    ``frozen=True`` stops real time from passing: only :meth:`advance` and :meth:`set` move it.
    """

    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        base = start if start is not None else datetime.now(JST)
        if base.tzinfo is None:
            base = base.replace(tzinfo=JST)
        self._start = base.astimezone(JST).replace(microsecond=0)
        self._frozen = frozen
        self._mono0 = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def start(self) -> datetime:
        """The time the clock started at (the seeded world's "now")."""
        return self._start

    def now(self) -> datetime:
        """Current sandbox time (aware, JST)."""
        with self._lock:
            elapsed = 0.0 if self._frozen else time.monotonic() - self._mono0
            return self._start + timedelta(seconds=elapsed + self._offset)

    def timestamp(self) -> float:
        """Current sandbox time as POSIX seconds."""
        return self.now().timestamp()

    def today(self) -> date:
        """Today's date in Japan (Logikura's business dates)."""
        return self.now().date()

    def iso(self) -> str:
        """Current time as ISO 8601 with ``+09:00`` (Logikura's ``updated_at`` form)."""
        return self.now().isoformat(timespec="seconds")

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward (or back, if negative) and return the new time."""
        with self._lock:
            self._offset += seconds
        return self.now()

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (naive values are read as JST) and return it."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=JST)
        return self.advance((when - self.now()).total_seconds())
