"""Fault injection: error statuses by rate or schedule, latency, dropped connections,
answers that stall after the change was applied, changes applied late (after a client's
timeout), list answers whose ``Link`` leads back to the same page, and an
``X-Rate-Limit-Reset`` header with any value (e.g. an epoch timestamp).

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

from plugins.wms_logikura.sandbox.config import INJECTABLE_STATUSES, FaultConfig

DropWhen = Literal["before", "after"]


@dataclass(frozen=True)
class FaultDecision:
    """What happens to one API call."""

    latency_s: float = 0.0
    drop_before: bool = False
    status: int | None = None
    drop_after: bool = False
    stall_after_s: float = 0.0
    apply_after_s: float = 0.0
    link_loop: bool = False
    reset_header: str | None = None


@dataclass
class _Scheduled:
    kind: str
    remaining: int
    path: str | None
    method: str | None
    status: int | None = None
    seconds: float = 0.0
    value: str | None = None

    def matches(self, kind: str, method: str, path: str) -> bool:
        return (self.kind == kind and (self.path is None or self.path == path)
                and (self.method is None or self.method == method))


def _rate(name: str, value: Any) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    return rate


def _status(value: Any) -> int:
    status = int(value)
    if status not in INJECTABLE_STATUSES:
        raise ValueError(f"status {status} cannot be injected; use one of "
                         f"{sorted(INJECTABLE_STATUSES)}")
    return status


class Faults:
    """Thread-safe fault settings plus one-shot schedules (see module docstring)."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._rng = random.Random(0)
        self._schedule: deque[_Scheduled] = deque()
        self.update(**dataclasses.asdict(config or FaultConfig()))

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
                    cfg.rates = {str(_status(code)): _rate(f"rate {code}", r)
                                 for code, r in dict(value).items()}
                elif name == "fault_paths":
                    cfg.fault_paths = [str(p) for p in value]
                elif name.endswith("_rate"):
                    setattr(cfg, name, _rate(name, value))
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
        """Turn every fault off, forget schedules, reseed the RNG."""
        with self._lock:
            self._config = FaultConfig(seed=self._config.seed)
            self._rng = random.Random(self._config.seed)
            self._schedule.clear()

    def snapshot(self) -> dict[str, Any]:
        """Settings and pending schedules as JSON-ready data."""
        with self._lock:
            data = dataclasses.asdict(self._config)
            data["scheduled"] = [dataclasses.asdict(s) for s in self._schedule]
            return data

    # ---------------------------------------------------------------- schedules
    def fail_next(self, status: int, count: int = 1, path: str | None = None,
                  method: str | None = None) -> None:
        """The next ``count`` API calls (to ``method path``, if given) answer ``status``."""
        self._add(_Scheduled("status", count, path, method, status=_status(status)))

    def drop_next(self, count: int = 1, when: DropWhen = "before", path: str | None = None,
                  method: str | None = None) -> None:
        """Close the connection of the next ``count`` calls, before or after applying them."""
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        self._add(_Scheduled(f"drop_{when}", count, path, method))

    def stall_next(self, seconds: float, count: int = 1, path: str | None = None,
                   method: str | None = None) -> None:
        """Apply the next ``count`` calls, then wait ``seconds`` before answering (a client
        killed meanwhile never learns the outcome)."""
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        self._add(_Scheduled("stall_after", count, path, method, seconds=float(seconds)))

    def apply_late_next(self, seconds: float, count: int = 1, path: str | None = None,
                        method: str | None = None) -> None:
        """Hold the next ``count`` calls ``seconds`` before applying (and answering) them: a
        client that gave up meanwhile finds no trace of its request for a while."""
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        self._add(_Scheduled("apply_late", count, path, method, seconds=float(seconds)))

    def loop_links_next(self, count: int = 1, path: str | None = None,
                        method: str | None = None) -> None:
        """The next ``count`` list answers carry ``Link: <this same page>; rel="next"``."""
        self._add(_Scheduled("link_loop", count, path, method))

    def reset_header_next(self, value: str, count: int = 1, path: str | None = None,
                          method: str | None = None) -> None:
        """The next ``count`` answers carry ``X-Rate-Limit-Reset: value`` (e.g. an epoch
        timestamp instead of seconds)."""
        self._add(_Scheduled("reset_header", count, path, method, value=str(value)))

    def _add(self, item: _Scheduled) -> None:
        if item.remaining < 1:
            raise ValueError("count must be >= 1")
        if item.method is not None:
            item.method = item.method.upper()
        with self._lock:
            self._schedule.append(item)

    def _take(self, kind: str, method: str, path: str) -> _Scheduled | None:
        for item in self._schedule:
            if item.matches(kind, method, path):
                item.remaining -= 1
                if item.remaining <= 0:
                    self._schedule.remove(item)
                return item
        return None

    def _roll(self, rate: float) -> bool:
        return rate > 0.0 and self._rng.random() < rate

    # ---------------------------------------------------------------- decisions
    def decide(self, method: str, path: str) -> FaultDecision:
        """Draw the faults for one API call."""
        with self._lock:
            cfg = self._config
            drop_before = (self._take("drop_before", method, path) is not None
                           or self._roll(cfg.drop_before_rate))
            scheduled = self._take("status", method, path)
            status = scheduled.status if scheduled is not None else None
            in_scope = not cfg.fault_paths or any(path.startswith(p) for p in cfg.fault_paths)
            if status is None and in_scope:
                for code in sorted(cfg.rates):
                    if self._roll(cfg.rates[code]):
                        status = int(code)
                        break
            drop_after = (self._take("drop_after", method, path) is not None
                          or self._roll(cfg.drop_after_rate))
            stall = self._take("stall_after", method, path)
            late = self._take("apply_late", method, path)
            reset = self._take("reset_header", method, path)
            return FaultDecision(
                latency_s=cfg.latency_ms / 1000.0,
                drop_before=drop_before,
                status=status,
                drop_after=drop_after,
                stall_after_s=stall.seconds if stall is not None else 0.0,
                apply_after_s=late.seconds if late is not None else 0.0,
                link_loop=self._take("link_loop", method, path) is not None,
                reset_header=reset.value if reset is not None else None,
            )
