"""Outbound HTTP is bounded (issue #12.9): a whole-call deadline and a response size cap.

Real peers on loopback: a server that trickles its answer a byte at a time, one that declares
or streams a huge answer, a gzip bomb, a huge redirect. Nothing is mocked; no timing is
asserted beyond "the call ends with the deadline error".
"""

from __future__ import annotations

import gzip
import shutil
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests

from daemon.nextengine.client import NextEngineClient
from daemon.nextengine.errors import NeBadAnswer, NeOutcomeUnknown
from daemon.nextengine.tokens import FileTokenStore, TokenSet
from hooks.http import BoundedSession, DeadlineExceeded, HttpLimits, ResponseTooLarge

Handler = Callable[[socket.socket], None]
MB = 1024 * 1024


@contextmanager
def raw_server(handler: Handler) -> Iterator[str]:
    """A loopback TCP server running ``handler(conn)`` per connection; yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, suppress(OSError):
            handler(conn)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def read_request(conn: socket.socket) -> bytes:
    """Read one request head (and a declared body) from ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            while len(body) < length:
                body += conn.recv(65536)
    return head


def trickle(data: bytes, *, head: bytes = b"", read: bool = True) -> Handler:
    """Send ``head`` at once, then ``data`` one byte every 50 ms (after reading the request
    unless ``read`` is False)."""

    def handle(conn: socket.socket) -> None:
        if read:
            read_request(conn)
        conn.sendall(head)
        for byte in data:
            conn.sendall(bytes([byte]))
            time.sleep(0.05)

    return handle


def flood(head: bytes, total: int) -> Handler:
    """Send ``head`` and then up to ``total`` bytes as fast as the client takes them."""

    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(head)
        block = b"x" * 65536
        sent = 0
        while sent < total:
            conn.sendall(block)
            sent += len(block)

    return handle


def send_after_request(data: bytes) -> Handler:
    """Read the request, then send ``data`` at once."""

    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(data)

    return handle


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


LIMITS = HttpLimits(connect_timeout_seconds=5, deadline_seconds=1.0, max_response_bytes=MB)


def test_a_trickled_body_ends_at_the_deadline() -> None:
    body = b'{"result": "success", "padding": "' + b"x" * 2000 + b'"}'
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    with (
        raw_server(trickle(body, head=head)) as url,
        BoundedSession(LIMITS) as session,
        pytest.raises(DeadlineExceeded) as caught,
    ):
        session.get(url + "/slow")
    message = str(caught.value)
    assert "127.0.0.1" in message and "1 s" in message and "http.deadline_seconds" in message
    assert isinstance(caught.value, requests.ReadTimeout)  # callers treat it as a read timeout


def test_trickled_headers_end_at_the_deadline() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"y" * 2000 + b"\r\n\r\n"
    with (
        raw_server(trickle(head)) as url,
        BoundedSession(LIMITS) as session,
        pytest.raises(DeadlineExceeded),
    ):
        session.get(url)


def test_a_callers_timeout_shortens_the_deadline_and_never_lengthens_it() -> None:
    slow = trickle(b"z" * 2000, head=b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n")
    long_limits = HttpLimits(deadline_seconds=30, max_response_bytes=MB)
    with raw_server(slow) as url, BoundedSession(long_limits) as session:
        with pytest.raises(DeadlineExceeded) as caught:
            session.get(url, timeout=0.5)
        assert caught.value.limit == 0.5
    with raw_server(slow) as url, BoundedSession(LIMITS) as session:
        with pytest.raises(DeadlineExceeded) as caught:
            session.get(url, timeout=(5, 600))  # the session's 1 s deadline still holds
        assert caught.value.limit == 1.0


def test_a_reused_keep_alive_connection_is_bounded_too() -> None:
    calls: list[int] = []

    def handle(conn: socket.socket) -> None:
        while read_request(conn):
            calls.append(1)
            if len(calls) == 1:
                conn.sendall(answer(b'{"ok": true}'))
            else:
                trickle(
                    b"w" * 2000, head=b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", read=False
                )(conn)
                return

    with raw_server(handle) as url, BoundedSession(LIMITS) as session:
        assert session.get(url).json() == {"ok": True}
        with pytest.raises(DeadlineExceeded):
            session.get(url)
    assert len(calls) == 2  # the same connection carried both


def test_a_huge_declared_answer_is_refused_unread() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 419430400\r\n\r\n"  # 400 MB
    with raw_server(flood(head, 400 * MB)) as url, BoundedSession(LIMITS) as session:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLarge) as caught:
                session.get(url)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    message = str(caught.value)
    assert "419,430,400 bytes" in message and "1 MB" in message
    assert "http.max_response_mb" in message and "not read" in message
    assert peak < 8 * MB


def test_a_huge_streamed_answer_stops_at_the_cap() -> None:
    head = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"  # no length: read to the end
    with raw_server(flood(head, 400 * MB)) as url, BoundedSession(LIMITS) as session:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLarge, match="reading stopped"):
                session.get(url)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * MB


def test_a_gzip_bomb_is_capped_after_decompression() -> None:
    bomb = gzip.compress(b"\0" * (64 * MB))
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: "
        + str(len(bomb)).encode()
        + b"\r\n\r\n"
    )
    assert len(bomb) < MB
    with (
        raw_server(send_after_request(head + bomb)) as url,
        BoundedSession(LIMITS) as session,
        pytest.raises(ResponseTooLarge),
    ):
        session.get(url)


