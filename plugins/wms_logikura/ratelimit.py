"""Fewer than ``requests_per_minute`` (≤ 100) Logikura API requests in any 60 seconds.

The request times live in the connector's SQLite file, so every thread, connector instance
and process using the same state folder (the daemon, ``run --once``, the CLI) shares one
budget; each slot is taken in one write transaction that also reads the clock, so takers
cannot erase each other's slots. A safety margin (:func:`budget`) stays unused: the clocks of
nebridge and Logikura never agree exactly, and Logikura's window may be aligned differently.

Two lanes share the budget, shipments first: *bulk* work (creating shipping schedules for
an order import) and everything else (reading shipping and receiving histories first of
all). Bulk work may fill the window only up to :func:`lane_budget`, keeping
:data:`READ_RESERVE` slots a minute for reading; reading keeps :data:`BULK_RESERVE` for bulk
work, and while a read waits for a slot, bulk work takes none beyond that share. So
shipments and receipts are read first however large an import is, and however much there is
to read, an import still advances. Bulk callers also pass the engine's
``should_stop``: their waits are cut when the daemon stops (:class:`TurnOver`), so a stop
never waits for a slot.

When Logikura says the budget is used up (``X-RateLimit-Remaining: 0``, or a 429 / 499
answer) nobody sends again before ``X-Rate-Limit-Reset`` seconds have passed — at most
:data:`MAX_PAUSE_SECONDS`: the window is a minute, so a larger value (e.g. an epoch
timestamp) is read as a point in time if it is one, and is bounded either way. The clock and
the sleep are injectable, so tests run minutes of traffic in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

from plugins.wms_logikura.errors import LogikuraUnavailable
from plugins.wms_logikura.store import LocalStore

WINDOW_SECONDS = 60.0
MAX_PAUSE_SECONDS = WINDOW_SECONDS + 5.0
DEFAULT_PAUSE_SECONDS = WINDOW_SECONDS
READ_RESERVE = 20
BULK_RESERVE = 10
STOP_CHECK_SECONDS = 1.0
_EPOCH_FLOOR = 1_000_000_000.0  # 2001-09-09: a reset this large is a timestamp


def budget(limit: int) -> int:
    """The requests nebridge sends in any window: ``limit`` less a 10 % margin (100 → 90;
    below 10 a limit is already far from Logikura's and is kept)."""
    return limit - limit // 10


def lane_budget(limit: int, bulk: bool) -> int:
    """The part of :func:`budget` the bulk lane (or the other) may fill; the rest is kept
    for the other lane."""
    whole = budget(limit)
    return max(1, whole - min(READ_RESERVE if bulk else BULK_RESERVE, whole // 3))


class TurnOver(LogikuraUnavailable):
    """The engine is stopping while bulk work waited for a slot; nothing was sent."""


class RateLimiter:
    """A sliding one-minute window over the shared request log, plus server-imposed pauses."""

    def __init__(
        self,
        store: LocalStore,
        limit: int,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        max_wait: float,
    ) -> None:
        self.store = store
        self.limit = limit
        self.clock = clock
        self.sleep = sleep
        self.max_wait = max_wait

    def acquire(self, *, bulk: bool = False, stop: Callable[[], bool] | None = None) -> None:
        """Wait until a request may be sent and count it.

        ``bulk`` requests take the bulk lane and, with ``stop``, wait in steps of
        :data:`STOP_CHECK_SECONDS`, raising :class:`TurnOver` once ``stop()`` is true.
        Anyone gives up after ``max_wait``; bulk work waits as long as it takes.
        """
        cap, lane_cap = budget(self.limit), lane_budget(self.limit, bulk)
        waited = 0.0
        while True:
            wait = self.store.take_slot(
                self.clock,
                bulk,
                cap,
                lane_cap,
                budget(self.limit) - lane_budget(self.limit, False),
                WINDOW_SECONDS,
                MAX_PAUSE_SECONDS,
            )
            if wait <= 0:
                return
            if stop is not None:
                if stop():
                    raise TurnOver(
                        "nebridge is stopping; the schedules not created yet follow at the next run"
                    )
                self.sleep(min(wait, STOP_CHECK_SECONDS))
                continue
            if waited + wait > self.max_wait:
                raise LogikuraUnavailable(
                    f"Logikura's limit of {self.limit} requests a minute leaves no room for "
                    f"another {wait:.0f} s; nebridge goes on at its next run"
                )
            self.sleep(wait)
            waited += wait

    def reset_seconds(self, header: str | None) -> float | None:
        """Seconds until Logikura's window resets, from an ``X-Rate-Limit-Reset`` value:
        seconds, or (if it is one) a POSIX timestamp; bounded to ``MAX_PAUSE_SECONDS``.
        None when the header is absent or not a number."""
        if header is None:
            return None
        try:
            value = float(header.strip())
        except ValueError:
            return None
        if value != value:  # NaN
            return None
        if value >= _EPOCH_FLOOR:
            value -= self.clock()
        return min(max(value, 0.0), MAX_PAUSE_SECONDS)

    def pause(self, seconds: float) -> None:
        """Logikura asked for a break: no request for ``seconds`` (bounded)."""
        bounded = min(max(seconds, 0.0), MAX_PAUSE_SECONDS)
        self.store.pause_until(self.clock() + bounded)
