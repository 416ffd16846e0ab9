"""Traffic bookkeeping: call numbers, requests in flight per company, token pairs used.

NE's rules say a client must never have two requests in flight for one user and must never
send a pair that was already rotated (reference §6, §1.3). The sandbox cannot forbid either,
but it records both so tests can assert them.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

Verdict = Literal["current", "rotated", "dead", "unknown", "missing", "expired", "refresh_expired"]


@dataclass(frozen=True)
class TokenUse:
    """Which pair one API call sent and what the sandbox thought of it.

    ``current``: a live, unexpired pair; ``rotated``: expired access token that this call
    rotated; ``dead``: a pair already rotated or revoked (a client bug); ``unknown``: never
    issued; ``missing``: no access token; ``expired``/``refresh_expired``: re-login needed.
    """

    call_no: int
    path: str
    pair_id: int | None
    verdict: Verdict


class Traffic:
    """Thread-safe counters of API calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls = 0
        self._by_path: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._max_in_flight: Counter[str] = Counter()
        self._token_uses: list[TokenUse] = []

    def begin(self, company_id: str, path: str) -> int:
        """Count a call as started and return its call number (1, 2, …)."""
        with self._lock:
            self._calls += 1
            self._by_path[path] += 1
            self._in_flight[company_id] += 1
            if self._in_flight[company_id] > self._max_in_flight[company_id]:
                self._max_in_flight[company_id] = self._in_flight[company_id]
            return self._calls

    def end(self, company_id: str) -> None:
        """Count a call as finished (answered or dropped)."""
        with self._lock:
            self._in_flight[company_id] -= 1

    def record_token_use(self, use: TokenUse) -> None:
        """Remember which pair a call sent."""
        with self._lock:
            self._token_uses.append(use)

    @property
    def calls(self) -> int:
        """API calls received so far."""
        with self._lock:
            return self._calls

    def in_flight(self, company_id: str) -> int:
        """Requests of ``company_id`` being handled right now."""
        with self._lock:
            return self._in_flight[company_id]

    def max_in_flight(self, company_id: str) -> int:
        """Most requests of ``company_id`` ever handled at the same time."""
        with self._lock:
            return self._max_in_flight[company_id]

    def token_uses(self) -> list[TokenUse]:
        """Every recorded token use, in call order."""
        with self._lock:
            return list(self._token_uses)

    def dead_pair_uses(self) -> list[TokenUse]:
        """Calls that sent an already rotated or revoked pair."""
        return [u for u in self.token_uses() if u.verdict == "dead"]

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready summary for ``GET /_sandbox/stats``."""
        with self._lock:
            verdicts = Counter(u.verdict for u in self._token_uses)
            return {
                "calls": self._calls,
                "calls_by_path": dict(self._by_path),
                "in_flight": dict(self._in_flight),
                "max_in_flight": dict(self._max_in_flight),
                "token_verdicts": dict(verdicts),
            }

    def token_uses_json(self) -> list[dict[str, Any]]:
        """Token uses as JSON-ready dicts."""
        return [asdict(u) for u in self.token_uses()]
