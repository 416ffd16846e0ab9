"""Receiving a browser redirect on a loopback address (Next Engine sign-in, WMS OAuth)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from daemon.httpserve import BoundedThreadingMixIn, bind

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def is_loopback(redirect_uri: str) -> bool:
    """True when ``redirect_uri`` points at this machine (so nebridge can serve it)."""
    return (urlsplit(redirect_uri).hostname or "") in _LOOPBACK


class _Receiver(BoundedThreadingMixIn, HTTPServer):
    """A browser sends one request, perhaps a favicon: a few slots, a short life each."""

    max_connections = 16
    connection_seconds = 10.0


def receive_redirect(
    redirect_uri: str,
    accept: Callable[[Mapping[str, str]], bool],
    page_text: str,
    timeout: float,
    *,
    change: str,
) -> dict[str, str] | None:
    """Serve ``redirect_uri`` until a request whose query ``accept`` takes arrives.

    Returns that query (first value of each parameter), or None after ``timeout`` seconds.
    Any other request is answered 404 and the wait goes on, so ``accept`` decides what counts
    (e.g. only the ``state`` this sign-in sent). Slow or idle connections never delay the real
    one (:mod:`daemon.httpserve`). A taken port raises :class:`~daemon.httpserve.PortInUse`
    ending with ``change``. The query holds secrets (codes, uid/state): it is never logged.
    """
    parts = urlsplit(redirect_uri)
    found: dict[str, str] = {}
    done = threading.Event()
    taken = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            with taken:
                wanted = not found and url.path == (parts.path or "/") and accept(query)
                if wanted:
                    found.update(query)
            if not wanted:
                self._answer(404, "not the redirect nebridge is waiting for")
                return
            try:
                self._answer(200, page_text)
            finally:
                done.set()  # after the page went out: stopping the server cuts connections

        def _answer(self, status: int, text: str) -> None:
            body = f"<html><body><h1>nebridge</h1><p>{text}</p></body></html>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    host = parts.hostname or "127.0.0.1"
    server = bind(_Receiver, host, parts.port or 80, Handler, change=change)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="redirect-receiver",
        daemon=True,
    )
    thread.start()
    try:
        done.wait(timeout)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    return found if done.is_set() else None
