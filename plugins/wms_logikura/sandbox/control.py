"""The sandbox's own control API under ``/_sandbox/`` (JSON in, JSON out, real HTTP codes).

Not part of Logikura: tests, the demo and plugin authors use it to steer the sandbox from
another process (faults, clock, authorisations, product master) and to inspect it (ledger,
traffic, stock, schedules). Control calls are never counted, rate-limited or faulted.
"""

from __future__ import annotations

from typing import Any

from hooks.sandbox import control as kit
from plugins.wms_logikura.sandbox.api import route_list
from plugins.wms_logikura.sandbox.errors import ApiError
from plugins.wms_logikura.sandbox.state import SandboxState

__all__ = ["ROUTES", "ControlApi"]

ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/_sandbox/", "this list, and the Logikura API routes"),
    *kit.SHARED_ROUTES,
    ("POST", "/_sandbox/faults/fail_next", "{status, count=1, path=null, method=null}"),
    ("POST", "/_sandbox/faults/stall_next", "{seconds, count=1, path, method}"),
    (
        "POST",
        "/_sandbox/faults/apply_late_next",
        "{seconds, count=1, path, method}: applied (and answered) only after seconds",
    ),
    ("POST", "/_sandbox/faults/loop_links_next", "{count=1, path, method}: Link next = same page"),
    (
        "POST",
        "/_sandbox/faults/reset_header_next",
        "{value, count=1, path, method}: X-Rate-Limit-Reset: value",
    ),
    ("POST", "/_sandbox/clock", "{advance_seconds} or {set: ISO 8601}"),
    (
        "POST",
        "/_sandbox/authorize",
        "approve the app without a browser: {redirect_uri, scope} -> {code}",
    ),
    ("POST", "/_sandbox/tokens", "a new authorisation without the code flow -> token answer"),
    ("POST", "/_sandbox/tokens/expire_access", "every access token expires now"),
    ("POST", "/_sandbox/tokens/expire_refresh", "every refresh token expires now (90 days)"),
    ("GET", "/_sandbox/ledger", "?since=&kind=&order_number=&product_code=&warehouse="),
    ("GET", "/_sandbox/traffic", "calls, most per minute, rate-limited answers; ?requests=1"),
    ("POST", "/_sandbox/state/variants", "{product_code, name, link_code, stock: {WH: qty}}"),
    ("GET", "/_sandbox/state/stock", "?warehouse=&product_code="),
    ("GET", "/_sandbox/state/schedules", "?order_number="),
    (
        "POST",
        "/_sandbox/staff/renumber",
        "staff edit a schedule's order number: {schedule_id, order_number (null blanks it)}",
    ),
    (
        "POST",
        "/_sandbox/staff/ship_partial",
        "staff ship a started schedule short: {schedule_id, shipped: {product_code: qty}}",
    ),
    (
        "POST",
        "/_sandbox/staff/correct_tracking",
        "staff change a shipped history's tracking number: {history_id, tracking_number}",
    ),
    (
        "POST",
        "/_sandbox/staff/garble",
        "the API shows a history with fields replaced: "
        "{kind: shipment|receipt, id, fields: {…}} ({} restores)",
    ),
)


def _mapping(body: kit.Body, name: str) -> dict[str, Any]:
    value = body.get(name) or {}
    if not isinstance(value, dict):
        raise kit.ControlError(400, f"{name} must be a JSON object")
    return value


