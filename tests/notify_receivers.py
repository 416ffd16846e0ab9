"""Real receivers on loopback for the notification tests, the demo check and the benchmark:
an HTTP server that keeps every request (and can fail or stall on purpose) and an SMTP
server (aiosmtpd) that keeps every message."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One HTTP request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """What the HTTP receiver got, and how it answers next (``statuses`` first, then 200)."""

    url: str
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    delay_seconds: float = 0.0


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    """An HTTP server on 127.0.0.1 that records every POST."""
    state = HttpReceiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if state.delay_seconds:
                time.sleep(state.delay_seconds)
            with lock:
                status = state.statuses.pop(0) if state.statuses else 200
                if status == 200:
                    state.requests.append(Received(self.path, dict(self.headers.items()), body))
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the caller gave up (a slow answer on purpose)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SmtpReceiver:
    """The messages the SMTP server accepted (parsed) and its port."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)


@contextmanager
def smtp_receiver(
    tls_context: Any = None, password: str | None = None, implicit_tls: bool = False
) -> Iterator[SmtpReceiver]:
    """An aiosmtpd server on 127.0.0.1; with ``tls_context`` it offers STARTTLS (required),
    or speaks TLS from the first byte with ``implicit_tls``; with ``password`` it requires
    AUTH (any user name, that password)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

    received = SmtpReceiver(port=0)

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Envelope) -> str:
            data = envelope.original_content or b""
            received.raw.append(data)
            message = BytesParser(policy=policy.default).parsebytes(data)
            assert isinstance(message, EmailMessage)
            received.messages.append(message)
            return "250 OK"

    def authenticator(
        _server: Any, _session: Any, _envelope: Any, _mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password.decode() == password
        if ok:
            received.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    kwargs: dict[str, Any] = {}
    if tls_context is not None and implicit_tls:
        kwargs.update(ssl_context=tls_context)
    elif tls_context is not None:
        kwargs.update(tls_context=tls_context, require_starttls=True)
    if password is not None:
        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=tls_context is not None and not implicit_tls,
        )
    received.port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=received.port, **kwargs)
    controller.start()
    try:
        yield received
    finally:
        controller.stop()
