"""The NE API endpoints of the sandbox and the per-call pipeline around them.

Pipeline of one call (order matters and is documented in ``docs/sandbox.md``): count it →
draw faults → latency → maybe drop before applying → an injected ``999999`` (no tokens) →
token check (may rotate the pair) → other injected codes (tokens echoed) → the endpoint →
maybe drop after applying. Every answer is HTTP 200 JSON with string scalars.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from daemon.sandbox.clock import format_ne
from daemon.sandbox.errors import INJECTABLE_CODES, NEError
from daemon.sandbox.fields import (
    BASE_SCHEMA,
    CANCEL_TYPES,
    GOODS_SCHEMA,
    OPTION_SCHEMA,
    ORDER_STATUS,
    QUE_SCHEMA,
    ROW_SCHEMA,
    STOCK_SCHEMA,
    TAG_SCHEMA,
    Schema,
)
from daemon.sandbox.model import TokenPair
from daemon.sandbox.payloads import (
    decode_data,
    parse_bulk_receipted,
    parse_bulk_update,
    parse_goods_csv,
    parse_update,
)
from daemon.sandbox.search import count_query, parse_query, project, run_query
from daemon.sandbox.state import SandboxState
from daemon.sandbox.traffic import TokenUse

logger = logging.getLogger(__name__)

AuthKind = Literal["token", "neauth", "app"]


@dataclass(frozen=True)
class ApiRequest:
    """One decoded API call: text params, raw bytes (for ``data``), call number, race flag."""

    path: str
    params: dict[str, str]
    raw: dict[str, bytes]
    call_no: int
    human_race: bool = False


Handler = Callable[[SandboxState, ApiRequest], dict[str, Any]]
Candidates = Callable[[SandboxState, Any], Iterable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """An API path: its handler, how it authenticates and whether it writes orders."""

    handler: Handler
    auth: AuthKind = "token"
    write: bool = False


def token_fields(pair: TokenPair) -> dict[str, str]:
    """The four token fields NE echoes on every answer."""
    return {
        "access_token": pair.access_token,
        "access_token_end_date": format_ne(pair.access_end),
        "refresh_token": pair.refresh_token,
        "refresh_token_end_date": format_ne(pair.refresh_end),
    }


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise NEError("param_missing", name)
    return value


def _race(state: SandboxState, req: ApiRequest, order_id: str) -> None:
    """Let a simulated human edit ``order_id`` just before this call applies."""
    if req.human_race:
        with contextlib.suppress(NEError, ValueError):
            state.human_edit(int(order_id), call_no=req.call_no)


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "").strip() == "1"


# ---------------------------------------------------------------- search / count
def _search(schema: Schema, candidates: Candidates) -> Handler:
    def handler(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
        query = parse_query(req.params, schema, state.search_options, with_fields=True)
        records = run_query(candidates(state, query), query, shuffle=state.shuffle_rng)
        return {"count": str(len(records)), "data": project(records, query.fields)}

    return handler


def _count(schema: Schema, candidates: Candidates) -> Handler:
    def handler(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
        query = parse_query(req.params, schema, state.search_options, with_fields=False)
        return {"count": str(count_query(candidates(state, query), query))}

    return handler


def _orders(state: SandboxState, query: Any) -> Iterable[Any]:
    return state.order_candidates(query)


def _rows(state: SandboxState, query: Any) -> Iterable[Any]:
    return state.row_candidates(query)


def _options(state: SandboxState, query: Any) -> Iterable[Any]:
    return state.order_candidates(query, "receive_order_option_receive_order_id")


def _goods(state: SandboxState, query: Any) -> Iterable[Any]:
    return list(state.goods.values())


def _ques(state: SandboxState, query: Any) -> Iterable[Any]:
    return list(state.ques.values())


def _tags(state: SandboxState, query: Any) -> Iterable[Any]:
    return list(state.tags)


# ---------------------------------------------------------------- login / info
def _neauth(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    p = req.params
    pair = state.exchange_login(
        p.get("uid", ""),
        p.get("state", ""),
        p.get("client_id", ""),
        p.get("client_secret", ""),
        call_no=req.call_no,
    )
    body: dict[str, Any] = dict(token_fields(pair))
    for key in ("company_app_header", "company_ne_id", "company_name", "company_kana"):
        body[key] = state.company[key]
    for key in ("uid", "pic_ne_id", "pic_name", "pic_kana", "pic_mail_address"):
        body[key] = state.user[key]
    return body


def _user_info(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    return {"count": "1", "data": [dict(state.user)]}


def _company_info(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    row: dict[str, str | None] = {
        key: state.company[key]
        for key in ("company_id", "company_ne_id", "company_name", "company_kana")
    }
    row["company_host"] = state.base_url or None
    return {"count": "1", "data": [row]}


def _app_company(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    row = {
        key: state.company[key]
        for key in ("company_id", "company_ne_id", "company_name", "company_kana")
    }
    return {"count": "1", "data": [row]}


def _cancel_types(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    data = [
        {"cancel_type_id": str(cid), "cancel_type_name": name, "cancel_type_deleted_flag": flag}
        for cid, (name, flag) in CANCEL_TYPES.items()
    ]
    return {"count": str(len(data)), "data": data}


def _order_statuses(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    data = [
        {"order_status_id": str(sid), "order_status_name": name}
        for sid, name in ORDER_STATUS.items()
    ]
    return {"count": str(len(data)), "data": data}


# ---------------------------------------------------------------- order writes
def _update(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    p = req.params
    order_id = _required(p, "receive_order_id")
    changes = parse_update(decode_data(req.raw.get("data"), p.get("data_type"), ("xml", "gz")))
    _race(state, req, order_id)
    state.update_order(
        order_id,
        p.get("receive_order_last_modified_date"),
        changes,
        shipped_update_flag=_flag(p, "receive_order_shipped_update_flag"),
        row_cancel_update_flag=_flag(p, "receive_order_row_cancel_update_flag"),
        call_no=req.call_no,
    )
    return {}


def _per_order_error(state: SandboxState, order_id: str, error: NEError) -> dict[str, str]:
    code, message = state.codes.lookup(error.key)
    if error.detail:
        message = f"{message} ({error.detail})"
    return {"receive_order_id": order_id, "code": code, "message": message}


def _bulk_update(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    p = req.params
    items = parse_bulk_update(decode_data(req.raw.get("data"), p.get("data_type"), ("xml", "gz")))
    if len(items) > state.config.bulk_max_orders:
        raise NEError("bulk_too_many", f"{len(items)} > {state.config.bulk_max_orders}")
    if items:
        _race(state, req, items[0].order_id)
    errors = []
    for item in items:
        try:
            state.update_order(
                item.order_id,
                item.last_modified,
                item.changes,
                shipped_update_flag=_flag(p, "receive_order_shipped_update_flag"),
                row_cancel_update_flag=_flag(p, "receive_order_row_cancel_update_flag"),
                call_no=req.call_no,
            )
        except NEError as exc:
            errors.append(_per_order_error(state, item.order_id, exc))
    if errors:
        raise NEError("bulk_partial", message=errors)
    return {"message": ""}


def _shipped(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    order_id = _required(req.params, "receive_order_id")
    _race(state, req, order_id)
    state.ship_order(
        order_id, req.params.get("receive_order_last_modified_date"), call_no=req.call_no
    )
    return {}


def _receipted(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    order_id = _required(req.params, "receive_order_id")
    _race(state, req, order_id)
    state.receipt_order(
        order_id,
        req.params.get("receive_order_last_modified_date"),
        label_print_flag=req.params.get("receive_order_label_print_flag"),
        call_no=req.call_no,
    )
    return {}


def _bulk_receipted(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    p = req.params
    items = parse_bulk_receipted(
        decode_data(req.raw.get("data"), p.get("data_type"), ("xml", "gz"))
    )
    if len(items) > state.config.bulk_max_orders:
        raise NEError("bulk_too_many", f"{len(items)} > {state.config.bulk_max_orders}")
    if items:
        _race(state, req, items[0].order_id)
    errors = []
    for item in items:
        try:
            state.receipt_order(
                item.order_id,
                item.last_modified,
                label_print_flag=item.changes.base.get("receive_order_label_print_flag"),
                call_no=req.call_no,
            )
        except NEError as exc:
            errors.append(_per_order_error(state, item.order_id, exc))
    if errors:
        raise NEError("bulk_partial", message=errors)
    return {"message": ""}


def _labelprinted(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    order_id = _required(req.params, "receive_order_id")
    _race(state, req, order_id)
    state.label_print_order(
        order_id,
        req.params.get("receive_order_last_modified_date"),
        req.params.get("receive_order_label_print_flag"),
        call_no=req.call_no,
    )
    return {}


def _goods_upload(state: SandboxState, req: ApiRequest) -> dict[str, Any]:
    data = decode_data(req.raw.get("data"), req.params.get("data_type"), ("csv", "gz"))
    que_id = state.queue_goods_upload(parse_goods_csv(data), call_no=req.call_no)
    return {"que_id": str(que_id)}


_BASE = "/api_v1_receiveorder_base"
ENDPOINTS: dict[str, Endpoint] = {
    "/api_neauth": Endpoint(_neauth, auth="neauth"),
    "/api_neauth/": Endpoint(_neauth, auth="neauth"),
    "/api_app/company": Endpoint(_app_company, auth="app"),
    "/api_v1_login_user/info": Endpoint(_user_info),
    "/api_v1_login_company/info": Endpoint(_company_info),
    f"{_BASE}/search": Endpoint(_search(BASE_SCHEMA, _orders)),
    f"{_BASE}/count": Endpoint(_count(BASE_SCHEMA, _orders)),
    f"{_BASE}/update": Endpoint(_update, write=True),
    f"{_BASE}/bulkupdate": Endpoint(_bulk_update, write=True),
    f"{_BASE}/shipped": Endpoint(_shipped, write=True),
    f"{_BASE}/receipted": Endpoint(_receipted, write=True),
    f"{_BASE}/bulkupdatereceipted": Endpoint(_bulk_receipted, write=True),
    f"{_BASE}/labelprinted": Endpoint(_labelprinted, write=True),
    "/api_v1_receiveorder_row/search": Endpoint(_search(ROW_SCHEMA, _rows)),
    "/api_v1_receiveorder_row/count": Endpoint(_count(ROW_SCHEMA, _rows)),
    "/api_v1_receiveorder_option/search": Endpoint(_search(OPTION_SCHEMA, _options)),
    "/api_v1_receiveorder_groupingtag/search": Endpoint(_search(TAG_SCHEMA, _tags)),
    "/api_v1_master_goods/search": Endpoint(_search(GOODS_SCHEMA, _goods)),
    "/api_v1_master_goods/count": Endpoint(_count(GOODS_SCHEMA, _goods)),
    "/api_v1_master_goods/upload": Endpoint(_goods_upload),
    "/api_v1_master_stock/search": Endpoint(_search(STOCK_SCHEMA, _goods)),
    "/api_v1_master_stock/count": Endpoint(_count(STOCK_SCHEMA, _goods)),
    "/api_v1_system_que/search": Endpoint(_search(QUE_SCHEMA, _ques)),
    "/api_v1_system_que/count": Endpoint(_count(QUE_SCHEMA, _ques)),
    "/api_v1_system_canceltype/info": Endpoint(_cancel_types),
    "/api_v1_system_orderstatus/info": Endpoint(_order_statuses),
}


def _run(
    state: SandboxState,
    endpoint: Endpoint | None,
    req: ApiRequest,
    code: str | None,
    expire_token: bool,
) -> dict[str, Any]:
    """Authenticate, apply injected errors, run the endpoint; always returns an envelope."""
    params = req.params
    tokens: TokenPair | None = None
    try:
        if endpoint is None:
            if params.get("access_token"):
                with contextlib.suppress(NEError):
                    tokens = state.authenticate(
                        params.get("access_token"),
                        params.get("refresh_token"),
                        call_no=req.call_no,
                        path=req.path,
                    )
            raise NEError("path_not_found", req.path)
        if code == "999999":
            raise NEError("system_error", tokens=False)
        if endpoint.auth == "token":
            tokens = state.authenticate(
                params.get("access_token"),
                params.get("refresh_token"),
                call_no=req.call_no,
                path=req.path,
                force_expire=expire_token,
            )
        elif endpoint.auth == "app":
            state.check_app(params.get("client_id"), params.get("client_secret"))
        if code is not None:
            raise NEError(INJECTABLE_CODES[code])
        body: dict[str, Any] = {"result": "success"}
        body.update(endpoint.handler(state, req))
    except NEError as exc:
        body = exc.body(state.codes)
        if not exc.tokens:
            return body
    if tokens is not None:
        body.update(token_fields(tokens))
    return body


def handle_api_call(
    state: SandboxState,
    path: str,
    params: dict[str, str],
    raw: dict[str, bytes],
    sleep: Callable[[float], None],
) -> bytes | None:
    """Run one API call through the fault pipeline; ``None`` means "drop the connection"."""
    endpoint = ENDPOINTS.get(path)
    company = state.company_id
    call_no = state.traffic.begin(company, path)
    try:
        token_call = endpoint is not None and endpoint.auth == "token"
        decision = state.faults.decide(
            path, token_call=token_call, write=endpoint is not None and endpoint.write
        )
        if decision.latency_s > 0:
            sleep(decision.latency_s)
        if decision.drop_before:
            if token_call:
                with state.lock:
                    pair, verdict = state.classify_tokens(params.get("access_token"))
                state.traffic.record_token_use(
                    TokenUse(call_no, path, None if pair is None else pair.pair_id, verdict)
                )
            return None
        code = decision.error_code
        if code == "003002" and params.get("wait_flag", "").strip() == "1":
            sleep(state.faults.overload_wait_s())
            code = None
        req = ApiRequest(path, params, raw, call_no, decision.human_race)
        try:
            with state.lock:
                state.process_ques()
                body = _run(state, endpoint, req, code, decision.expire_token and token_call)
        except Exception:  # a sandbox bug must look like NE's system error, not a dropped line
            logger.exception("sandbox failed on %s (call %d)", path, call_no)
            body = NEError("system_error").body(state.codes)
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return None if decision.drop_after else payload
    finally:
        state.traffic.end(company)


def not_found_body(state: SandboxState, path: str) -> bytes:
    """The ``000001`` answer for a non-POST request to an API path."""
    body = NEError("path_not_found", path).body(state.codes)
    return json.dumps(body, ensure_ascii=False).encode("utf-8")
