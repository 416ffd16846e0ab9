"""Traffic records and the rate limiter of the Logikura sandbox.

Logikura allows 100 requests a minute and says so in ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-Rate-Limit-Reset`` (note the different spelling). The
sandbox enforces the limit and records every API request with its sandbox time, so tests can
assert that a client never sent more than the limit in any minute.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from plugins.wms_logikura.sandbox.config import RateWindow

RATE_LIMITED = frozenset({429, 499})


@dataclass(frozen=True)
class RequestRecord:
    """One API request: when it arrived (sandbox POSIX seconds) and how it was answered
    (``status`` None = the connection was dropped without an answer)."""

    call_no: int
    at: float
    method: str
    path: str
    status: int | None
    key: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class Traffic:
    """Thread-safe list of :class:`RequestRecord`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls = 0
        self._records: list[RequestRecord] = []

    def begin(self) -> int:
        """Number a new API call (1, 2, …)."""
        with self._lock:
            self._calls += 1
            return self._calls

    def record(self, record: RequestRecord) -> None:
        """Remember how one call went."""
        with self._lock:
            self._records.append(record)

    def requests(self, key: str | None = None) -> list[RequestRecord]:
        """Every recorded request (of one rate-limit ``key``), in arrival order."""
        with self._lock:
            records = list(self._records)
        return [r for r in records if key is None or r.key == key]

    def max_in_window(self, window_s: float = 60.0, key: str | None = None) -> int:
        """The most requests that arrived within any ``window_s`` seconds."""
        times = sorted(r.at for r in self.requests(key))
        best, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= window_s:
                start += 1
            best = max(best, end - start + 1)
        return best

    def rate_limited(self, key: str | None = None) -> int:
        """How many requests were answered 429 or 499."""
        return sum(1 for r in self.requests(key) if r.status in RATE_LIMITED)

    def snapshot(self) -> dict[str, Any]:
        """Totals for ``GET /_sandbox/traffic``."""
        return {
            "calls": len(self.requests()),
            "max_per_minute": self.max_in_window(),
            "rate_limited": self.rate_limited(),
        }


@dataclass(frozen=True)
class RateVerdict:
    """The limiter's answer for one request, with the header values to send."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-Rate-Limit-Reset``."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-Rate-Limit-Reset": str(self.reset_s),
        }


class RateLimiter:
    """``limit`` requests per ``window_s`` per key, in a fixed or a sliding window.

    Requests refused for being over the limit are not counted.
    """

    def __init__(self, limit: int, window_s: float, mode: RateWindow) -> None:
        self.limit = limit
        self.window_s = window_s
        self.mode = mode
        self._lock = threading.Lock()
        self._fixed: dict[str, tuple[float, int]] = {}
        self._sliding: dict[str, deque[float]] = {}

    def check(self, key: str, now: float) -> RateVerdict:
        """Count one request of ``key`` at ``now`` if the limit allows it."""
        with self._lock:
            if self.mode == "fixed":
                return self._check_fixed(key, now)
            return self._check_sliding(key, now)

    def _check_fixed(self, key: str, now: float) -> RateVerdict:
        start, count = self._fixed.get(key, (now, 0))
        if now >= start + self.window_s or now < start:
            start, count = now, 0
        reset = max(1, math.ceil(start + self.window_s - now))
        if count >= self.limit:
            self._fixed[key] = (start, count)
            return RateVerdict(False, self.limit, 0, reset)
        self._fixed[key] = (start, count + 1)
        return RateVerdict(True, self.limit, self.limit - count - 1, reset)

    def _check_sliding(self, key: str, now: float) -> RateVerdict:
        times = self._sliding.setdefault(key, deque())
        while times and (times[0] <= now - self.window_s or times[0] > now):
            times.popleft()
        if len(times) >= self.limit:
            return RateVerdict(
                False, self.limit, 0, max(1, math.ceil(times[0] + self.window_s - now))
            )
        times.append(now)
        return RateVerdict(
            True,
            self.limit,
            self.limit - len(times),
            max(1, math.ceil(times[0] + self.window_s - now)),
        )
