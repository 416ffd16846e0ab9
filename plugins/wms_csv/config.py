"""Configuration of the CSV folder connector (the ``wms.csv`` section of ``daemon.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CsvConnectorConfig(BaseModel):
    """Where the WMS drops its CSV files, where nebridge writes orders, and how to read them.

    ``timezone`` is applied to timestamps written without a UTC offset. ``stable_seconds`` is
    how long a file must stay unchanged (seen by two scans that far apart) before it is
    taken, so half-written files are left alone; ``0`` takes a complete-looking file (last
    byte a newline) at first sight, for WMSs that write to a temporary name and rename.
    ``processed_watch_seconds`` is how long a file filed away into ``processed/`` is still
    watched: a WMS writing to the final name that pauses longer than ``stable_seconds`` may
    append to it there; it then goes back to the inbox and is read again (``0``: no watch).
    ``encoding_out`` is the encoding of the order files written to ``outbox``.
    ``products_max_drop_percent`` guards the product master: a ``products*.csv`` with that
    many percent fewer products than the master in use is rejected (one empty export of the
    WMS must not make every later shipment "unknown product"); ``100`` turns the guard off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    inbox: Path
    outbox: Path
    timezone: str = "Asia/Tokyo"
    stable_seconds: float = Field(default=0.5, ge=0)
    processed_watch_seconds: float = Field(default=600, ge=0)
    encoding_out: Literal["utf-8", "cp932"] = "utf-8"
    products_max_drop_percent: int = Field(default=50, ge=0, le=100)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        """Reject a time zone name the system's zone database does not know, at load time."""
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def tzinfo(self) -> ZoneInfo:
        """The configured time zone for timestamps without an offset."""
        return ZoneInfo(self.timezone)
