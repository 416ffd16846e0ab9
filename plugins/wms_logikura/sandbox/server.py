"""The Logikura sandbox HTTP server: the OAuth host's pages (``/oauth/authorize``,
``/oauth/token``), the API (``/api/v1/…``) and the ``/_sandbox/`` control API on one loopback
port (stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive).

``SandboxServer(config).start()`` serves in a background thread (tests, demo);
``serve_forever(config)`` blocks (``nebridge sandbox serve --logikura``).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from plugins.wms_logikura.sandbox.api import Reply, handle_api, handle_token
from plugins.wms_logikura.sandbox.clock import Clock
from plugins.wms_logikura.sandbox.config import SandboxConfig
from plugins.wms_logikura.sandbox.control import PREFIX, ControlApi
from plugins.wms_logikura.sandbox.faults import Faults
from plugins.wms_logikura.sandbox.ledger import Ledger
from plugins.wms_logikura.sandbox.state import ApiError, SandboxState

logger = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"
_PAGE = """<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def _with_query(uri: str, extra: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = parts.query + ("&" if parts.query else "") + urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that joins its threads and can cut idle keep-alive connections."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SandboxServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (killed, timed out) is normal here; anything else is
        logged."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return
        logger.exception("Logikura sandbox failed answering %s", client_address)

    def close_connections(self) -> None:
        """Shut down every open client connection so handler threads can finish."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LogikuraSandbox/1.0"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        return  # request lines carry codes and states: never log them

    # ---------------------------------------------------------------- plumbing
    def _send(self, status: int, payload: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.server.app.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def _send_reply(self, reply: Reply | None) -> None:
        if reply is None:
            self.close_connection = True
            return
        self._send(reply.status, reply.payload(), "application/json; charset=utf-8",
                   reply.headers)

    def _send_page(self, status: int, title: str, body: str) -> None:
        page = _PAGE.format(title=html.escape(title), body=body).encode("utf-8")
        self._send(status, page, "text/html; charset=utf-8")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._send(413, b"", "text/plain")
            return
        body = self.rfile.read(length) if length > 0 else b""
        if split.path == PREFIX or split.path.startswith(PREFIX + "/"):
            status, data = app.control.handle(method, split.path, parse_qs(split.query), body)
            self._send(status, json.dumps(data, ensure_ascii=False).encode("utf-8"),
                       "application/json; charset=utf-8")
        elif split.path == AUTHORIZE_PATH:
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            if method == "POST":
                query.update(parse_qsl(body.decode("utf-8", "replace"),
                                       keep_blank_values=True))
            self._authorize(method, query)
        elif split.path == TOKEN_PATH and method == "POST":
            params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            self._send_reply(handle_token(app.state, params, app.sleep))
        elif split.path.startswith("/api/"):
            reply = handle_api(app.state, method, split.path, parse_qs(split.query), body,
                               {"Authorization": self.headers.get("Authorization", "")},
                               app.sleep)
            self._send_reply(reply)
        else:
            self._send_reply(Reply(404, {"error": "Not Found"}))

    # ---------------------------------------------------------------- OAuth pages
    def _authorize(self, method: str, query: dict[str, str]) -> None:
        """Logikura's permission page: approve (or ``auto=1``) redirects with ``code`` and
        ``state``; deny redirects with ``error=access_denied``."""
        state = self.server.app.state
        redirect_uri = query.get("redirect_uri", "")
        try:
            state.check_client(query.get("client_id", ""), redirect_uri)
        except ApiError as exc:
            self._send_page(exc.status, "エラー",
                            f"<p>{html.escape(str(exc.body.get('error_description')))}</p>")
            return
        echo = {"state": query["state"]} if "state" in query else {}
        if query.get("response_type") != "code":
            location = _with_query(redirect_uri, {"error": "unsupported_response_type", **echo})
            self._send(302, b"", "text/plain", {"Location": location})
            return
        decision = query.get("decision", "approve")
        if method == "POST" or query.get("auto") == "1":
            if decision == "deny":
                location = _with_query(redirect_uri, {"error": "access_denied", **echo})
            else:
                try:
                    code = state.issue_code(redirect_uri, query.get("scope"), source="user")
                except ApiError as exc:
                    location = _with_query(redirect_uri, {"error": str(exc.body["error"]),
                                                          **echo})
                else:
                    location = _with_query(redirect_uri, {"code": code, **echo})
            self._send(302, b"", "text/plain", {"Location": location})
            return
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in query.items() if k in ("client_id", "redirect_uri", "scope", "state",
                                              "response_type"))
        form = (f"<p>アプリケーションがロジクラのデータの読み取り・作成・更新"
                f"({html.escape(query.get('scope') or 'read write')})を求めています。</p>"
                f'<form method="post" action="{AUTHORIZE_PATH}">{hidden}'
                f'<button name="decision" value="approve">許可する</button>'
                f'<button name="decision" value="deny">拒否する</button></form>')
        self._send_page(200, "ロジクラ サンドボックス アクセス許可", form)


class SandboxServer:
    """A running (or ready-to-run) Logikura sandbox: state, faults, control API, HTTP server."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.state = SandboxState(self.config)
        self.control = ControlApi(self.state)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stop = threading.Event()

    @property
    def faults(self) -> Faults:
        """Fault injection settings, changeable while running."""
        return self.state.faults

    @property
    def ledger(self) -> Ledger:
        """The append-only change ledger."""
        return self.state.ledger

    @property
    def clock(self) -> Clock:
        """The sandbox clock."""
        return self.state.clock

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`bind` / :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("Logikura sandbox is not bound; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port``: both Logikura's OAuth base and API base."""
        if self._httpd is None:
            raise RuntimeError("Logikura sandbox is not bound; call start() first")
        host = str(self._httpd.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def sleep(self, seconds: float) -> None:
        """Wait (latency, stalls) but wake up early when the server stops."""
        self._stop.wait(seconds)

    def bind(self) -> None:
        """Open the listening socket (port 0 picks a free port)."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.config.host, self.config.port), self)
            self.state.base_url = self.base_url

    def start(self) -> SandboxServer:
        """Serve in a background thread and return ``self``."""
        self.bind()
        if self._thread is None:
            assert self._httpd is not None
            self._serving = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                name="logikura-sandbox", daemon=True)
            self._thread.start()
        return self

    def serve(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or an exception)."""
        self.bind()
        assert self._httpd is not None
        self._serving = True
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving, cut open connections, join every thread. Safe to call twice."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stop.set()
        if self._serving:
            httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._httpd = None
        self._serving = False

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_forever(config: SandboxConfig | None = None,
                  on_ready: Callable[[SandboxServer], None] | None = None) -> None:
    """Run a sandbox in the foreground until Ctrl-C or SIGTERM; ``on_ready(server)`` runs
    once the port is bound."""
    server = SandboxServer(config)
    server.bind()
    if on_ready is not None:
        on_ready(server)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        server.serve()
    except KeyboardInterrupt:
        logger.info("Logikura sandbox stopping")
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
