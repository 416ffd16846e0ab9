"""The Logikura sandbox HTTP server: the OAuth host's pages (``/oauth/authorize``,
``/oauth/token``), the API (``/api/v1/…``) and the ``/_sandbox/`` control API on one loopback
port (the loop, keep-alive and clean stop are :class:`hooks.sandbox.SandboxServer`).

``SandboxServer(config).start()`` serves in a background thread (tests, demo);
``serve_forever(config)`` blocks (``nebridge sandbox serve --logikura``).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from urllib.parse import SplitResult, parse_qs, parse_qsl

from hooks.sandbox.server import (
    JSON_TYPE,
    SandboxHandler,
    StatePart,
    run_until_signal,
    with_query,
)
from hooks.sandbox.server import SandboxServer as KitServer
from plugins.wms_logikura.sandbox.api import Reply, handle_api, handle_token
from plugins.wms_logikura.sandbox.clock import Clock
from plugins.wms_logikura.sandbox.config import SandboxConfig
from plugins.wms_logikura.sandbox.control import ControlApi
from plugins.wms_logikura.sandbox.errors import ApiError
from plugins.wms_logikura.sandbox.faults import Faults
from plugins.wms_logikura.sandbox.ledger import Ledger
from plugins.wms_logikura.sandbox.state import SandboxState

__all__ = ["SandboxServer", "serve_forever"]

AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"


def _send_reply(request: SandboxHandler, reply: Reply | None) -> None:
    """Answer a Logikura reply; ``None`` drops the connection (an injected fault)."""
    if reply is None:
        request.drop()
        return
    request.send(reply.status, reply.payload(), JSON_TYPE, reply.headers)


class SandboxServer(KitServer[SandboxState]):
    """A running (or ready-to-run) Logikura sandbox: state, faults, control API, HTTP server."""

    LABEL = "Logikura sandbox"
    SERVER_VERSION = "LogikuraSandbox/1.0"
    THREAD_NAME = "logikura-sandbox"

    config = StatePart[SandboxConfig]("config", "The configuration it runs with.")
    faults = StatePart[Faults]("faults", "Fault injection: HTTP statuses, stalls, late writes.")
    ledger = StatePart[Ledger]("ledger", "The append-only change ledger.")
    clock = StatePart[Clock]("clock", "The sandbox clock (ISO 8601 times).")

    def __init__(self, config: SandboxConfig | None = None) -> None:
        state = SandboxState(config if config is not None else SandboxConfig())
        super().__init__(state, ControlApi(state))

    def answer(self, request: SandboxHandler, method: str, split: SplitResult, body: bytes) -> None:
        """The permission page, the token endpoint and the ``/api/`` routes."""
        if split.path == AUTHORIZE_PATH:
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            if method == "POST":
                query.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            self._authorize(request, method, query)
        elif split.path == TOKEN_PATH and method == "POST":
            params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            _send_reply(request, handle_token(self.state, params, self.sleep))
        elif split.path.startswith("/api/"):
            reply = handle_api(
                self.state,
                method,
                split.path,
                parse_qs(split.query),
                body,
                {"Authorization": request.headers.get("Authorization", "")},
                self.sleep,
            )
            _send_reply(request, reply)
        else:
            _send_reply(request, Reply(404, {"error": "Not Found"}))

    # ---------------------------------------------------------------- OAuth pages
    def _authorize(self, request: SandboxHandler, method: str, query: dict[str, str]) -> None:
        """Logikura's permission page: approve (or ``auto=1``) redirects with ``code`` and
        ``state``; deny redirects with ``error=access_denied``."""
        state = self.state
        redirect_uri = query.get("redirect_uri", "")
        try:
            state.check_client(query.get("client_id", ""), redirect_uri)
        except ApiError as exc:
            request.send_page(
                exc.status,
                "エラー",
                f"<p>{html.escape(str(exc.body.get('error_description')))}</p>",
            )
            return
        echo = {"state": query["state"]} if "state" in query else {}
        if query.get("response_type") != "code":
            location = with_query(redirect_uri, {"error": "unsupported_response_type", **echo})
            request.redirect(location)
            return
        decision = query.get("decision", "approve")
        if method == "POST" or query.get("auto") == "1":
            if decision == "deny":
                location = with_query(redirect_uri, {"error": "access_denied", **echo})
            else:
                try:
                    code = state.issue_code(redirect_uri, query.get("scope"), source="user")
                except ApiError as exc:
                    location = with_query(redirect_uri, {"error": str(exc.body["error"]), **echo})
                else:
                    location = with_query(redirect_uri, {"code": code, **echo})
            request.redirect(location)
            return
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in query.items()
            if k in ("client_id", "redirect_uri", "scope", "state", "response_type")
        )
        form = (
            f"<p>アプリケーションがロジクラのデータの読み取り・作成・更新"
            f"({html.escape(query.get('scope') or 'read write')})を求めています。</p>"
            f'<form method="post" action="{AUTHORIZE_PATH}">{hidden}'
            f'<button name="decision" value="approve">許可する</button>'
            f'<button name="decision" value="deny">拒否する</button></form>'
        )
        request.send_page(200, "ロジクラ サンドボックス アクセス許可", form)


def serve_forever(
    config: SandboxConfig | None = None, on_ready: Callable[[SandboxServer], None] | None = None
) -> None:
    """Run a sandbox in the foreground until Ctrl-C or SIGTERM; ``on_ready(server)`` runs
    once the port is bound."""
    run_until_signal(SandboxServer(config), on_ready)
