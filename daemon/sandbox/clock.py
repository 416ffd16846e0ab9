"""The sandbox clock (JST) and NE date strings.

Every time the sandbox reads (token and ``state`` expiry, ``last_modified`` stamps, queue
progress, print-instruct dates) comes from one :class:`Clock`, so a test can move time forward
instead of sleeping: ``state.clock.advance(86_400)`` expires an access token.
"""

from __future__ import annotations

from datetime import datetime

from hooks.sandbox.clock import JST
from hooks.sandbox.clock import Clock as KitClock

__all__ = ["JST", "NE_DATE_FORMAT", "ZERO_DATE", "Clock", "format_ne", "normalize_ne", "parse_ne"]
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


class Clock(KitClock):
    """The sandbox clock (see :class:`hooks.sandbox.Clock`), writing and reading NE dates."""

    TEXT_FORM = "'YYYY-MM-DD HH:MM:SS'"

    def now_ne(self) -> str:
        """Current sandbox time as an NE date string."""
        return format_ne(self.now())

    def text(self) -> str:
        """Current time as an NE date string (what ``/_sandbox/clock`` shows)."""
        return self.now_ne()

    @classmethod
    def parse(cls, text: str) -> datetime | None:
        """Read an NE date (JST); ``None`` if it is not one."""
        return parse_ne(text)
