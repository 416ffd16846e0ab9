"""The sandbox's own control API under ``/_sandbox/`` (JSON in, JSON out, real HTTP codes).

It is not part of NE: tests, the demo and plugin authors use it to steer the sandbox from
another process (faults, clock, logins, human edits) and to inspect it (ledger, orders,
goods, queue rows, traffic). Control calls are never counted, delayed or faulted.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from daemon.sandbox.api import token_fields
from daemon.sandbox.errors import NEError
from daemon.sandbox.state import RowSpec, SandboxState
from hooks.sandbox import control as kit

__all__ = ["ROUTES", "ControlApi"]

ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/_sandbox/", "this list"),
    *kit.SHARED_ROUTES,
    ("POST", "/_sandbox/faults/fail_next", "{code, count=1, path=null}"),
    ("POST", "/_sandbox/faults/human_edit_next", "{count=1, path=null}"),
    ("POST", "/_sandbox/faults/fail_next_ques", "{count=1}"),
    ("POST", "/_sandbox/clock", "{advance_seconds} or {set: 'YYYY-MM-DD HH:MM:SS'}"),
    ("POST", "/_sandbox/login", "simulate a sign-in: {uid, state}"),
    ("GET", "/_sandbox/tokens", "the current token pair (or null)"),
    ("POST", "/_sandbox/tokens", "issue a new pair without signing in"),
    ("POST", "/_sandbox/tokens/expire", "expire the current access token now"),
    ("GET", "/_sandbox/ledger", "?since=&kind=&order_id=&goods_code="),
    (
        "POST",
        "/_sandbox/human_edit",
        "{receive_order_id, fields={}, rows={}, delete=false}: a person edits, cancels or "
        "deletes an order",
    ),
    (
        "POST",
        "/_sandbox/human_edit/stock",
        "{goods_id, quantity}: a person overwrites a goods' stock (クイック棚卸)",
    ),
    ("GET", "/_sandbox/state/orders/<id>", "one order with rows and options"),
    ("POST", "/_sandbox/state/orders", "create an order {rows: [[code, qty]], status_id, ...}"),
    ("GET", "/_sandbox/state/goods/<code>", "one goods record with stock"),
    ("POST", "/_sandbox/state/goods", "create goods {code, quantity, name, fields}"),
    ("GET", "/_sandbox/state/ques/<id>", "one upload queue row with its row errors"),
    ("GET", "/_sandbox/stats", "calls, in-flight maxima per company, token verdicts"),
    ("GET", "/_sandbox/token_uses", "which pair every API call sent"),
)


class ControlApi(kit.ControlApi):
    """Routes ``/_sandbox/...`` requests to the state and its faults."""

    def __init__(self, state: SandboxState) -> None:
        super().__init__(state.config, state.clock, state.faults, "sandbox")
        self.state = state
        faults = state.faults
        self.add(
            {
                ("GET", "/"): lambda b, q: kit.describe(ROUTES),
                ("POST", "/faults/fail_next"): lambda b, q: self.scheduled(
                    faults.fail_next, str(b.get("code", "")), kit.count(b), body=b
                ),
                ("POST", "/faults/human_edit_next"): lambda b, q: self.scheduled(
                    faults.human_edit_next, kit.count(b), body=b
                ),
                ("POST", "/faults/fail_next_ques"): self._fail_next_ques,
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
        )

    def before(self) -> None:
        """Let upload queues progress before every control request."""
        self.state.process_ques()

    def fallback(self, method: str, sub: str, path: str) -> Any:
        """``GET /state/orders/<id>``, ``/state/goods/<code>``, ``/state/ques/<id>``."""
        if method == "GET":
            for prefix, getter in (
                ("/state/orders/", self._order),
                ("/state/goods/", self._goods),
                ("/state/ques/", self._que),
            ):
                if sub.startswith(prefix) and len(sub) > len(prefix):
                    return getter(unquote(sub[len(prefix) :]))
        return super().fallback(method, sub, path)

    def refusal(self, exc: Exception) -> kit.Reply | None:
        """An NE error as 404 (unknown order) or 409, with NE's error body."""
        if not isinstance(exc, NEError):
            return None
        status = 404 if exc.key == "order_not_found" else 409
        return status, {"error": str(exc), **exc.body(self.state.codes)}

    # ---------------------------------------------------------------- handlers
    def _fail_next_ques(self, body: kit.Body, query: kit.Query) -> Any:
        self.state.faults.fail_next_ques(kit.count(body))
        return self.state.faults.snapshot()

    def _login(self, body: kit.Body, query: kit.Query) -> Any:
        uid, state = self.state.issue_login()
        return {"uid": uid, "state": state}

    def _tokens(self, body: kit.Body, query: kit.Query) -> Any:
        pair = self.state.current_tokens()
        return None if pair is None else {"pair_id": pair.pair_id, **token_fields(pair)}

    def _issue_tokens(self, body: kit.Body, query: kit.Query) -> Any:
        pair = self.state.issue_tokens(source="control")
        return {"pair_id": pair.pair_id, **token_fields(pair)}

    def _expire_tokens(self, body: kit.Body, query: kit.Query) -> Any:
        self.state.expire_access_token()
        return self._tokens(body, query)

    def _ledger(self, body: kit.Body, query: kit.Query) -> Any:
        since = kit.first(query, "since")
        order_id = kit.first(query, "order_id")
        entries = self.state.ledger.entries(
            since=kit.integer(since, "since") if since else 0,
            kind=kit.first(query, "kind"),
            order_id=kit.integer(order_id, "order_id") if order_id else None,
            goods_code=kit.first(query, "goods_code"),
        )
        return [e.as_dict() for e in entries]

    def _human_edit(self, body: kit.Body, query: kit.Query) -> Any:
        order_id = kit.integer(body.get("receive_order_id"), "receive_order_id")
        fields = body.get("fields") or {}
        if not isinstance(fields, dict):
            raise kit.ControlError(400, "fields must be an object")
        rows = body.get("rows") or {}
        if not isinstance(rows, dict) or not all(isinstance(v, dict) for v in rows.values()):
            raise kit.ControlError(400, "rows must be an object: row number -> {field: value}")
        stamp = self.state.human_edit(
            order_id,
            {str(k): None if v is None else str(v) for k, v in fields.items()},
            rows={
                kit.integer(no, "row number"): {
                    str(k): None if v is None else str(v) for k, v in values.items()
                }
                for no, values in rows.items()
            },
            delete=bool(body.get("delete", False)),
        )
        return {"receive_order_id": str(order_id), "receive_order_last_modified_date": stamp}

    def _human_stock_edit(self, body: kit.Body, query: kit.Query) -> Any:
        try:
            return self.state.human_stock_edit(
                str(body.get("goods_id", "")), kit.integer(body.get("quantity"), "quantity")
            )
        except ValueError as exc:
            raise kit.ControlError(400, str(exc)) from exc

    def _create_order(self, body: kit.Body, query: kit.Query) -> Any:
        rows: list[RowSpec] = []
        for item in body.get("rows") or []:
            if isinstance(item, dict):
                rows.append(
                    RowSpec(
                        str(item["goods_id"]),
                        kit.integer(item["quantity"], "quantity"),
                        kit.integer(item.get("unit_price", 1000), "unit_price"),
                        kit.integer(item.get("cancel_flag", 0), "cancel_flag"),
                        item.get("goods_name"),
                    )
                )
            else:
                rows.append(RowSpec(str(item[0]), kit.integer(item[1], "quantity")))
        order_id = self.state.create_order(
            rows,
            shop_id=kit.integer(body.get("shop_id", 1), "shop_id"),
            status_id=kit.integer(body.get("status_id", 20), "status_id"),
            cancel_type_id=kit.integer(body.get("cancel_type_id", 0), "cancel_type_id"),
            tag=body.get("tag"),
            instruct_date=body.get("instruct_date"),
            fields=body.get("fields"),
            option=body.get("option"),
            source="control",
        )
        return self.state.order_snapshot(order_id)

    def _create_goods(self, body: kit.Body, query: kit.Query) -> Any:
        return self.state.create_goods(
            str(body.get("code", "")),
            kit.integer(body.get("quantity", 0), "quantity"),
            name=body.get("name"),
            fields=body.get("fields"),
            source="control",
        )

    def _order(self, key: str) -> Any:
        return self.state.order_snapshot(kit.integer(key, "receive_order_id"))

    def _goods(self, key: str) -> Any:
        return self.state.goods_snapshot(key)

    def _que(self, key: str) -> Any:
        return self.state.que_snapshot(kit.integer(key, "que_id"))

    def _stats(self) -> dict[str, Any]:
        data = self.state.traffic.snapshot()
        data["ledger_entries"] = len(self.state.ledger)
        data["orders"] = len(self.state.orders)
        data["goods"] = len(self.state.goods)
        data["ques"] = len(self.state.ques)
        return data
