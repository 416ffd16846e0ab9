"""A loopback HTTP proxy in front of the Next Engine sandbox that can spoil its answers.

Point ``nextengine.api_base`` at :attr:`NeProxy.base_url`: every call goes through to the
sandbox unchanged, except calls to a path armed with :meth:`NeProxy.arm`, which get a
:class:`BadAnswer` instead — after the sandbox applied the call (``forward=True``: the
change happened, the answer is lost in garbage) or without reaching it.
"""

from __future__ import annotations

import http.client
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class BadAnswer:
    """What the proxy answers instead of Next Engine."""

    name: str
    status: int = 200
    content_type: str = "application/json; charset=utf-8"
    body: bytes = b""
    forward: bool = False
    #: Send Next Engine's own answer (``forward``) a byte every 0.2 s instead of ``body``.
    trickle: bool = False
    #: Announce this Content-Length (e.g. 400 MB), send ``body``, then close.
    declared_length: int | None = None


@dataclass
class _Armed:
    answer: BadAnswer
    skip: int
    count: int


@dataclass
class NeProxy:
    """The proxy; ``served`` lists ``(path, answer name)`` of every spoiled answer."""

    upstream: str
    host: str = "127.0.0.1"
    served: list[tuple[str, str]] = field(default_factory=list)
    _armed: dict[str, list[_Armed]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def arm(self, path: str, answer: BadAnswer, *, skip: int = 0, count: int = 1) -> None:
        """Spoil ``count`` calls to ``path`` after letting ``skip`` of them through."""
        with self._lock:
            self._armed.setdefault(path, []).append(_Armed(answer, skip, count))

    def disarm(self) -> None:
        """Let every call through again."""
        with self._lock:
            self._armed.clear()

    def _take(self, path: str) -> BadAnswer | None:
        with self._lock:
            queue = self._armed.get(path, [])
            if not queue:
                return None
            head = queue[0]
            if head.skip > 0:
                head.skip -= 1
                return None
            head.count -= 1
            if head.count <= 0:
                queue.pop(0)
            self.served.append((path, head.answer.name))
            return head.answer

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` once started."""
        assert self._server is not None, "start() first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> NeProxy:
        """Serve in a background thread."""
        proxy = self
        upstream = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urlsplit(self.path).path
                bad = proxy._take(path)
                if bad is None or bad.forward:
                    try:
                        status, kind, payload = _forward(
                            upstream.hostname or "",
                            upstream.port or 80,
                            self.path,
                            body,
                            self.headers.get("Content-Type", ""),
                        )
                    except (OSError, http.client.HTTPException):  # NE dropped it: drop too
                        self.close_connection = True
                        return
                if bad is not None and not bad.trickle:
                    status, kind, payload = bad.status, bad.content_type, bad.body
                self.send_response(status)
                self.send_header("Content-Type", kind)
                declared = bad.declared_length if bad is not None else None
                self.send_header("Content-Length", str(declared or len(payload)))
                self.end_headers()
                with suppress(OSError):  # the client may give up (its deadline or size cap)
                    if bad is not None and bad.trickle:
                        for byte in payload:
                            self.wfile.write(bytes([byte]))
                            time.sleep(0.2)
                    else:
                        self.wfile.write(payload)
                if declared:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> NeProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _forward(host: str, port: int, path: str, body: bytes, kind: str) -> tuple[int, str, bytes]:
    """POST to the sandbox and return its status, content type and body."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": kind})
        response = conn.getresponse()
        return (
            response.status,
            response.getheader("Content-Type") or "application/json",
            response.read(),
        )
    finally:
        conn.close()
