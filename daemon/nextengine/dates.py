"""Next Engine date-times: JST wall-clock strings ``YYYY-MM-DD HH:MM:SS`` <-> aware datetimes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

JST = timezone(timedelta(hours=9), "JST")
NE_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_ZERO_DATES = frozenset({"0000-00-00 00:00:00", "0000-00-00"})
_FORMATS = (NE_DATETIME_FORMAT, "%Y/%m/%d %H:%M:%S", "%Y-%m-%d", "%Y/%m/%d")


def parse_ne_datetime(value: str | None) -> datetime | None:
    """Parse an NE date-time (JST, no offset) into an aware datetime.

    ``None``, an empty string and NE's zero date (``0000-00-00 00:00:00``) give ``None``.
    Raises ``ValueError`` for anything else that is not an NE date.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or text in _ZERO_DATES:
        return None
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=JST)
        except ValueError:
            continue
    raise ValueError(f"not a Next Engine date-time: {text!r}")


def format_ne_datetime(value: datetime) -> str:
    """Format an aware datetime as NE expects it (converted to JST, seconds precision).

    Naive datetimes are refused: guessing their zone shifts order dates by hours.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("format_ne_datetime needs an aware datetime (got a naive one)")
    return value.astimezone(JST).strftime(NE_DATETIME_FORMAT)
