"""Small HTTP servers nebridge runs itself (sign-in receivers, metrics), bounded.

One thread per connection, but at most ``max_connections`` at once: when all are taken, the
oldest connection is closed to make room (a flood of half-sent requests cannot pin threads or
lock out the browser's real request). Every connection ends ``connection_seconds`` after it
was accepted, however slowly the peer sends (a per-read timeout alone would let one byte every
few seconds hold it forever). A port already in use is one :class:`PortInUse` line naming the
port and what to change.
"""

from __future__ import annotations

import errno
import logging
import socket
import socketserver
import threading
import time
from contextlib import suppress
from typing import Any, TypeVar

log = logging.getLogger(__name__)


class PortInUse(Exception):
    """The port a nebridge server needs is taken; the message names it and what to change."""

    def __init__(self, host: str, port: int, change: str, *, denied: bool = False) -> None:
        reason = (
            "needs privileges nebridge does not have"
            if denied
            else "is already in use by another program"
        )
        super().__init__(f"port {port} on {host} {reason}; {change}")
        self.host = host
        self.port = port


class BoundedThreadingMixIn(socketserver.ThreadingMixIn):
    """Thread per connection, at most ``max_connections``, each ended after
    ``connection_seconds`` (see the module docstring)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a burst waits in the kernel's queue, not in a SYN retry
    max_connections = 32
    connection_seconds = 10.0

    def _bounds(self) -> tuple[threading.Lock, dict[socket.socket, float], threading.Semaphore]:
        state = self.__dict__.get("_bounded_state")
        if state is None:
            state = (threading.Lock(), {}, threading.Semaphore(self.max_connections))
            self.__dict__["_bounded_state"] = state
        return state

    def process_request(self, request: Any, client_address: Any) -> None:
        lock, active, slots = self._bounds()
        with lock:
            if len(active) >= self.max_connections:
                _close(min(active, key=active.__getitem__))  # make room: drop the oldest
        if not slots.acquire(timeout=self.connection_seconds):
            _close(request)
            request.close()
            return
        request.settimeout(self.connection_seconds)
        with lock:
            active[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        lock, active, slots = self._bounds()
        with lock:
            if active.pop(request, None) is not None:
                slots.release()

    def service_actions(self) -> None:
        """Close connections older than ``connection_seconds`` (run by ``serve_forever``)."""
        lock, active, _slots = self._bounds()
        cutoff = time.monotonic() - self.connection_seconds
        with lock:
            for request in [r for r, since in active.items() if since <= cutoff]:
                _close(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A peer that broke its connection (or was dropped to make room) is not news: no
        traceback on the admin's terminal, a debug line only."""
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    @property
    def open_connections(self) -> int:
        """Connections being served now."""
        return len(self._bounds()[1])

    def server_close(self) -> None:
        lock, active, _slots = self._bounds()
        with lock:
            for request in list(active):
                _close(request)
        super().server_close()


def _close(request: socket.socket) -> None:
    """End a connection's reads and writes now (its thread finishes and frees the slot)."""
    with suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)


S = TypeVar("S", bound=socketserver.TCPServer)


def bind(server_class: type[S], host: str, port: int, handler: Any, *, change: str) -> S:
    """``server_class((host, port), handler)``, IPv6 for an IPv6 host; a taken port raises
    :class:`PortInUse` whose message ends with ``change`` (what to do about it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    cls = type(server_class.__name__, (server_class,), {"address_family": family})
    try:
        server: S = cls((host, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port, change) from None
        if exc.errno == errno.EACCES:
            raise PortInUse(host, port, change, denied=True) from None
        raise
    return server
