"""The sandbox HTTP server loop: one loopback port, stdlib ``ThreadingHTTPServer``, HTTP/1.1
keep-alive, the ``/_sandbox/`` control API, and a clean stop that joins every thread.

Subclass :class:`SandboxServer` and implement :meth:`SandboxServer.answer` for your upstream
system's pages and API; answer through the :class:`SandboxHandler` helpers (``send``,
``send_json``, ``send_page``, ``redirect``). ``start()`` serves in a background thread (tests,
demos); :func:`run_until_signal` serves in the foreground until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, overload
from urllib.parse import SplitResult, parse_qs, urlencode, urlsplit, urlunsplit

from hooks.sandbox.config import SandboxSettings
from hooks.sandbox.control import PREFIX, ControlApi

logger = logging.getLogger(__name__)

_QUERY = re.compile(r"\?\S*")
_PAGE = """<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>
"""
JSON_TYPE = "application/json; charset=utf-8"


def with_query(uri: str, extra: dict[str, str]) -> str:
    """``uri`` with ``extra`` appended to its query string (redirects back to a client)."""
    parts = urlsplit(uri)
    query = parts.query + ("&" if parts.query else "") + urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class World(Protocol):
    """What the server needs of a sandbox's state: its settings, where clients reach it."""

    base_url: str

    @property
    def config(self) -> SandboxSettings: ...


StateT = TypeVar("StateT", bound=World)
PartT = TypeVar("PartT")


class StatePart(Generic[PartT]):
    """A read-only server attribute that is a part of its state, typed::

    faults = StatePart[Faults]("faults", "Fault injection, changeable while running.")
    """

    def __init__(self, name: str, doc: str) -> None:
        self._name = name
        self.__doc__ = doc

    @overload
    def __get__(self, server: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, server: SandboxServer[Any], owner: type[Any]) -> PartT: ...
    def __get__(self, server: SandboxServer[Any] | None, owner: type[Any]) -> Self | PartT:
        if server is None:
            return self
        part: PartT = getattr(server.state, self._name)
        return part


class SandboxHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that joins its threads and can cut idle keep-alive connections."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SandboxServer[Any]) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, SandboxHandler)

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
        logged with its traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        logger.exception("%s failed answering %s", self.app.LABEL, client_address)

    def close_connections(self) -> None:
        """Shut down every open client connection so handler threads can finish."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class SandboxHandler(BaseHTTPRequestHandler):
    """One connection: reads the body, answers control calls, hands the rest to the app."""

    protocol_version = "HTTP/1.1"
    server: SandboxHTTPServer

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: avoid Nagle + delayed-ACK stalls
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return f"{self.server.app.SERVER_VERSION} {self.sys_version}"

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
        # query strings carry codes and states: never log them
        logger.debug("sandbox http: %s", _QUERY.sub("?…", format % args)[:300])

    # ---------------------------------------------------------------- answering
    def send(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        """Answer ``payload``; while the server stops, also close the connection."""
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

    def send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        """Answer ``data`` as UTF-8 JSON."""
        self.send(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), JSON_TYPE, headers)

    def send_page(self, status: int, title: str, body: str) -> None:
        """Answer a small HTML page (``body`` is HTML; escape what you put in it)."""
        page = _PAGE.format(title=html.escape(title), body=body).encode("utf-8")
        self.send(status, page, "text/html; charset=utf-8")

    def redirect(self, location: str) -> None:
        """Answer 302 to ``location``."""
        self.send(302, b"", "text/plain", {"Location": location})

    def drop(self) -> None:
        """Answer nothing: the connection closes (a dropped-connection fault)."""
        self.close_connection = True

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        if method not in app.METHODS:
            self.send_error(501, f"Unsupported method ({method!r})")
            return
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > app.MAX_BODY:
            self.close_connection = True
            self.send(413, b"", "text/plain")
            return
        body = self.rfile.read(length) if length > 0 else b""
        if split.path == PREFIX or split.path.startswith(PREFIX + "/"):
            status, data = app.control.handle(method, split.path, parse_qs(split.query), body)
            self.send_json(status, data)
        else:
            app.answer(self, method, split, body)


class SandboxServer(Generic[StateT]):
    """A running (or ready-to-run) sandbox: its state, control API and HTTP server."""

    #: How logs and errors name this sandbox.
    LABEL: ClassVar[str] = "sandbox"
    #: The ``Server`` header's product token.
    SERVER_VERSION: ClassVar[str] = "Sandbox/1.0"
    #: The name of the background serving thread.
    THREAD_NAME: ClassVar[str] = "sandbox"
    #: HTTP methods answered (others get 501).
    METHODS: ClassVar[tuple[str, ...]] = ("GET", "POST", "PUT", "PATCH", "DELETE")
    #: Largest accepted request body (bytes); larger ones get 413.
    MAX_BODY: ClassVar[int] = 16 * 1024 * 1024

    def __init__(self, state: StateT, control: ControlApi) -> None:
        self.state = state
        self.control = control
        self._address = (state.config.host, state.config.port)
        self._httpd: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stop = threading.Event()

    def answer(self, request: SandboxHandler, method: str, split: SplitResult, body: bytes) -> None:
        """Answer one request outside ``/_sandbox/`` (implement in the subclass)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- accessors
    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`bind` / :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError(f"{self.LABEL} is not bound; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port``: the base of every page and API path."""
        if self._httpd is None:
            raise RuntimeError(f"{self.LABEL} is not bound; call start() first")
        host = str(self._httpd.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def sleep(self, seconds: float) -> None:
        """Wait (latency, stalls) but wake up early when the server stops."""
        self._stop.wait(seconds)

    # ---------------------------------------------------------------- lifecycle
    def bind(self) -> None:
        """Open the listening socket (port 0 picks a free port)."""
        if self._httpd is None:
            self._httpd = SandboxHTTPServer(self._address, self)
            self.state.base_url = self.base_url

    def start(self) -> Self:
        """Serve in a background thread and return ``self``."""
        self.bind()
        if self._thread is None:
            assert self._httpd is not None
            self._serving = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=self.THREAD_NAME,
                daemon=True,
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

    def __enter__(self) -> Self:
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


ServerT = TypeVar("ServerT", bound=SandboxServer[Any])


def run_until_signal(server: ServerT, on_ready: Callable[[ServerT], None] | None = None) -> None:
    """Serve ``server`` in the foreground until Ctrl-C or SIGTERM; ``on_ready(server)`` runs
    once the port is bound (e.g. to print ``server.base_url``)."""
    server.bind()
    if on_ready is not None:
        on_ready(server)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        server.serve()
    except KeyboardInterrupt:
        logger.info("%s stopping", server.LABEL)
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