def test_a_huge_redirect_body_is_refused_too() -> None:
    head = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 419430400\r\n\r\n"
    with (
        raw_server(flood(head, 400 * MB)) as url,
        BoundedSession(LIMITS) as session,
        pytest.raises(ResponseTooLarge),
    ):
        session.get(url)


def test_a_normal_answer_passes_and_positional_arguments_work() -> None:
    with (
        raw_server(send_after_request(answer(b'{"a": 1}'))) as url,
        BoundedSession(LIMITS) as session,
    ):
        response = session.request("POST", url, None, b"payload")
        assert response.status_code == 200 and response.json() == {"a": 1}


# -- the Next Engine client keeps its "outcome unknown" semantics --------------------------


def ne_client(
    tmp_path: Path, url: str, read_timeout: float = 3600.0, max_response_bytes: int = 100 * MB
) -> NextEngineClient:
    store = FileTokenStore(tmp_path / "tokens.json")
    store.save(TokenSet("access-1", "refresh-1"))
    return NextEngineClient(
        url,
        store,
        version="test",
        sleep=lambda _s: None,
        connect_timeout=0.5,
        read_timeout=read_timeout,
        max_response_bytes=max_response_bytes,
    )


def test_a_trickling_next_engine_write_is_outcome_unknown(tmp_path: Path) -> None:
    body = b'{"result": "success"}' + b" " * 2000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    sent: list[bytes] = []

    def handle(conn: socket.socket) -> None:
        sent.append(read_request(conn))
        trickle(body, head=head, read=False)(conn)

    with (
        raw_server(handle) as url,
        ne_client(tmp_path, url, read_timeout=1.0) as client,
        pytest.raises(NeOutcomeUnknown) as caught,
    ):
        client.shipped("1", "2026-01-01 00:00:00")
    assert "nextengine.read_timeout_seconds" in str(caught.value)
    assert len(sent) == 1  # never resent


def test_a_huge_next_engine_answer_is_a_bad_answer_and_not_resent(tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 419430400\r\n\r\n"
    sent: list[bytes] = []

    def handle(conn: socket.socket) -> None:
        sent.append(b"")
        flood(head, 400 * MB)(conn)

    with (
        raw_server(handle) as url,
        ne_client(tmp_path, url, max_response_bytes=MB) as client,
        pytest.raises(NeBadAnswer) as caught,
    ):
        client.company_info()
    assert "nextengine.max_response_mb" in str(caught.value)
    assert isinstance(caught.value, NeOutcomeUnknown) and len(sent) == 1


# -- a peer may stay silent long, but once it answers the answer must come at a normal pace --


def silent_then(seconds: float, then: Handler) -> Handler:
    """Read the request, say nothing for ``seconds``, then run ``then`` (request already read)."""

    def handle(conn: socket.socket) -> None:
        read_request(conn)
        time.sleep(seconds)
        then(conn)

    return handle


TRANSFER = HttpLimits(
    deadline_seconds=60,
    max_response_bytes=MB,
    transfer_seconds=0.5,
    transfer_setting="nextengine.transfer_timeout_seconds",
)


def test_a_long_silence_then_a_prompt_answer_passes() -> None:
    body = b'{"result": "success"}'
    with (
        raw_server(silent_then(1.5, lambda c: c.sendall(answer(body)))) as url,
        BoundedSession(TRANSFER) as session,
    ):
        assert session.get(url).json() == {"result": "success"}  # 1.5 s of silence > 0.5 s


def test_a_trickle_after_the_first_byte_ends_at_the_transfer_limit() -> None:
    slow = trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + b"t" * 500, read=False)
    with (
        raw_server(silent_then(0.2, slow)) as url,
        BoundedSession(TRANSFER) as session,
        pytest.raises(DeadlineExceeded) as caught,
    ):
        session.get(url)
    assert caught.value.limit == 0.5
    assert "started answering" in str(caught.value)
    assert "nextengine.transfer_timeout_seconds" in str(caught.value)


# -- the same over TLS (Next Engine is HTTPS): the watchdog and the answer reader work there --


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """A server context with a throwaway self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, str(cert)


def over_tls(context: ssl.SSLContext, handler: Handler) -> Handler:
    def handle(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as secure:
            handler(secure)

    return handle


def test_over_tls_a_trickle_ends_at_the_deadline_and_a_silence_then_answer_passes(
    tls: tuple[ssl.SSLContext, str],
) -> None:
    context, cert = tls
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n"
    with (
        raw_server(over_tls(context, trickle(b"s" * 2000, head=head))) as url,
        BoundedSession(LIMITS) as session,
        pytest.raises(DeadlineExceeded),
    ):
        session.get(url.replace("http:", "https:"), verify=cert)
    served: list[int] = []

    def keep_alive(conn: socket.socket) -> None:
        while read_request(conn):
            served.append(1)
            time.sleep(1.5)  # silent longer than the 0.5 s transfer limit, then prompt
            conn.sendall(answer(b'{"ok": true}'))

    with raw_server(over_tls(context, keep_alive)) as url, BoundedSession(TRANSFER) as session:
        for _ in range(2):  # the second call reuses the kept-alive TLS connection
            assert session.get(url.replace("http:", "https:"), verify=cert).json() == {"ok": True}
    assert len(served) == 2
