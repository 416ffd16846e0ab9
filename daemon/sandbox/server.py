"""The sandbox HTTP server: NE's login pages, the NE API and the ``/_sandbox/`` control API
on one port (stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive).

``SandboxServer(config).start()`` serves in a background thread (tests, demo);
``serve_forever(config)`` blocks (``nebridge sandbox serve``).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import re
import signal
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from daemon.sandbox.api import handle_api_call, not_found_body
from daemon.sandbox.clock import Clock
from daemon.sandbox.config import SandboxConfig
from daemon.sandbox.control import PREFIX, ControlApi
from daemon.sandbox.faults import Faults
from daemon.sandbox.ledger import Ledger
from daemon.sandbox.state import SandboxState

logger = logging.getLogger(__name__)

SIGN_IN_PATHS = ("/users/sign_in/", "/users/sign_in")
MAX_BODY = 64 * 1024 * 1024
_QUERY = re.compile(r"\?\S*")

_PAGE = """<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>
"""


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

    def close_connections(self) -> None:
        """Shut down every open client connection so handler threads can finish."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "NextEngineSandbox/1.0"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: avoid Nagle + delayed-ACK stalls
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("sandbox http: %s", _QUERY.sub("?…", format % args)[:300])

    # ---------------------------------------------------------------- plumbing
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

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

    def _send_json(self, status: int, data: Any) -> None:
        payload = json.dumps(data, ensure_ascii=False).encode("utf-8")
        self._send(status, payload, "application/json; charset=utf-8")

    def _send_page(self, status: int, title: str, body: str) -> None:
        page = _PAGE.format(title=html.escape(title), body=body).encode("utf-8")
        self._send(status, page, "text/html; charset=utf-8")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(413, b"", "text/plain")
            return
        if split.path == PREFIX or split.path.startswith(PREFIX + "/"):
            status, data = app.control.handle(method, split.path, parse_qs(split.query), body)
            self._send_json(status, data)
        elif split.path in SIGN_IN_PATHS:
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            if method == "POST":
                query.update(decode_form(body)[0])
            self._sign_in(method, query)
        elif method == "POST":
            params, raw = decode_form(body)
            payload = handle_api_call(app.state, split.path, params, raw, app.sleep)
            if payload is None:
                self.close_connection = True
                return
            self._send(200, payload, "application/json; charset=utf-8")
        else:
            self._send(200, not_found_body(app.state, split.path),
                       "application/json; charset=utf-8")

    # ---------------------------------------------------------------- sign-in pages
    def _sign_in(self, method: str, query: dict[str, str]) -> None:
        """NE's login screen: a button (or ``auto=1``) that redirects with uid and state."""
        state = self.server.app.state
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri") or state.config.redirect_uri
        if client_id != state.config.client_id:
            self._send_page(400, "エラー", "<p>client_idが正しくありません。</p>")
            return
        if not redirect_uri:
            self._send_page(400, "エラー", "<p>redirect_uriが指定されていません。</p>")
            return
        if method == "POST" or query.get("auto") == "1":
            uid, login_state = state.issue_login()
            location = _with_query(redirect_uri, {"uid": uid, "state": login_state})
            self._send(302, b"", "text/plain", {"Location": location})
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
        self._send_page(200, "ネクストエンジン サンドボックス ログイン", form)


class SandboxServer:
    """A running (or ready-to-run) NE sandbox: state, faults, control API, HTTP server."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.state = SandboxState(self.config)
        self.control = ControlApi(self.state)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stop = threading.Event()

    # ---------------------------------------------------------------- accessors
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
            raise RuntimeError("sandbox server is not bound; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port``: both NE's login base and API base."""
        if self._httpd is None:
            raise RuntimeError("sandbox server is not bound; call start() first")
        host = str(self._httpd.server_address[0])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def sleep(self, seconds: float) -> None:
        """Wait (latency, overload) but wake up early when the server stops."""
        self._stop.wait(seconds)

    # ---------------------------------------------------------------- lifecycle
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
                name="ne-sandbox", daemon=True,
            )
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_forever(
    config: SandboxConfig | None = None,
    on_ready: Callable[[SandboxServer], None] | None = None,
) -> None:
    """Run a sandbox in the foreground until Ctrl-C or SIGTERM.

    ``on_ready(server)`` is called once the port is bound (e.g. to print ``server.base_url``).
    """
    server = SandboxServer(config)
    server.bind()
    if on_ready is not None:
        on_ready(server)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        server.serve()
    except KeyboardInterrupt:
        logger.info("sandbox stopping")
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
