"""The sandbox HTTP server: NE's login pages, the NE API and the ``/_sandbox/`` control API
on one port (the loop, keep-alive and clean stop are :class:`hooks.sandbox.SandboxServer`).

``SandboxServer(config).start()`` serves in a background thread (tests, demo);
``serve_forever(config)`` blocks (``nebridge sandbox serve``).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from urllib.parse import SplitResult, parse_qsl

from daemon.sandbox.api import handle_api_call, not_found_body
from daemon.sandbox.clock import Clock
from daemon.sandbox.config import SandboxConfig
from daemon.sandbox.control import ControlApi
from daemon.sandbox.faults import Faults
from daemon.sandbox.ledger import Ledger
from daemon.sandbox.state import SandboxState
from hooks.sandbox.server import (
    JSON_TYPE,
    SandboxHandler,
    StatePart,
    run_until_signal,
    with_query,
)
from hooks.sandbox.server import SandboxServer as KitServer

__all__ = ["SandboxServer", "decode_form", "serve_forever"]

SIGN_IN_PATHS = ("/users/sign_in/", "/users/sign_in")


def decode_form(body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """Decode an ``application/x-www-form-urlencoded`` body into text and raw-byte values.

    Raw bytes are kept because ``data`` may hold gzip or Shift_JIS bytes (gaps §5.1).
    """
    params: dict[str, str] = {}
    raw: dict[str, bytes] = {}
    text = body.decode("latin-1")
    for key, value in parse_qsl(text, keep_blank_values=True, encoding="latin-1"):
        name = key.encode("latin-1").decode("utf-8", errors="replace")
        data = value.encode("latin-1")
        raw[name] = data
        params[name] = data.decode("utf-8", errors="replace")
    return params, raw


class SandboxServer(KitServer[SandboxState]):
    """A running (or ready-to-run) NE sandbox: state, faults, control API, HTTP server."""

    LABEL = "sandbox server"
    SERVER_VERSION = "NextEngineSandbox/1.0"
    THREAD_NAME = "ne-sandbox"
    METHODS = ("GET", "POST")
    MAX_BODY = 64 * 1024 * 1024

    config = StatePart[SandboxConfig]("config", "The configuration it runs with.")
    faults = StatePart[Faults]("faults", "Fault injection: NE codes, human edits, failed uploads.")
    ledger = StatePart[Ledger]("ledger", "The append-only change ledger.")
    clock = StatePart[Clock]("clock", "The sandbox clock (NE date strings).")

    def __init__(self, config: SandboxConfig | None = None) -> None:
        state = SandboxState(config if config is not None else SandboxConfig())
        super().__init__(state, ControlApi(state))

    def answer(self, request: SandboxHandler, method: str, split: SplitResult, body: bytes) -> None:
        """Sign-in pages on GET/POST ``/users/sign_in``; every other POST is an API call."""
        if split.path in SIGN_IN_PATHS:
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            if method == "POST":
                query.update(decode_form(body)[0])
            self._sign_in(request, method, query)
        elif method == "POST":
            params, raw = decode_form(body)
            payload = handle_api_call(self.state, split.path, params, raw, self.sleep)
            if payload is None:
                request.drop()
                return
            request.send(200, payload, JSON_TYPE)
        else:
            request.send(200, not_found_body(self.state, split.path), JSON_TYPE)

    def _sign_in(self, request: SandboxHandler, method: str, query: dict[str, str]) -> None:
        """NE's login screen: a button (or ``auto=1``) that redirects with uid and state."""
        state = self.state
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri") or state.config.redirect_uri
        if client_id != state.config.client_id:
            request.send_page(400, "エラー", "<p>client_idが正しくありません。</p>")
            return
        if not redirect_uri:
            request.send_page(400, "エラー", "<p>redirect_uriが指定されていません。</p>")
            return
        if method == "POST" or query.get("auto") == "1":
            uid, login_state = state.issue_login()
            request.redirect(with_query(redirect_uri, {"uid": uid, "state": login_state}))
            return
        user = state.user
        form = (
            f"<p>{html.escape(state.company['company_name'])} / "
            f"{html.escape(user['pic_name'])} としてアプリを起動します。</p>"
            f'<form method="post" action="/users/sign_in/">'
            f'<input type="hidden" name="client_id" value="{html.escape(client_id)}">'
            f'<input type="hidden" name="redirect_uri" value="{html.escape(redirect_uri)}">'
            f'<button type="submit">ログイン</button></form>'
        )
        request.send_page(200, "ネクストエンジン サンドボックス ログイン", form)


def serve_forever(
    config: SandboxConfig | None = None,
    on_ready: Callable[[SandboxServer], None] | None = None,
) -> None:
    """Run a sandbox in the foreground until Ctrl-C or SIGTERM.

    ``on_ready(server)`` is called once the port is bound (e.g. to print ``server.base_url``).
    """
    run_until_signal(SandboxServer(config), on_ready)
