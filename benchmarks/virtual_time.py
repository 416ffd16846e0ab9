"""Virtual time for several threads: minutes of rate-limited traffic in seconds, in order.

Each worker thread joins with :meth:`VirtualTime.party`. Time stands still while any party
works (sends a request, writes SQLite); when every party sleeps, the clock jumps to the
earliest wake-up and wakes whoever is due. So what one thread does between two sleeps takes
no virtual time, and a thread's sleep never moves the clock under another one's feet — unlike
a clock each sleeper advances by itself, which makes concurrent threads' requests land later
than their rate-limit slot. The Logikura sandbox's frozen clock follows the same time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Protocol


class _Advanceable(Protocol):
    def advance(self, seconds: float) -> object: ...


class _Sleeper:
    __slots__ = ("due", "woken")

    def __init__(self, due: float) -> None:
        self.due = due
        self.woken = False


class VirtualTime:
    """POSIX seconds shared by the parties; also a ``sleep`` for them (see module docstring).

    ``follower`` (e.g. a frozen sandbox clock) is advanced by the same amounts.
    """

    def __init__(self, start: float, follower: _Advanceable | None = None) -> None:
        self.now = start
        self.follower = follower
        self._cond = threading.Condition()
        self._active = 0
        self._sleepers: list[_Sleeper] = []

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        """The time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now, UTC)

    @contextmanager
    def party(self) -> Iterator[None]:
        """The calling thread takes part (its sleeps are scheduled) inside the block."""
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._advance_if_idle()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time (a party's thread only)."""
        with self._cond:
            me = _Sleeper(self.now + max(seconds, 0.0))
            self._sleepers.append(me)
            self._active -= 1
            self._advance_if_idle()
            while not me.woken:
                self._cond.wait()

    def _advance_if_idle(self) -> None:
        if self._active > 0 or not self._sleepers:
            return
        due = min(s.due for s in self._sleepers)
        if due > self.now:
            if self.follower is not None:
                self.follower.advance(due - self.now)
            self.now = due
        for sleeper in [s for s in self._sleepers if s.due <= self.now]:
            sleeper.woken = True
            self._sleepers.remove(sleeper)
            self._active += 1
        self._cond.notify_all()
