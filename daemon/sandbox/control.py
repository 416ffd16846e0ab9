"""The sandbox's own control API under ``/_sandbox/`` (JSON in, JSON out, real HTTP codes).

It is not part of NE: tests, the demo and plugin authors use it to steer the sandbox from
another process (faults, clock, logins, human edits) and to inspect it (ledger, orders,
goods, queue rows, traffic). Control calls are never counted, delayed or faulted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from daemon.sandbox.api import token_fields
from daemon.sandbox.clock import parse_ne
from daemon.sandbox.errors import NEError
from daemon.sandbox.state import RowSpec, SandboxState

logger = logging.getLogger(__name__)

PREFIX = "/_sandbox"
Reply = tuple[int, Any]

ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/_sandbox/", "this list"),
    ("GET", "/_sandbox/config", "the running configuration"),
    ("GET", "/_sandbox/faults", "fault settings and pending schedules"),
    ("POST", "/_sandbox/faults", "change fault settings (FaultConfig fields)"),
    ("POST", "/_sandbox/faults/reset", "all faults off, schedules cleared"),
    ("POST", "/_sandbox/faults/fail_next", "{code, count=1, path=null}"),
    ("POST", "/_sandbox/faults/drop_next", "{when: before|after, count=1, path=null}"),
    ("POST", "/_sandbox/faults/human_edit_next", "{count=1, path=null}"),
    ("POST", "/_sandbox/faults/fail_next_ques", "{count=1}"),
    ("GET", "/_sandbox/clock", "{now}"),
    ("POST", "/_sandbox/clock", "{advance_seconds} or {set: 'YYYY-MM-DD HH:MM:SS'}"),
    ("POST", "/_sandbox/login", "simulate a sign-in: {uid, state}"),
    ("GET", "/_sandbox/tokens", "the current token pair (or null)"),
    ("POST", "/_sandbox/tokens", "issue a new pair without signing in"),
    ("POST", "/_sandbox/tokens/expire", "expire the current access token now"),
    ("GET", "/_sandbox/ledger", "?since=&kind=&order_id=&goods_code="),
    ("POST", "/_sandbox/human_edit",
     "{receive_order_id, fields={}, rows={}, delete=false}: a person edits, cancels or "
     "deletes an order"),
    ("POST", "/_sandbox/human_edit/stock",
     "{goods_id, quantity}: a person overwrites a goods' stock (クイック棚卸)"),
    ("GET", "/_sandbox/state/orders/<id>", "one order with rows and options"),
    ("POST", "/_sandbox/state/orders", "create an order {rows: [[code, qty]], status_id, ...}"),
    ("GET", "/_sandbox/state/goods/<code>", "one goods record with stock"),
    ("POST", "/_sandbox/state/goods", "create goods {code, quantity, name, fields}"),
    ("GET", "/_sandbox/state/ques/<id>", "one upload queue row with its row errors"),
    ("GET", "/_sandbox/stats", "calls, in-flight maxima per company, token verdicts"),
    ("GET", "/_sandbox/token_uses", "which pair every API call sent"),
)


class ControlError(Exception):
    """A control request the sandbox refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ControlError(400, f"{name} must be an integer") from None


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


