"""Fault injection: errors by rate or schedule, latency, dropped connections, token expiry,
human edits racing a write, failed upload queues.

One :class:`Faults` object per server (``server.faults``). Settings, schedules and the seeded
draws are :class:`hooks.sandbox.FaultBook`'s; this adds NE's codes, the human-edit race,
access-token expiry every N calls and failed upload queues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.sandbox.config import FaultConfig
from daemon.sandbox.errors import INJECTABLE_CODES
from hooks.sandbox.faults import Draw, DropWhen, FaultBook, Scheduled

__all__ = ["DropWhen", "FaultDecision", "Faults"]


@dataclass(frozen=True)
class FaultDecision(Draw):
    """What happens to one API call: the shared draws plus NE's own."""

    human_race: bool = False
    expire_token: bool = False

    @property
    def error_code(self) -> str | None:
        """The NE code to answer with instead of running the call, if any."""
        return None if self.error is None else str(self.error)


class Faults(FaultBook[FaultConfig]):
    """Thread-safe NE fault settings plus one-shot schedules (see module docstring)."""

    PATH_PREFIXES = False

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._que_failures = 0
        self._token_calls = 0
        super().__init__(FaultConfig, config)

    def error_key(self, error: Any) -> str:
        """An NE code that can be injected (``ValueError`` naming the valid ones if not)."""
        code = str(error)
        if code not in INJECTABLE_CODES:
            raise ValueError(
                f"code {code} cannot be injected; use one of {sorted(INJECTABLE_CODES)}"
            )
        return code

    def _forget(self) -> None:
        self._que_failures = 0
        self._token_calls = 0

    def snapshot(self) -> dict[str, Any]:
        """Settings, pending schedules and scheduled upload failures as JSON-ready data."""
        data = super().snapshot()
        with self._lock:
            data["que_failures_scheduled"] = self._que_failures
        return data

    # ---------------------------------------------------------------- schedules
    def human_edit_next(
        self, count: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """The next ``count`` order writes race with a human edit of the same order."""
        self.schedule(Scheduled("human", count, path, method))

    def fail_next_ques(self, count: int = 1) -> None:
        """The next ``count`` uploads end with ``que_status_id=-1``."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._que_failures += count

    # ---------------------------------------------------------------- decisions
    def decide(self, path: str, *, token_call: bool, write: bool) -> FaultDecision:
        """Draw the faults for one API call to ``path`` (every NE API call is a POST)."""
        with self._lock:
            cfg = self._config
            shared = self.draw("POST", path)
            human = write and (
                self._take("human", "POST", path) is not None or self._roll(cfg.human_edit_rate)
            )
            expire = False
            if token_call:
                self._token_calls += 1
                every = cfg.expire_access_token_every_n_calls
                expire = every > 0 and self._token_calls % every == 0
            return FaultDecision(
                shared.latency_s,
                shared.drop_before,
                shared.error,
                shared.drop_after,
                human_race=human,
                expire_token=expire,
            )

    def overload_wait_s(self) -> float:
        """How long a ``wait_flag=1`` call waits out an injected ``003002``."""
        with self._lock:
            return self._config.overload_wait_ms / 1000.0

    def take_que_failure(self) -> bool:
        """Whether the upload being queued now should fail (schedule first, then rate)."""
        with self._lock:
            if self._que_failures > 0:
                self._que_failures -= 1
                return True
            return self._roll(self._config.que_failure_rate)
