"""Fault injection: errors by rate or schedule, latency, dropped connections, token expiry,
human edits racing a write, failed upload queues.

One :class:`Faults` object per server (``server.faults``), changeable while it runs, also
through ``POST /_sandbox/faults``. Random choices come from an RNG seeded with
``FaultConfig.seed``, so a sequential client sees the same faults on every run.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from daemon.sandbox.config import FaultConfig
from daemon.sandbox.errors import INJECTABLE_CODES

DropWhen = Literal["before", "after"]


@dataclass(frozen=True)
class FaultDecision:
    """What happens to one API call."""

    latency_s: float = 0.0
    drop_before: bool = False
    error_code: str | None = None
    drop_after: bool = False
    human_race: bool = False
    expire_token: bool = False


@dataclass
class _Scheduled:
    kind: str
    remaining: int
    path: str | None
    code: str | None = None


def _check_rate(name: str, value: Any) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    return rate


class Faults:
    """Thread-safe fault settings plus one-shot schedules (see module docstring)."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._rng = random.Random(0)
        self._schedule: deque[_Scheduled] = deque()
        self._que_failures = 0
        self._token_calls = 0
        self.update(**dataclasses.asdict(config or FaultConfig()))

    # ---------------------------------------------------------------- settings
    def update(self, **changes: Any) -> None:
        """Change settings (names of :class:`FaultConfig`); ``seed`` also reseeds the RNG."""
        names = {f.name for f in dataclasses.fields(FaultConfig)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            cfg = dataclasses.replace(self._config)
            for name, value in changes.items():
                if name == "rates":
                    rates = {str(code): _check_rate(f"rate {code}", r) for code, r in value.items()}
                    bad = set(rates) - set(INJECTABLE_CODES)
                    if bad:
                        raise ValueError(f"codes that cannot be injected: {sorted(bad)}")
                    cfg.rates = rates
                elif name == "fault_paths":
                    cfg.fault_paths = [str(p) for p in value]
                elif name.endswith("_rate"):
                    setattr(cfg, name, _check_rate(name, value))
                elif name == "seed":
                    cfg.seed = int(value)
                    self._rng = random.Random(cfg.seed)
                else:
                    number = int(value)
                    if number < 0:
                        raise ValueError(f"{name} must be >= 0")
                    setattr(cfg, name, number)
            self._config = cfg

    def reset(self) -> None:
        """Turn every fault off, forget schedules and counters, reseed the RNG."""
        with self._lock:
            self._config = FaultConfig(seed=self._config.seed)
            self._rng = random.Random(self._config.seed)
            self._schedule.clear()
            self._que_failures = 0
            self._token_calls = 0

    def snapshot(self) -> dict[str, Any]:
        """Settings and pending schedules as JSON-ready data."""
        with self._lock:
            data = dataclasses.asdict(self._config)
            data["scheduled"] = [dataclasses.asdict(s) for s in self._schedule]
            data["que_failures_scheduled"] = self._que_failures
            return data

    # ---------------------------------------------------------------- schedules
    def fail_next(self, code: str, count: int = 1, path: str | None = None) -> None:
        """The next ``count`` API calls (to ``path``, if given) fail with ``code``."""
        if code not in INJECTABLE_CODES:
            raise ValueError(f"code {code} cannot be injected; use one of "
                             f"{sorted(INJECTABLE_CODES)}")
        self._add(_Scheduled("error", count, path, code))

    def drop_next(self, count: int = 1, when: DropWhen = "before", path: str | None = None) -> None:
        """Drop the connection of the next ``count`` calls, before or after applying them."""
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        self._add(_Scheduled(f"drop_{when}", count, path))

    def human_edit_next(self, count: int = 1, path: str | None = None) -> None:
        """The next ``count`` order writes race with a human edit of the same order."""
        self._add(_Scheduled("human", count, path))

    def fail_next_ques(self, count: int = 1) -> None:
        """The next ``count`` uploads end with ``que_status_id=-1``."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._que_failures += count

    def _add(self, item: _Scheduled) -> None:
        if item.remaining < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._schedule.append(item)

    def _take(self, kind: str, path: str) -> _Scheduled | None:
        for item in self._schedule:
            if item.kind == kind and (item.path is None or item.path == path):
                item.remaining -= 1
                if item.remaining <= 0:
                    self._schedule.remove(item)
                return item
        return None

    def _roll(self, rate: float) -> bool:
        return rate > 0.0 and self._rng.random() < rate

    # ---------------------------------------------------------------- decisions
    def decide(self, path: str, *, token_call: bool, write: bool) -> FaultDecision:
        """Draw the faults for one API call to ``path``."""
        with self._lock:
            cfg = self._config
            drop_before = self._take("drop_before", path) is not None or self._roll(
                cfg.drop_before_rate
            )
            scheduled = self._take("error", path)
            code = scheduled.code if scheduled is not None else None
            if code is None and (not cfg.fault_paths or path in cfg.fault_paths):
                for candidate in sorted(cfg.rates):
                    if self._roll(cfg.rates[candidate]):
                        code = candidate
                        break
            drop_after = self._take("drop_after", path) is not None or self._roll(
                cfg.drop_after_rate
            )
            human = write and (
                self._take("human", path) is not None or self._roll(cfg.human_edit_rate)
            )
            expire = False
            if token_call:
                self._token_calls += 1
                every = cfg.expire_access_token_every_n_calls
                expire = every > 0 and self._token_calls % every == 0
            return FaultDecision(
                latency_s=cfg.latency_ms / 1000.0,
                drop_before=drop_before,
                error_code=code,
                drop_after=drop_after,
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
