"""Fault injection plumbing: settings changeable while the sandbox runs, one-shot schedules
("the next 3 calls to this path fail") and rates drawn from a seeded RNG, so a sequential
client sees the same faults on every run.

Subclass :class:`FaultSettings` with your sandbox's extra settings and :class:`FaultBook` with
its extra schedules and its ``decide``; :meth:`FaultBook.draw` makes the draws every sandbox
shares (latency, dropped connections, an error by schedule or rate).
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

DropWhen = Literal["before", "after"]


@dataclass
class FaultSettings:
    """Settings every sandbox has (all off by default).

    ``rates`` maps an error (an upstream code or HTTP status, as text) to the probability that
    any API call fails with it; ``fault_paths`` limits those to the given paths.
    """

    seed: int = 0
    rates: dict[str, float] = field(default_factory=dict)
    fault_paths: list[str] = field(default_factory=list)
    latency_ms: int = 0
    drop_before_rate: float = 0.0
    drop_after_rate: float = 0.0


@dataclass
class Scheduled:
    """A one-shot fault waiting for its next ``remaining`` calls (to ``method path``, if set);
    ``value`` is the error (or header value) it carries, ``seconds`` its delay."""

    kind: str
    remaining: int
    path: str | None
    method: str | None = None
    value: str | int | None = None
    seconds: float = 0.0

    def matches(self, kind: str, method: str, path: str) -> bool:
        """Whether this schedule applies to a call of ``method path``."""
        return (
            self.kind == kind
            and (self.path is None or self.path == path)
            and (self.method is None or self.method == method)
        )


@dataclass(frozen=True)
class Draw:
    """The shared part of one call's faults (see :meth:`FaultBook.draw`); a sandbox's own
    decision extends it."""

    latency_s: float = 0.0
    drop_before: bool = False
    error: str | int | None = None
    drop_after: bool = False


def check_rate(name: str, value: Any) -> float:
    """``value`` as a probability, or ``ValueError`` naming ``name``."""
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    return rate


SettingsT = TypeVar("SettingsT", bound=FaultSettings)


class FaultBook(Generic[SettingsT]):
    """Thread-safe fault settings plus one-shot schedules (see the module docstring)."""

    #: ``fault_paths`` entries are path prefixes (else exact paths).
    PATH_PREFIXES = True

    def __init__(self, settings_type: type[SettingsT], config: SettingsT | None = None) -> None:
        self._lock = threading.RLock()
        self._settings_type = settings_type
        self._config = settings_type()
        self._rng = random.Random(0)
        self._schedule: deque[Scheduled] = deque()
        self.update(**dataclasses.asdict(config or settings_type()))

    def error_key(self, error: Any) -> str:
        """Validate an injectable error and return its key in ``rates`` (override)."""
        return str(error)

    # ---------------------------------------------------------------- settings
    def update(self, **changes: Any) -> None:
        """Change settings (field names of the settings type); ``seed`` also reseeds."""
        names = {f.name for f in dataclasses.fields(self._settings_type)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            cfg = dataclasses.replace(self._config)
            for name, value in changes.items():
                if name == "rates":
                    cfg.rates = {
                        self.error_key(code): check_rate(f"rate {code}", rate)
                        for code, rate in dict(value).items()
                    }
                elif name == "fault_paths":
                    cfg.fault_paths = [str(p) for p in value]
                elif name.endswith("_rate"):
                    setattr(cfg, name, check_rate(name, value))
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
            self._config = self._settings_type(seed=self._config.seed)
            self._rng = random.Random(self._config.seed)
            self._schedule.clear()
            self._forget()

    def _forget(self) -> None:
        """Clear a subclass's own counters on :meth:`reset` (called under the lock)."""

    def snapshot(self) -> dict[str, Any]:
        """Settings and pending schedules as JSON-ready data."""
        with self._lock:
            data = dataclasses.asdict(self._config)
            data["scheduled"] = [dataclasses.asdict(s) for s in self._schedule]
            return data

    # ---------------------------------------------------------------- schedules
    def schedule(self, item: Scheduled) -> None:
        """Queue a one-shot fault (``count`` must be >= 1)."""
        if item.remaining < 1:
            raise ValueError("count must be >= 1")
        if item.method is not None:
            item.method = item.method.upper()
        with self._lock:
            self._schedule.append(item)

    def fail_next(
        self, error: Any, count: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """The next ``count`` API calls (to ``method path``, if given) fail with ``error``."""
        self.error_key(error)
        self.schedule(Scheduled("error", count, path, method, value=error))

    def drop_next(
        self,
        count: int = 1,
        when: DropWhen = "before",
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """Close the connection of the next ``count`` calls, before or after applying them."""
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        self.schedule(Scheduled(f"drop_{when}", count, path, method))

    def _take(self, kind: str, method: str, path: str) -> Scheduled | None:
        """Use up one call of the first matching schedule (caller holds the lock)."""
        for item in self._schedule:
            if item.matches(kind, method, path):
                item.remaining -= 1
                if item.remaining <= 0:
                    self._schedule.remove(item)
                return item
        return None

    def _roll(self, rate: float) -> bool:
        """One seeded draw (caller holds the lock)."""
        return rate > 0.0 and self._rng.random() < rate

    # ---------------------------------------------------------------- decisions
    def draw(self, method: str, path: str) -> Draw:
        """The shared draws for one call, in a fixed order: a drop before, an error (scheduled
        first, then by rate), a drop after. A subclass's ``decide`` holds ``self._lock``
        around this and its own draws so one call's draws are never interleaved."""
        with self._lock:
            cfg = self._config
            drop_before = self._take("drop_before", method, path) is not None or self._roll(
                cfg.drop_before_rate
            )
            scheduled = self._take("error", method, path)
            error = scheduled.value if scheduled is not None else None
            if error is None and self._in_scope(cfg.fault_paths, path):
                for code in sorted(cfg.rates):
                    if self._roll(cfg.rates[code]):
                        error = code
                        break
            drop_after = self._take("drop_after", method, path) is not None or self._roll(
                cfg.drop_after_rate
            )
            return Draw(cfg.latency_ms / 1000.0, drop_before, error, drop_after)

    def _in_scope(self, fault_paths: list[str], path: str) -> bool:
        if not fault_paths:
            return True
        if self.PATH_PREFIXES:
            return any(path.startswith(p) for p in fault_paths)
        return path in fault_paths
