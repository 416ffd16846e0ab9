"""Receiving a browser redirect on a loopback address (Next Engine sign-in, WMS OAuth)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def is_loopback(redirect_uri: str) -> bool:
    """True when ``redirect_uri`` points at this machine (so nebridge can serve it)."""
    return (urlsplit(redirect_uri).hostname or "") in _LOOPBACK


def receive_redirect(
    redirect_uri: str,
    accept: Callable[[Mapping[str, str]], bool],
    page_text: str,
    timeout: float,
) -> dict[str, str] | None:
    """Serve ``redirect_uri`` until a request whose query ``accept`` takes arrives.

    Returns that query (first value of each parameter), or None after ``timeout`` seconds.
    The query holds secrets (codes, uid/state): it is never logged.
    """
    parts = urlsplit(redirect_uri)
    found: dict[str, str] = {}
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path != (parts.path or "/") or not accept(query):
                self._answer(404, "not the redirect nebridge is waiting for")
                return
            found.update(query)
            done.set()
            self._answer(200, page_text)

        def _answer(self, status: int, text: str) -> None:
            body = f"<html><body><h1>nebridge</h1><p>{text}</p></body></html>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = HTTPServer((parts.hostname or "", parts.port or 80), Handler)
    server.timeout = 0.5
    try:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            server.handle_request()
    finally:
        server.server_close()
    return found if done.is_set() else None
