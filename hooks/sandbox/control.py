"""A sandbox's own control API under ``/_sandbox/`` (JSON in, JSON out, real HTTP codes).

Not part of the upstream system: tests, demos and plugin authors use it to steer a sandbox from
another process (faults, clock) and to inspect it. :class:`ControlApi` answers the routes every
sandbox shares (config with secrets masked, fault settings, dropped connections, the clock);
a subclass adds its own with :meth:`ControlApi.add` and maps its refusals in
:meth:`ControlApi.refusal`. Control calls are never counted, delayed or faulted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from hooks.sandbox.clock import Clock
from hooks.sandbox.faults import FaultBook

logger = logging.getLogger(__name__)

PREFIX = "/_sandbox"
Query = dict[str, list[str]]
Body = dict[str, Any]
Route = Callable[[Body, Query], Any]
Reply = tuple[int, Any]
#: Config fields never shown by ``GET /_sandbox/config``.
SECRET_FIELDS = ("client_secret",)

SHARED_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/_sandbox/config", "the running configuration (secrets masked)"),
    ("GET", "/_sandbox/faults", "fault settings and pending schedules"),
    ("POST", "/_sandbox/faults", "change fault settings (FaultConfig fields)"),
    ("POST", "/_sandbox/faults/reset", "all faults off, schedules cleared"),
    ("POST", "/_sandbox/faults/drop_next", "{when: before|after, count=1, path, method}"),
    ("GET", "/_sandbox/clock", "{now}"),
)


class ControlError(Exception):
    """A control request the sandbox refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def first(query: Query, name: str) -> str | None:
    """The first value of ``name`` in a parsed query string, if any."""
    values = query.get(name)
    return values[0] if values else None


def integer(value: Any, name: str) -> int:
    """``value`` as an int, or a 400 naming ``name``."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ControlError(400, f"{name} must be an integer") from None


#: The largest clock move one request may make (about 100 years): a larger or non-finite value
#: (NaN, 1e300) would leave the clock unable to give the time, breaking every later call.
MAX_CLOCK_SECONDS = 100 * 366 * 86400


def seconds(value: Any, name: str) -> float:
    """``value`` as a finite number of seconds within ±:data:`MAX_CLOCK_SECONDS`, or a 400."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ControlError(400, f"{name} must be a number of seconds") from None
    if not math.isfinite(number) or abs(number) > MAX_CLOCK_SECONDS:
        raise ControlError(
            400,
            f"{name} must be a finite number of seconds within "
            f"±{MAX_CLOCK_SECONDS} (about 100 years)",
        )
    return number


def count(body: Body) -> int:
    """The ``count`` of a scheduling request (default 1)."""
    return integer(body.get("count", 1), "count")


def describe(routes: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
    """``GET /_sandbox/``'s listing of ``(method, path, what)`` routes."""
    return [{"method": m, "path": p, "what": w} for m, p, w in routes]


class ControlApi:
    """Routes ``/_sandbox/...`` requests; answers the shared ones itself."""

    def __init__(self, config: Any, clock: Clock, faults: FaultBook[Any], label: str) -> None:
        self._config = config
        self._clock = clock
        self._faults = faults
        self._label = label
        self._routes: dict[tuple[str, str], Route] = {
            ("GET", "/config"): lambda b, q: self.config_json(),
            ("GET", "/faults"): lambda b, q: faults.snapshot(),
            ("POST", "/faults"): self._update_faults,
            ("POST", "/faults/reset"): self._reset_faults,
            ("POST", "/faults/drop_next"): lambda b, q: self.scheduled(
                faults.drop_next, count(b), b.get("when", "before"), body=b
            ),
            ("GET", "/clock"): lambda b, q: {"now": clock.text()},
            ("POST", "/clock"): self._set_clock,
        }

    def add(self, routes: dict[tuple[str, str], Route]) -> None:
        """Add (or replace) routes, keyed by method and path below ``/_sandbox``."""
        self._routes.update(routes)

    def handle(self, method: str, path: str, query: Query, body: bytes) -> Reply:
        """Answer one control request with ``(http_status, json_data)``."""
        sub = path[len(PREFIX) :].rstrip("/") or "/"
        self.before()
        try:
            data = json.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise ControlError(400, "body must be a JSON object")
            route = self._routes.get((method, sub))
            if route is not None:
                return 200, route(data, query)
            return 200, self.fallback(method, sub, path)
        except ControlError as exc:
            return exc.status, {"error": str(exc)}
        except json.JSONDecodeError as exc:
            return 400, {"error": f"invalid JSON: {exc}"}
        except Exception as exc:
            reply = self.refusal(exc)
            if reply is not None:
                return reply
            if isinstance(exc, ValueError | TypeError):
                return 400, {"error": str(exc)}
            if isinstance(exc, KeyError):
                return 404, {"error": f"not found: {exc}"}
            # keep the server answering; the traceback goes to the log
            logger.exception("%s control failed on %s %s", self._label, method, path)
            return 500, {"error": f"{type(exc).__name__}: {exc}"}

    # ---------------------------------------------------------------- for subclasses
    def before(self) -> None:
        """Run before every control request (e.g. let queued work progress)."""

    def fallback(self, method: str, sub: str, path: str) -> Any:
        """Answer a request no fixed route matched (e.g. ``/state/orders/<id>``)."""
        raise ControlError(404, f"no control route {method} {path}; GET {PREFIX}/ lists them")

    def refusal(self, exc: Exception) -> Reply | None:
        """The reply for one of the sandbox's own refusals, or ``None`` if ``exc`` is not one."""
        return None

    def scheduled(self, schedule: Callable[..., None], *values: Any, body: Body) -> Any:
        """Schedule a fault with ``values`` and the body's ``path`` and ``method``."""
        schedule(*values, body.get("path"), body.get("method"))
        return self._faults.snapshot()

    def config_json(self) -> dict[str, Any]:
        """The running configuration, secrets masked, dates as ISO text."""
        data = dataclasses.asdict(self._config)
        for name in SECRET_FIELDS:
            if name in data:
                data[name] = "***"
        start = self._config.clock_start
        data["clock_start"] = None if start is None else start.isoformat()
        return data

    def _update_faults(self, body: Body, query: Query) -> Any:
        self._faults.update(**body)
        return self._faults.snapshot()

    def _reset_faults(self, body: Body, query: Query) -> Any:
        self._faults.reset()
        return self._faults.snapshot()

    def _set_clock(self, body: Body, query: Query) -> Any:
        if "advance_seconds" in body:
            self._clock.advance(seconds(body["advance_seconds"], "advance_seconds"))
        elif "set" in body:
            when = self._clock.parse(str(body["set"]))
            if when is None:
                raise ControlError(400, f"set must be {self._clock.TEXT_FORM}")
            self._clock.set(when)
        else:
            raise ControlError(400, "give advance_seconds or set")
        return {"now": self._clock.text()}
