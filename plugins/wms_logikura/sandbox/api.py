"""The Logikura API paths of the sandbox: routing, authentication, the rate limit, paging and
fault injection around :class:`~.state.SandboxState`'s rules.

Order inside one API call: count it → draw faults → latency → drop-before → apply-late (wait
before anything else) → bearer token (401) → rate limit (429/499, not counted) → injected
status → scope (403) → the endpoint (a looping ``Link`` if injected) → an injected
``X-Rate-Limit-Reset`` → drop-after (applied, no answer) or stall-after (applied, answer
delayed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from plugins.wms_logikura.sandbox.errors import ApiError, Json
from plugins.wms_logikura.sandbox.state import SandboxState
from plugins.wms_logikura.sandbox.traffic import RequestRecord

READ_METHODS = frozenset({"GET"})
_REASONS = {
    429: "Too Many Requests",
    499: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Request:
    """One API request as a handler sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Json
    ids: tuple[int, ...] = ()

    def param(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Listing:
    """A list answer, paged by the dispatcher: ``{key: items}`` plus a ``Link`` header."""

    key: str
    items: list[Json]


@dataclass
class Reply:
    """What the server sends: status, JSON body (None = empty) and headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        """The body bytes."""
        if self.body is None:
            return b""
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")


Handler = Callable[[SandboxState, Request], Json | Listing | None]


def _routes() -> list[tuple[str, re.Pattern[str], Handler]]:
    n = r"(\d+)"
    table: list[tuple[str, str, Handler]] = [
        ("GET", "/api/v1/warehouses", lambda s, r: Listing("warehouses", s.list_warehouses())),
        (
            "GET",
            "/api/v1/product_variants",
            lambda s, r: Listing("product_variants", s.list_variants()),
        ),
        ("GET", f"/api/v1/product_variants/{n}", lambda s, r: s.get_variant(r.ids[0])),
        (
            "GET",
            "/api/v1/external_service_accounts",
            lambda s, r: Listing("external_service_accounts", s.list_accounts()),
        ),
        (
            "GET",
            "/api/v1/external_service_product_variants",
            lambda s, r: Listing("external_service_product_variants", s.list_links()),
        ),
        ("POST", "/api/v1/external_service_product_variants", lambda s, r: s.create_link(r.body)),
        (
            "PUT",
            f"/api/v1/external_service_product_variants/{n}",
            lambda s, r: s.update_link(r.ids[0], r.body),
        ),
        (
            "DELETE",
            f"/api/v1/external_service_product_variants/{n}",
            lambda s, r: s.delete_link(r.ids[0]),
        ),
        (
            "GET",
            "/api/v1/inventories",
            lambda s, r: Listing("inventories", s.list_inventories(r.param("warehouse_id"))),
        ),
        ("GET", f"/api/v1/stocks/{n}", lambda s, r: s.get_stock(r.ids[0])),
        ("GET", "/api/v1/consignees", lambda s, r: Listing("consignees", s.list_consignees())),
        ("POST", "/api/v1/consignees", lambda s, r: s.create_consignee(r.body)),
        ("PUT", f"/api/v1/consignees/{n}", lambda s, r: s.update_consignee(r.ids[0], r.body)),
        (
            "GET",
            "/api/v1/shipping_schedules",
            lambda s, r: Listing("shipping_schedules", s.list_schedules()),
        ),
        ("POST", "/api/v1/shipping_schedules", lambda s, r: s.create_schedule(r.body)),
        ("GET", f"/api/v1/shipping_schedules/{n}", lambda s, r: s.get_schedule(r.ids[0])),
        (
            "PUT",
            f"/api/v1/shipping_schedules/{n}",
            lambda s, r: s.update_schedule(r.ids[0], r.body),
        ),
        ("DELETE", f"/api/v1/shipping_schedules/{n}", lambda s, r: s.delete_schedule(r.ids[0])),
        (
            "PATCH",
            f"/api/v1/shipping_schedules/{n}/start",
            lambda s, r: s.start_schedule(r.ids[0], r.body),
        ),
        ("PUT", f"/api/v1/shipping_schedules/{n}/ship", lambda s, r: s.ship_schedule(r.ids[0])),
        (
            "GET",
            "/api/v1/shipping_histories",
            lambda s, r: Listing(
                "shipping_histories",
                s.list_shipping_histories(r.param("shipped_date_from"), r.param("shipped_date_to")),
            ),
        ),
        ("POST", "/api/v1/shipping_histories", lambda s, r: s.create_shipping_history(r.body)),
        ("GET", f"/api/v1/shipping_histories/{n}", lambda s, r: s.get_shipping_history(r.ids[0])),
        (
            "GET",
            "/api/v1/receiving_histories",
            lambda s, r: Listing(
                "receiving_histories",
                s.list_receiving_histories(
                    r.param("received_date_from"), r.param("received_date_to")
                ),
            ),
        ),
        ("POST", "/api/v1/receiving_histories", lambda s, r: s.create_receiving_history(r.body)),
        ("GET", f"/api/v1/receiving_histories/{n}", lambda s, r: s.get_receiving_history(r.ids[0])),
        (
            "DELETE",
            f"/api/v1/receiving_histories/{n}",
            lambda s, r: s.delete_receiving_history(r.ids[0]),
        ),
    ]
    return [(method, re.compile(f"^{pattern}$"), handler) for method, pattern, handler in table]


ROUTES = _routes()


def route_list() -> list[dict[str, str]]:
    """Every API route (method and path pattern), for the control API's index."""
    return [
        {"method": m, "path": p.pattern.strip("^$").replace(r"(\d+)", "{id}")}
        for m, p, _h in ROUTES
    ]


def _match(method: str, path: str) -> tuple[Handler, tuple[int, ...]] | None:
    path_known = False
    for route_method, pattern, handler in ROUTES:
        found = pattern.match(path)
        if found:
            path_known = True
            if route_method == method:
                return handler, tuple(int(g) for g in found.groups())
    if path_known:
        raise ApiError(405, {"error": "Method Not Allowed"})
    return None


def _page(state: SandboxState, path: str, request: Request, listing: Listing) -> Reply:
    raw = request.param("page") or "1"
    try:
        page = max(1, int(raw))
    except ValueError:
        raise ApiError(422, {"error": f"page は整数で入力してください: {raw}"}) from None
    size = state.config.page_size
    items = listing.items[(page - 1) * size : page * size]
    links = []
    if page > 1:
        links.append(f'<{_page_url(state, path, request, page - 1)}>; rel="prev"')
    if page * size < len(listing.items):
        links.append(f'<{_page_url(state, path, request, page + 1)}>; rel="next"')
    headers = {"Link": ", ".join(links)} if links else {}
    return Reply(200, {listing.key: items}, headers)


def _page_url(state: SandboxState, path: str, request: Request, page: int) -> str:
    params = [(k, v) for k, values in request.query.items() if k != "page" for v in values]
    params.append(("page", str(page)))
    return f"{state.base_url}{path}?{urlencode(params)}"


def handle_api(
    state: SandboxState,
    method: str,
    path: str,
    query: dict[str, list[str]],
    body: bytes,
    headers: Mapping[str, str],
    sleep: Callable[[float], None],
) -> Reply | None:
    """Answer one ``/api/…`` call; ``None`` means: close the connection without answering."""
    call_no = state.traffic.begin()
    arrived = state.clock.timestamp()
    decision = state.faults.decide(method, path)
    key = "anonymous"

    def record(status: int | None) -> None:
        state.traffic.record(RequestRecord(call_no, arrived, method, path, status, key))

    if decision.latency_s > 0:
        sleep(decision.latency_s)
    if decision.drop_before:
        record(None)
        return None
    if decision.apply_after_s > 0:
        sleep(decision.apply_after_s)
    rate_headers: dict[str, str] = {}
    if decision.reset_header is not None:
        rate_headers["X-Rate-Limit-Reset"] = decision.reset_header
    try:
        with state.acting("api", call_no):
            token = state.authenticate(headers.get("Authorization"))
            key = f"grant:{token.grant_id}" if state.config.rate_limit_key == "grant" else "all"
            verdict = state.rate_check(key)
            rate_headers = {**verdict.headers(), **rate_headers}
            if not verdict.allowed:
                reply = Reply(
                    state.config.rate_limit_status, {"error": "Too Many Requests"}, rate_headers
                )
                record(reply.status)
                return reply
            if decision.status is not None:
                reply = Reply(decision.status, {"error": _REASONS[decision.status]}, rate_headers)
                record(reply.status)
                return reply
            found = _match(method, path)
            if found is None:
                raise ApiError(404, {"error": "Not Found"})
            handler, ids = found
            if method not in READ_METHODS and "write" not in token.scope.split():
                raise ApiError(403, {"error": "insufficient_scope"})
            try:
                data = json.loads(body) if body.strip() else {}
            except json.JSONDecodeError as exc:
                raise ApiError(400, {"error": f"invalid JSON: {exc}"}) from None
            if not isinstance(data, dict):
                raise ApiError(400, {"error": "the body must be a JSON object"})
            result = handler(state, Request(method, path, query, data, ids))
            if isinstance(result, Listing):
                request = Request(method, path, query, data, ids)
                reply = _page(state, path, request, result)
                if decision.link_loop:
                    here = _page_url(state, path, request, int(request.param("page") or 1))
                    reply.headers["Link"] = f'<{here}>; rel="next"'
            elif result is None:
                reply = Reply(204)
            else:
                reply = Reply(200, result)
    except ApiError as exc:
        reply = Reply(exc.status, exc.body)
    reply.headers.update(rate_headers)
    if decision.drop_after:
        record(None)
        return None
    if decision.stall_after_s > 0:
        sleep(decision.stall_after_s)
    record(reply.status)
    return reply


def handle_token(
    state: SandboxState, params: Mapping[str, str], sleep: Callable[[float], None]
) -> Reply | None:
    """``POST /oauth/token`` (not rate-limited; faults apply, so refresh failures can be
    tested)."""
    decision = state.faults.decide("POST", "/oauth/token")
    if decision.latency_s > 0:
        sleep(decision.latency_s)
    if decision.drop_before:
        return None
    if decision.status is not None:
        return Reply(decision.status, {"error": _REASONS[decision.status]})
    try:
        reply = Reply(200, state.token(params), {"Cache-Control": "no-store"})
    except ApiError as exc:
        reply = Reply(exc.status, exc.body)
    return None if decision.drop_after else reply
