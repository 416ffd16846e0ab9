"""The sandbox clock (JST) and NE date strings.

Every time the sandbox reads (token and ``state`` expiry, ``last_modified`` stamps, queue
progress, print-instruct dates) comes from one :class:`Clock`, so a test can move time forward
instead of sleeping: ``state.clock.advance(86_400)`` expires an access token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

JST = timezone(timedelta(hours=9), "JST")
NE_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
ZERO_DATE = "0000-00-00 00:00:00"


def format_ne(when: datetime) -> str:
    """Format ``when`` the way NE does: JST, ``YYYY-MM-DD HH:MM:SS`` (second precision)."""
    return when.astimezone(JST).strftime(NE_DATE_FORMAT)


def parse_ne(text: str, *, allow_slash: bool = True) -> datetime | None:
    """Parse an NE date (``YYYY-MM-DD[ HH:MM[:SS]]``, JST) or return ``None`` if it is not one.

    ``allow_slash`` also accepts ``YYYY/MM/DD`` (seen in one client's README).
    """
    value = text.strip()
    if allow_slash:
        value = value.replace("/", "-")
    for fmt in (NE_DATE_FORMAT, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=JST)
        except ValueError:
            continue
    return None


def normalize_ne(text: str, *, allow_slash: bool = True) -> str | None:
    """Return ``text`` as a canonical NE date string, or ``None`` if it is not a date."""
    if text.strip() == ZERO_DATE:
        return ZERO_DATE
    parsed = parse_ne(text, allow_slash=allow_slash)
    return None if parsed is None else format_ne(parsed)


class Clock:
    """A JST clock that runs in real time from ``start`` plus an offset tests can move.

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
        self._listeners: list[Callable[[], None]] = []

    @property
    def start(self) -> datetime:
        """The time the clock started at (the seed world's "now")."""
        return self._start

    def now(self) -> datetime:
        """Current sandbox time (aware, JST)."""
        with self._lock:
            elapsed = 0.0 if self._frozen else time.monotonic() - self._mono0
            return self._start + timedelta(seconds=elapsed + self._offset)

    def now_ne(self) -> str:
        """Current sandbox time as an NE date string."""
        return format_ne(self.now())

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
        delta = (when - self.now()).total_seconds()
        return self.advance(delta)
