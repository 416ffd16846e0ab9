"""At most ``requests_per_minute`` (≤ 100) Logikura API requests in any 60 seconds.

The request times live in the connector's SQLite file, so every connector instance and every
process using the same state folder (the daemon, ``run --once``, the CLI) shares one budget.
When Logikura says the budget is used up (``X-RateLimit-Remaining: 0``, or a 429 / 499
answer) nobody sends again before ``X-Rate-Limit-Reset`` seconds have passed. The clock and
the sleep are injectable, so tests run minutes of traffic in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

from plugins.wms_logikura.errors import LogikuraUnavailable
from plugins.wms_logikura.store import LocalStore

WINDOW_SECONDS = 60.0


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

    def acquire(self) -> None:
        """Wait until a request may be sent and count it; give up after ``max_wait`` s."""
        waited = 0.0
        while True:
            wait = self.store.take_slot(self.clock(), self.limit, WINDOW_SECONDS)
            if wait <= 0:
                return
            if waited + wait > self.max_wait:
                raise LogikuraUnavailable(
                    f"Logikura's limit of {self.limit} requests a minute leaves no room for "
                    f"another {wait:.0f} s; nebridge goes on at its next run")
            self.sleep(wait)
            waited += wait

    def pause(self, seconds: float) -> None:
        """Logikura asked for a break: no request for ``seconds``."""
        self.store.pause_until(self.clock() + max(seconds, 0.0))