class ControlApi:
    """Routes ``/_sandbox/...`` requests to the state and its faults."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._routes: dict[tuple[str, str], Callable[[dict[str, Any], dict[str, list[str]]],
                                                        Any]] = {
            ("GET", "/"): lambda b, q: [
                {"method": m, "path": p, "what": w} for m, p, w in ROUTES
            ],
            ("GET", "/config"): lambda b, q: self._config(),
            ("GET", "/faults"): lambda b, q: self.state.faults.snapshot(),
            ("POST", "/faults"): self._faults_update,
            ("POST", "/faults/reset"): self._faults_reset,
            ("POST", "/faults/fail_next"): self._fail_next,
            ("POST", "/faults/drop_next"): self._drop_next,
            ("POST", "/faults/human_edit_next"): self._human_edit_next,
            ("POST", "/faults/fail_next_ques"): self._fail_next_ques,
            ("GET", "/clock"): lambda b, q: {"now": self.state.now()},
            ("POST", "/clock"): self._clock,
            ("POST", "/login"): self._login,
            ("GET", "/tokens"): self._tokens,
            ("POST", "/tokens"): self._issue_tokens,
            ("POST", "/tokens/expire"): self._expire_tokens,
            ("GET", "/ledger"): self._ledger,
            ("POST", "/human_edit"): self._human_edit,
            ("POST", "/human_edit/stock"): self._human_stock_edit,
            ("POST", "/state/orders"): self._create_order,
            ("POST", "/state/goods"): self._create_goods,
            ("GET", "/stats"): lambda b, q: self._stats(),
            ("GET", "/token_uses"): lambda b, q: self.state.traffic.token_uses_json(),
        }

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Reply:
        """Answer one control request with ``(http_status, json_data)``."""
        sub = path[len(PREFIX):] or "/"
        self.state.process_ques()
        try:
            data = json.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise ControlError(400, "body must be a JSON object")
            route = self._routes.get((method, sub.rstrip("/") or "/"))
            if route is not None:
                return 200, route(data, query)
            if method == "GET":
                for prefix, getter in (
                    ("/state/orders/", self._order),
                    ("/state/goods/", self._goods),
                    ("/state/ques/", self._que),
                ):
                    if sub.startswith(prefix) and len(sub) > len(prefix):
                        return 200, getter(unquote(sub[len(prefix):]))
            raise ControlError(404, f"no control route {method} {path}")
        except ControlError as exc:
            return exc.status, {"error": str(exc)}
        except json.JSONDecodeError as exc:
            return 400, {"error": f"invalid JSON: {exc}"}
        except NEError as exc:
            status = 404 if exc.key == "order_not_found" else 409
            return status, {"error": str(exc), **exc.body(self.state.codes)}
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}
        except KeyError as exc:
            return 404, {"error": f"not found: {exc}"}
        except Exception as exc:  # keep the server answering; the traceback goes to the log
            logger.exception("sandbox control failed on %s %s", method, path)
            return 500, {"error": f"{type(exc).__name__}: {exc}"}

    # ---------------------------------------------------------------- handlers
    def _config(self) -> dict[str, Any]:
        data = dataclasses.asdict(self.state.config)
        data["client_secret"] = "***"
        start = self.state.config.clock_start
        data["clock_start"] = None if start is None else start.isoformat()
        return data

    def _faults_update(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        self.state.faults.update(**body)
        return self.state.faults.snapshot()

    def _faults_reset(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        self.state.faults.reset()
        return self.state.faults.snapshot()

    def _fail_next(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        self.state.faults.fail_next(str(body.get("code", "")), _int(body.get("count", 1), "count"),
                                    body.get("path"))
        return self.state.faults.snapshot()

    def _drop_next(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        self.state.faults.drop_next(_int(body.get("count", 1), "count"),
                                    body.get("when", "before"), body.get("path"))
        return self.state.faults.snapshot()

    def _human_edit_next(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        self.state.faults.human_edit_next(_int(body.get("count", 1), "count"), body.get("path"))
        return self.state.faults.snapshot()

    def _fail_next_ques(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        self.state.faults.fail_next_ques(_int(body.get("count", 1), "count"))
        return self.state.faults.snapshot()

    def _clock(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        if "advance_seconds" in body:
            self.state.clock.advance(float(body["advance_seconds"]))
        elif "set" in body:
            when = parse_ne(str(body["set"]))
            if when is None:
                raise ControlError(400, "set must be 'YYYY-MM-DD HH:MM:SS'")
            self.state.clock.set(when)
        else:
            raise ControlError(400, "give advance_seconds or set")
        return {"now": self.state.now()}

    def _login(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        uid, state = self.state.issue_login()
        return {"uid": uid, "state": state}

    def _tokens(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        pair = self.state.current_tokens()
        return None if pair is None else {"pair_id": pair.pair_id, **token_fields(pair)}

    def _issue_tokens(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        pair = self.state.issue_tokens(source="control")
        return {"pair_id": pair.pair_id, **token_fields(pair)}

    def _expire_tokens(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        self.state.expire_access_token()
        return self._tokens(body, query)

    def _ledger(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        since = _first(query, "since")
        order_id = _first(query, "order_id")
        entries = self.state.ledger.entries(
            since=_int(since, "since") if since else 0,
            kind=_first(query, "kind"),
            order_id=_int(order_id, "order_id") if order_id else None,
            goods_code=_first(query, "goods_code"),
        )
        return [e.as_dict() for e in entries]

    def _human_edit(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        order_id = _int(body.get("receive_order_id"), "receive_order_id")
        fields = body.get("fields") or {}
        if not isinstance(fields, dict):
            raise ControlError(400, "fields must be an object")
        rows = body.get("rows") or {}
        if not isinstance(rows, dict) or not all(isinstance(v, dict) for v in rows.values()):
            raise ControlError(400, "rows must be an object: row number -> {field: value}")
        stamp = self.state.human_edit(
            order_id, {str(k): None if v is None else str(v) for k, v in fields.items()},
            rows={_int(no, "row number"): {str(k): None if v is None else str(v)
                                           for k, v in values.items()}
                  for no, values in rows.items()},
            delete=bool(body.get("delete", False)),
        )
        return {"receive_order_id": str(order_id), "receive_order_last_modified_date": stamp}

    def _human_stock_edit(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        try:
            return self.state.human_stock_edit(str(body.get("goods_id", "")),
                                               _int(body.get("quantity"), "quantity"))
        except ValueError as exc:
            raise ControlError(400, str(exc)) from exc

    def _create_order(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        rows: list[RowSpec] = []
        for item in body.get("rows") or []:
            if isinstance(item, dict):
                rows.append(RowSpec(str(item["goods_id"]), _int(item["quantity"], "quantity"),
                                    _int(item.get("unit_price", 1000), "unit_price"),
                                    _int(item.get("cancel_flag", 0), "cancel_flag"),
                                    item.get("goods_name")))
            else:
                rows.append(RowSpec(str(item[0]), _int(item[1], "quantity")))
        order_id = self.state.create_order(
            rows,
            shop_id=_int(body.get("shop_id", 1), "shop_id"),
            status_id=_int(body.get("status_id", 20), "status_id"),
            cancel_type_id=_int(body.get("cancel_type_id", 0), "cancel_type_id"),
            tag=body.get("tag"),
            instruct_date=body.get("instruct_date"),
            fields=body.get("fields"),
            option=body.get("option"),
            source="control",
        )
        return self.state.order_snapshot(order_id)

    def _create_goods(self, body: dict[str, Any], query: dict[str, list[str]]) -> Any:
        return self.state.create_goods(
            str(body.get("code", "")), _int(body.get("quantity", 0), "quantity"),
            name=body.get("name"), fields=body.get("fields"), source="control",
        )

    def _order(self, key: str) -> Any:
        return self.state.order_snapshot(_int(key, "receive_order_id"))

    def _goods(self, key: str) -> Any:
        return self.state.goods_snapshot(key)

    def _que(self, key: str) -> Any:
        return self.state.que_snapshot(_int(key, "que_id"))

    def _stats(self) -> dict[str, Any]:
        data = self.state.traffic.snapshot()
        data["ledger_entries"] = len(self.state.ledger)
        data["orders"] = len(self.state.orders)
        data["goods"] = len(self.state.goods)
        data["ques"] = len(self.state.ques)
        return data
