"""`nebridge connect` checks the redirect's port before it shows the sign-in URL: a second
connect (another company of a fleet signing in through the same redirect_uri) is refused at
once, saying another connect may be waiting (review fleet F11). Real CLI, a real listener."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from daemon.cli import app
from daemon.cli.link import _check_redirect_port
from tests.conftest import ConfigFactory


def test_a_second_connect_is_refused_before_the_sign_in_url(make_config: ConfigFactory) -> None:
    with socket.socket() as waiting:  # the first connect, waiting for its redirect
        waiting.bind(("127.0.0.1", 0))
        waiting.listen(1)
        port = int(waiting.getsockname()[1])
        path = make_config(
            nextengine={
                "client_id": "test-client",
                "client_secret": "test-secret-123",
                "redirect_uri": f"http://127.0.0.1:{port}/callback",
            }
        )
        result = CliRunner().invoke(app, ["--config", str(path), "connect", "--timeout", "5"])
    assert result.exit_code == 1
    assert "sign_in" not in result.output and "Waiting for the redirect" not in result.output
    assert f"port {port} on 127.0.0.1 is already in use" in result.output
    assert "another `nebridge connect` may be waiting" in result.output
    assert "--uid/--state" in result.output


def test_a_port_a_finished_connect_left_in_time_wait_is_not_refused() -> None:
    """Connects one after the other (review: the second, 2 s after the first, was refused
    for up to a minute): the listener's side of a finished exchange sits in TIME_WAIT."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as HTTPServer does
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)) as browser:
            served, _ = listener.accept()
            served.close()  # the listener's side closes first: its port goes to TIME_WAIT
            browser.recv(1)
    _check_redirect_port(f"http://127.0.0.1:{port}/callback")  # no LinkError
    with socket.socket() as bound:  # and the port is really free for the next listener
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bound.bind(("127.0.0.1", port))