class ControlApi(kit.ControlApi):
    """Routes ``/_sandbox/...`` requests to the state and its faults."""

    def __init__(self, state: SandboxState) -> None:
        super().__init__(state.config, state.clock, state.faults, "Logikura sandbox")
        self.state = state
        faults = state.faults
        self.add(
            {
                ("GET", "/"): lambda b, q: {"control": kit.describe(ROUTES), "api": route_list()},
                ("POST", "/faults/fail_next"): lambda b, q: self.scheduled(
                    faults.fail_next, int(b.get("status", 0)), kit.count(b), body=b
                ),
                ("POST", "/faults/stall_next"): lambda b, q: self.scheduled(
                    faults.stall_next, float(b.get("seconds", 0)), kit.count(b), body=b
                ),
                ("POST", "/faults/apply_late_next"): lambda b, q: self.scheduled(
                    faults.apply_late_next, float(b.get("seconds", 0)), kit.count(b), body=b
                ),
                ("POST", "/faults/loop_links_next"): lambda b, q: self.scheduled(
                    faults.loop_links_next, kit.count(b), body=b
                ),
                ("POST", "/faults/reset_header_next"): lambda b, q: self.scheduled(
                    faults.reset_header_next, str(b.get("value", "")), kit.count(b), body=b
                ),
                ("POST", "/authorize"): lambda b, q: {
                    "code": state.issue_code(
                        str(b.get("redirect_uri") or state.config.redirect_uri or ""),
                        b.get("scope"),
                        source="control",
                    )
                },
                ("POST", "/tokens"): lambda b, q: state.issue_tokens(
                    b.get("scope"), source="control"
                ),
                ("POST", "/tokens/expire_access"): lambda b, q: state.expire_access_tokens(),
                ("POST", "/tokens/expire_refresh"): lambda b, q: state.expire_refresh_tokens(),
                ("GET", "/ledger"): self._ledger,
                ("GET", "/traffic"): self._traffic,
                ("POST", "/state/variants"): self._add_variant,
                ("GET", "/state/stock"): lambda b, q: state.stock(
                    str(kit.first(q, "warehouse")), str(kit.first(q, "product_code"))
                ),
                ("GET", "/state/schedules"): lambda b, q: state.schedules_for(
                    str(kit.first(q, "order_number"))
                ),
                ("POST", "/staff/renumber"): lambda b, q: state.renumber_schedule(
                    int(b["schedule_id"]),
                    None if b.get("order_number") is None else str(b["order_number"]),
                ),
                ("POST", "/staff/ship_partial"): lambda b, q: state.ship_partial(
                    int(b["schedule_id"]), _mapping(b, "shipped")
                ),
                ("POST", "/staff/correct_tracking"): lambda b, q: state.correct_tracking(
                    int(b["history_id"]),
                    None if b.get("tracking_number") is None else str(b["tracking_number"]),
                ),
                ("POST", "/staff/garble"): lambda b, q: state.garble(
                    str(b.get("kind")), int(b["id"]), _mapping(b, "fields")
                ),
            }
        )

    def refusal(self, exc: Exception) -> kit.Reply | None:
        """A Logikura refusal answers with its own status and body."""
        return (exc.status, exc.body) if isinstance(exc, ApiError) else None

    def _ledger(self, body: kit.Body, query: kit.Query) -> Any:
        since = kit.first(query, "since")
        entries = self.state.ledger.entries(
            since=int(since) if since else 0,
            kind=kit.first(query, "kind"),
            order_number=kit.first(query, "order_number"),
            product_code=kit.first(query, "product_code"),
            warehouse=kit.first(query, "warehouse"),
        )
        return [e.as_dict() for e in entries]

    def _traffic(self, body: kit.Body, query: kit.Query) -> Any:
        data = self.state.traffic.snapshot()
        if kit.first(query, "requests"):
            data["requests"] = [r.as_dict() for r in self.state.traffic.requests()]
        return data

    def _add_variant(self, body: kit.Body, query: kit.Query) -> Any:
        code = body.get("product_code")
        if not isinstance(code, str) or not code:
            raise kit.ControlError(400, "product_code is required")
        stock = body.get("stock") or {}
        if not isinstance(stock, dict):
            raise kit.ControlError(400, "stock must be {warehouse code: quantity}")
        return self.state.add_variant(
            code,
            name=body.get("name"),
            link_code=body.get("link_code"),
            stock={str(k): int(v) for k, v in stock.items()},
        )
