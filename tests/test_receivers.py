"""nebridge's own HTTP servers are bounded (issue #12.9) and a taken port is one line (#13.9).

Real sockets on loopback: floods of half-sent requests against the sign-in receivers and the
metrics server, a trickling client, a wrong ``state``, ports already taken — through the real
functions, the daemon's supervisor and the CLI.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from daemon.cli import app
from daemon.cli.wms import RedirectError, wait_for_code
from daemon.httpserve import BoundedThreadingMixIn, PortInUse, bind
from daemon.metrics import Metrics
from daemon.nelink import LinkError, wait_for_redirect
from daemon.supervisor import Supervisor
from tests.conftest import ConfigFactory

FLOOD = 200


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port another program holds (listening)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def half_sent(port: int, count: int, stack: ExitStack) -> list[socket.socket]:
    """``count`` connections that each send half a request line and then nothing."""
    opened = []
    for _ in range(count):
        conn = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
        with suppress(OSError):
            conn.sendall(b"GET /callback?uid=")
        opened.append(conn)
    return opened


def get_when_listening(url: str, attempts: int = 200) -> requests.Response:
    """GET ``url``, retrying while the server is not listening yet."""
    for _ in range(attempts):
        try:
            return requests.get(url, timeout=30)
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens at {url}")


class Waiting:
    """Run a receiver in a thread; ``result`` holds its return value or exception."""

    def __init__(self, target: Any, *args: Any) -> None:
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(target, *args), daemon=True)
        self.thread.start()

    def _run(self, target: Any, *args: Any) -> None:
        try:
            self.result = target(*args)
        except Exception as exc:  # handed to the test
            self.result = exc

    def join(self) -> Any:
        self.thread.join(120)
        assert not self.thread.is_alive(), "the receiver did not return"
        return self.result


def test_a_flood_of_half_sent_requests_neither_pins_threads_nor_delays_the_sign_in() -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}/callback"
    baseline = threading.active_count()
    waiting = Waiting(wait_for_redirect, uri, 60)
    with ExitStack() as stack:
        get_when_listening(f"http://127.0.0.1:{port}/favicon.ico")  # any answer: listening
        half_sent(port, FLOOD, stack)
        peak = threading.active_count() - baseline
        answer = requests.get(f"{uri}?uid=U-real&state=S-real", timeout=30)
        assert answer.status_code == 200 and "sign-in received" in answer.text
        assert waiting.join() == ("U-real", "S-real")
    assert peak <= 16 + 2  # the receiver's slots, its serving thread and the waiter


def test_the_wms_receiver_takes_only_the_answer_carrying_its_state() -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}/cb"
    waiting = Waiting(wait_for_code, uri, "state-of-this-request", 60)
    stray = get_when_listening(f"{uri}?code=attacker-code&state=other")
    assert stray.status_code == 404
    old_tab = requests.get(f"{uri}?error=access_denied&state=old-tab", timeout=30)
    assert old_tab.status_code == 404
    real = requests.get(f"{uri}?code=real-code&state=state-of-this-request", timeout=30)
    assert real.status_code == 200
    assert waiting.join() == "real-code"


def test_sign_in_receivers_on_a_taken_port_say_which_port_and_what_to_change() -> None:
    with taken_port() as port:
        with pytest.raises(LinkError) as ne:
            wait_for_redirect(f"http://127.0.0.1:{port}/callback", 5)
        with pytest.raises(RedirectError) as wms:
            wait_for_code(f"http://127.0.0.1:{port}/cb", "s", 5)
    assert f"port {port} on 127.0.0.1 is already in use" in str(ne.value)
    assert "--uid/--state" in str(ne.value) and "nextengine.redirect_uri" in str(ne.value)
    assert f"port {port}" in str(wms.value) and "--code" in str(wms.value)


class _Tiny(BoundedThreadingMixIn, HTTPServer):
    max_connections = 4
    connection_seconds = 1.0


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_a_trickling_client_is_cut_off_and_the_oldest_connection_makes_room() -> None:
    server = bind(_Tiny, "127.0.0.1", 0, _Hello, change="-")
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    port = server.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            ended = False
            for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"y" * 600:  # a byte every 20 ms
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    ended = True
                    break
                time.sleep(0.02)
            if not ended:
                with suppress(OSError):
                    ended = slow.recv(1024) == b""
            assert ended  # the server closed the connection: 1 s in all, per-byte or not
        with ExitStack() as stack:
            half_sent(port, 4 * 10, stack)  # ten times the slots
            assert server.open_connections <= 4
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=30).text == "ok"
    finally:
        server.shutdown()
        server.server_close()


def test_the_metrics_server_serves_through_a_flood() -> None:
    metrics = Metrics()
    metrics.serve("127.0.0.1", free_port())
    port = metrics.port
    assert port is not None
    baseline = threading.active_count()
    try:
        metrics.observe_call("/api_v1_login_company/info", "success")
        with ExitStack() as stack:
            half_sent(port, FLOOD, stack)
            peak = threading.active_count() - baseline
            answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=60)
        assert answer.status_code == 200 and "nebridge_nextengine_calls" in answer.text
        assert peak <= 8 + 1
    finally:
        metrics.stop()


def test_metrics_on_a_taken_port_is_one_line_and_the_daemon_does_not_start(
    make_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with taken_port() as port:
        with pytest.raises(PortInUse, match=r"metrics\.port"):
            Metrics().serve("127.0.0.1", port)
        path = make_config(metrics={"port": port, "host": "127.0.0.1"})
        with caplog.at_level(logging.ERROR):
            assert Supervisor(path).run() == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        f"port {port} on 127.0.0.1 is already in use" in e and "metrics.port" in e for e in errors
    )
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize("flag", [[], ["--logikura"]])
def test_sandbox_serve_on_a_taken_port_is_one_line(
    make_config: ConfigFactory, flag: list[str]
) -> None:
    path = make_config()
    with taken_port() as port:
        result = CliRunner().invoke(
            app, ["--config", str(path), "sandbox", "serve", "--port", str(port), *flag]
        )
    assert result.exit_code == 1
    output = result.output.strip()
    assert f"port {port} on 127.0.0.1 is already in use" in output and "--port" in output
    assert "Traceback" not in output and len(output.splitlines()) == 1


def test_logs_of_a_state_mismatch_never_show_the_code(tmp_path: Path) -> None:
    """The query (codes, uid/state) is never logged; the 404 page says what it waits for."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}/cb"
    waiting = Waiting(wait_for_code, uri, "s1", 60)
    stray = get_when_listening(f"{uri}?code=secret-code-123&state=s2")
    assert "secret-code-123" not in stray.text and "waiting for" in stray.text
    requests.get(f"{uri}?code=c&state=s1", timeout=30)
    assert waiting.join() == "c"


def test_connect_on_a_taken_port_is_one_line_through_the_cli(make_config: ConfigFactory) -> None:
    with taken_port() as port:
        path = make_config(
            nextengine={
                "client_id": "test-client",
                "client_secret": "test-secret-123",
                "redirect_uri": f"http://127.0.0.1:{port}/callback",
            }
        )
        result = CliRunner().invoke(app, ["--config", str(path), "connect", "--timeout", "5"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    last = result.output.strip().splitlines()[-1]
    assert f"port {port} on 127.0.0.1 is already in use" in last and "--uid/--state" in last
