"""Fault injection: error statuses by rate or schedule, latency, dropped connections,
answers that stall after the change was applied, changes applied late (after a client's
timeout), list answers whose ``Link`` leads back to the same page, and an
``X-Rate-Limit-Reset`` header with any value (e.g. an epoch timestamp).

One :class:`Faults` object per server (``server.faults``). Settings, schedules and the seeded
draws are :class:`hooks.sandbox.FaultBook`'s; this adds Logikura's statuses, stalls, late
applies, paging loops and odd rate-limit headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hooks.sandbox.faults import Draw, DropWhen, FaultBook, Scheduled
from plugins.wms_logikura.sandbox.config import INJECTABLE_STATUSES, FaultConfig

__all__ = ["DropWhen", "FaultDecision", "Faults"]


@dataclass(frozen=True)
class FaultDecision(Draw):
    """What happens to one API call: the shared draws plus Logikura's own."""

    stall_after_s: float = 0.0
    apply_after_s: float = 0.0
    link_loop: bool = False
    reset_header: str | None = None

    @property
    def status(self) -> int | None:
        """The HTTP status to answer with instead of running the call, if any."""
        return None if self.error is None else int(self.error)


def _seconds(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("seconds must be > 0")
    return float(seconds)


class Faults(FaultBook[FaultConfig]):
    """Thread-safe Logikura fault settings plus one-shot schedules (see module docstring)."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        super().__init__(FaultConfig, config)

    def error_key(self, error: Any) -> str:
        """An HTTP status that can be injected (``ValueError`` naming the valid ones if not)."""
        status = int(error)
        if status not in INJECTABLE_STATUSES:
            raise ValueError(
                f"status {status} cannot be injected; use one of {sorted(INJECTABLE_STATUSES)}"
            )
        return str(status)

    # ---------------------------------------------------------------- schedules
    def stall_next(
        self, seconds: float, count: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """Apply the next ``count`` calls, then wait ``seconds`` before answering (a client
        killed meanwhile never learns the outcome)."""
        self.schedule(Scheduled("stall_after", count, path, method, seconds=_seconds(seconds)))

    def apply_late_next(
        self, seconds: float, count: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """Hold the next ``count`` calls ``seconds`` before applying (and answering) them: a
        client that gave up meanwhile finds no trace of its request for a while."""
        self.schedule(Scheduled("apply_late", count, path, method, seconds=_seconds(seconds)))

    def loop_links_next(
        self, count: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """The next ``count`` list answers carry ``Link: <this same page>; rel="next"``."""
        self.schedule(Scheduled("link_loop", count, path, method))

    def reset_header_next(
        self, value: str, count: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """The next ``count`` answers carry ``X-Rate-Limit-Reset: value`` (e.g. an epoch
        timestamp instead of seconds)."""
        self.schedule(Scheduled("reset_header", count, path, method, value=str(value)))

    # ---------------------------------------------------------------- decisions
    def decide(self, method: str, path: str) -> FaultDecision:
        """Draw the faults for one API call."""
        with self._lock:
            shared = self.draw(method, path)
            stall = self._take("stall_after", method, path)
            late = self._take("apply_late", method, path)
            reset = self._take("reset_header", method, path)
            return FaultDecision(
                shared.latency_s,
                shared.drop_before,
                shared.error,
                shared.drop_after,
                stall_after_s=stall.seconds if stall is not None else 0.0,
                apply_after_s=late.seconds if late is not None else 0.0,
                link_loop=self._take("link_loop", method, path) is not None,
                reset_header=None if reset is None else str(reset.value),
            )
