"""The sandbox's own control API under ``/_sandbox/`` (JSON in, JSON out, real HTTP codes).

Not part of Logikura: tests, the demo and plugin authors use it to steer the sandbox from
another process (faults, clock, authorisations, product master) and to inspect it (ledger,
traffic, stock, schedules). Control calls are never counted, rate-limited or faulted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from plugins.wms_logikura.sandbox.api import route_list
from plugins.wms_logikura.sandbox.state import ApiError, SandboxState

logger = logging.getLogger(__name__)

PREFIX = "/_sandbox"
Query = dict[str, list[str]]

ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/_sandbox/", "this list, and the Logikura API routes"),
    ("GET", "/_sandbox/config", "the running configuration (secret masked)"),
    ("GET", "/_sandbox/faults", "fault settings and pending schedules"),
    ("POST", "/_sandbox/faults", "change fault settings (FaultConfig fields)"),
    ("POST", "/_sandbox/faults/reset", "all faults off, schedules cleared"),
    ("POST", "/_sandbox/faults/fail_next", "{status, count=1, path=null, method=null}"),
    ("POST", "/_sandbox/faults/drop_next", "{when: before|after, count=1, path, method}"),
    ("POST", "/_sandbox/faults/stall_next", "{seconds, count=1, path, method}"),
    ("POST", "/_sandbox/faults/apply_late_next", "{seconds, count=1, path, method}: applied "
                                                 "(and answered) only after seconds"),
    ("POST", "/_sandbox/faults/loop_links_next", "{count=1, path, method}: Link next = same "
                                                 "page"),
    ("POST", "/_sandbox/faults/reset_header_next", "{value, count=1, path, method}: "
                                                   "X-Rate-Limit-Reset: value"),
    ("GET", "/_sandbox/clock", "{now}"),
    ("POST", "/_sandbox/clock", "{advance_seconds} or {set: ISO 8601}"),
    ("POST", "/_sandbox/authorize", "approve the app without a browser: {redirect_uri, scope}"
                                    " -> {code}"),
    ("POST", "/_sandbox/tokens", "a new authorisation without the code flow -> token answer"),
    ("POST", "/_sandbox/tokens/expire_access", "every access token expires now"),
    ("POST", "/_sandbox/tokens/expire_refresh", "every refresh token expires now (90 days)"),
    ("GET", "/_sandbox/ledger", "?since=&kind=&order_number=&product_code=&warehouse="),
    ("GET", "/_sandbox/traffic", "calls, most per minute, rate-limited answers; ?requests=1"),
    ("POST", "/_sandbox/state/variants", "{product_code, name, link_code, stock: {WH: qty}}"),
    ("GET", "/_sandbox/state/stock", "?warehouse=&product_code="),
    ("GET", "/_sandbox/state/schedules", "?order_number="),
    ("POST", "/_sandbox/staff/renumber", "staff edit a schedule's order number: "
                                         "{schedule_id, order_number (null blanks it)}"),
    ("POST", "/_sandbox/staff/ship_partial", "staff ship a started schedule short: "
                                             "{schedule_id, shipped: {product_code: qty}}"),
    ("POST", "/_sandbox/staff/correct_tracking", "staff change a shipped history's tracking "
                                                 "number: {history_id, tracking_number}"),
    ("POST", "/_sandbox/staff/garble", "the API shows a history with fields replaced: "
                                       "{kind: shipment|receipt, id, fields: {…}} ({} restores)"),
)


class ControlError(Exception):
    """A control request the sandbox refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _first(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _mapping(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name) or {}
    if not isinstance(value, dict):
        raise ControlError(400, f"{name} must be a JSON object")
    return value


def _count(body: dict[str, Any]) -> int:
    try:
        return int(body.get("count", 1))
    except (TypeError, ValueError):
        raise ControlError(400, "count must be an integer") from None


class ControlApi:
    """Routes ``/_sandbox/...`` requests to the state and its faults."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._routes: dict[tuple[str, str], Callable[[dict[str, Any], Query], Any]] = {
            ("GET", "/"): lambda b, q: {"control": [{"method": m, "path": p, "what": w}
                                                    for m, p, w in ROUTES],
                                        "api": route_list()},
            ("GET", "/config"): lambda b, q: self._config(),
            ("GET", "/faults"): lambda b, q: state.faults.snapshot(),
            ("POST", "/faults"): self._faults_update,
            ("POST", "/faults/reset"): self._faults_reset,
            ("POST", "/faults/fail_next"): self._fail_next,
            ("POST", "/faults/drop_next"): self._drop_next,
            ("POST", "/faults/stall_next"): self._stall_next,
            ("POST", "/faults/apply_late_next"): lambda b, q: self._scheduled(
                state.faults.apply_late_next, float(b.get("seconds", 0)), _count(b), b),
            ("POST", "/faults/loop_links_next"): lambda b, q: self._scheduled(
                state.faults.loop_links_next, _count(b), b),
            ("POST", "/faults/reset_header_next"): lambda b, q: self._scheduled(
                state.faults.reset_header_next, str(b.get("value", "")), _count(b), b),
            ("GET", "/clock"): lambda b, q: {"now": state.clock.iso()},
            ("POST", "/clock"): self._clock,
            ("POST", "/authorize"): lambda b, q: {"code": state.issue_code(
                str(b.get("redirect_uri") or state.config.redirect_uri or ""), b.get("scope"),
                source="control")},
            ("POST", "/tokens"): lambda b, q: state.issue_tokens(b.get("scope"),
                                                                source="control"),
            ("POST", "/tokens/expire_access"): lambda b, q: state.expire_access_tokens(),
            ("POST", "/tokens/expire_refresh"): lambda b, q: state.expire_refresh_tokens(),
            ("GET", "/ledger"): self._ledger,
            ("GET", "/traffic"): self._traffic,
            ("POST", "/state/variants"): self._add_variant,
            ("GET", "/state/stock"): lambda b, q: state.stock(
                str(_first(q, "warehouse")), str(_first(q, "product_code"))),
            ("GET", "/state/schedules"): lambda b, q: state.schedules_for(
                str(_first(q, "order_number"))),
            ("POST", "/staff/renumber"): lambda b, q: state.renumber_schedule(
                int(b["schedule_id"]), None if b.get("order_number") is None
                else str(b["order_number"])),
            ("POST", "/staff/ship_partial"): lambda b, q: state.ship_partial(
                int(b["schedule_id"]), _mapping(b, "shipped")),
            ("POST", "/staff/correct_tracking"): lambda b, q: state.correct_tracking(
                int(b["history_id"]), None if b.get("tracking_number") is None
                else str(b["tracking_number"])),
            ("POST", "/staff/garble"): lambda b, q: state.garble(
                str(b.get("kind")), int(b["id"]), _mapping(b, "fields")),
        }

    def handle(self, method: str, path: str, query: Query, body: bytes) -> tuple[int, Any]:
        """Answer one control request with ``(http_status, json_data)``."""
        sub = path[len(PREFIX):].rstrip("/") or "/"
        try:
            data = json.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise ControlError(400, "body must be a JSON object")
            route = self._routes.get((method, sub))
            if route is None:
                raise ControlError(404, f"no control route {method} {path}")
            return 200, route(data, query)
        except ControlError as exc:
            return exc.status, {"error": str(exc)}
        except ApiError as exc:
            return exc.status, exc.body
        except json.JSONDecodeError as exc:
            return 400, {"error": f"invalid JSON: {exc}"}
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}
        except KeyError as exc:
            return 404, {"error": f"not found: {exc}"}
        except Exception as exc:  # keep answering; the traceback goes to the log
            logger.exception("Logikura sandbox control failed on %s %s", method, path)
            return 500, {"error": f"{type(exc).__name__}: {exc}"}

    def _faults_update(self, body: dict[str, Any], query: Query) -> Any:
        self.state.faults.update(**body)
        return self.state.faults.snapshot()

    def _faults_reset(self, body: dict[str, Any], query: Query) -> Any:
        self.state.faults.reset()
        return self.state.faults.snapshot()

    def _fail_next(self, body: dict[str, Any], query: Query) -> Any:
        self.state.faults.fail_next(int(body.get("status", 0)), _count(body), body.get("path"),
                                    body.get("method"))
        return self.state.faults.snapshot()

    def _drop_next(self, body: dict[str, Any], query: Query) -> Any:
        self.state.faults.drop_next(_count(body), body.get("when", "before"), body.get("path"),
                                    body.get("method"))
        return self.state.faults.snapshot()

    def _scheduled(self, schedule: Callable[..., None], *args: Any) -> Any:
        """Schedule a fault with ``args`` (the body last: its ``path`` and ``method``)."""
        *values, body = args
        schedule(*values, body.get("path"), body.get("method"))
        return self.state.faults.snapshot()

    def _stall_next(self, body: dict[str, Any], query: Query) -> Any:
        self.state.faults.stall_next(float(body.get("seconds", 0)), _count(body),
                                     body.get("path"), body.get("method"))
        return self.state.faults.snapshot()

    def _config(self) -> dict[str, Any]:
        data = dataclasses.asdict(self.state.config)
        data["client_secret"] = "***"
        start = self.state.config.clock_start
        data["clock_start"] = None if start is None else start.isoformat()
        return data

    def _clock(self, body: dict[str, Any], query: Query) -> Any:
        if "advance_seconds" in body:
            self.state.clock.advance(float(body["advance_seconds"]))
        elif "set" in body:
            self.state.clock.set(datetime.fromisoformat(str(body["set"])))
        else:
            raise ControlError(400, "give advance_seconds or set")
        return {"now": self.state.clock.iso()}

    def _ledger(self, body: dict[str, Any], query: Query) -> Any:
        since = _first(query, "since")
        entries = self.state.ledger.entries(
            since=int(since) if since else 0, kind=_first(query, "kind"),
            order_number=_first(query, "order_number"),
            product_code=_first(query, "product_code"), warehouse=_first(query, "warehouse"))
        return [e.as_dict() for e in entries]

    def _traffic(self, body: dict[str, Any], query: Query) -> Any:
        data = self.state.traffic.snapshot()
        if _first(query, "requests"):
            data["requests"] = [r.as_dict() for r in self.state.traffic.requests()]
        return data

    def _add_variant(self, body: dict[str, Any], query: Query) -> Any:
        code = body.get("product_code")
        if not isinstance(code, str) or not code:
            raise ControlError(400, "product_code is required")
        stock = body.get("stock") or {}
        if not isinstance(stock, dict):
            raise ControlError(400, "stock must be {warehouse code: quantity}")
        return self.state.add_variant(code, name=body.get("name"),
                                      link_code=body.get("link_code"),
                                      stock={str(k): int(v) for k, v in stock.items()})
