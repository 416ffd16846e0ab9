"""Bounded outbound HTTP: every call has a whole-call deadline and a response size cap.

The engine gives connectors ``ctx.http``, a :class:`BoundedSession`; the Next Engine client
uses one too. A connector therefore gets both limits without code of its own:

* **Deadline.** A call (connect, send, every redirect, reading the whole answer) ends at most
  ``deadline_seconds`` after it started — a peer trickling one byte a second cannot hold it
  longer. A caller's ``timeout=`` can only shorten it: a number bounds the whole call, a
  ``(connect, read)`` pair bounds connecting by ``connect`` and the whole call by
  ``connect + read``. Past the deadline the call raises :class:`DeadlineExceeded`, a
  ``requests.ReadTimeout``: the request may have reached the peer, so a write's outcome is
  unknown (treat it as you treat any read timeout). A call that could not even connect in
  time raises ``requests.ConnectTimeout`` as usual (nothing was sent).
* **Answer time.** With ``transfer_seconds`` set, once the peer sends the first byte of its
  answer the rest must arrive within that many seconds (also :class:`DeadlineExceeded`): for
  peers that may legitimately stay silent for long before answering (Next Engine's
  ``wait_flag`` waits up to 60 min) but must then answer at a normal pace.
* **Size cap.** An answer larger than ``max_response_bytes`` (after decompression) raises
  :class:`ResponseTooLarge` — refused from its ``Content-Length`` before reading, or as soon
  as the bytes read pass the cap; no more than the cap is ever held in memory. Every answer
  is read whole before it is returned (``stream=True`` is accepted but does not stream).

Both errors are ``requests.RequestException``\\ s whose message names the host, the limit and
the setting to change. The limits hold for the adapters this session mounts; a connector that
mounts its own adapter loses the size cap and keeps only per-read socket timeouts. Looking up
the host name is left to the system resolver and its own timeouts (it cannot be interrupted).
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

__all__ = [
    "BoundedSession",
    "DeadlineExceeded",
    "HttpLimitExceeded",
    "HttpLimits",
    "ResponseTooLarge",
]

_CHUNK = 64 * 1024
#: Positional parameters of ``requests.Session.request`` after ``method`` and ``url``.
_REQUEST_ARGS = (
    "params",
    "data",
    "headers",
    "cookies",
    "files",
    "auth",
    "timeout",
    "allow_redirects",
    "proxies",
    "hooks",
    "stream",
    "verify",
    "cert",
    "json",
)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The limits of a :class:`BoundedSession` and the settings that change them.

    ``deadline_setting`` and ``size_setting`` are named in the errors so the admin knows what
    to raise when a slow or large answer is legitimate.
    """

    connect_timeout_seconds: float = 10.0
    deadline_seconds: float = 120.0
    max_response_bytes: int = 50 * 1024 * 1024
    #: Once the answer's first byte arrived, the rest must within this (None: no own limit).
    transfer_seconds: float | None = None
    deadline_setting: str = "http.deadline_seconds"
    size_setting: str = "http.max_response_mb"
    transfer_setting: str = ""


class HttpLimitExceeded(requests.RequestException):
    """A call passed one of the session's limits; ``host`` and ``limit`` say which."""

    def __init__(self, message: str, *, host: str, limit: float) -> None:
        super().__init__(message)
        self.host = host
        self.limit = limit


class DeadlineExceeded(HttpLimitExceeded, requests.ReadTimeout):
    """The whole call did not finish within its deadline; a write may have been applied."""


class ResponseTooLarge(HttpLimitExceeded):
    """The answer is larger than the cap; it was not read (a write may have been applied)."""


# -- the deadline: one watchdog thread shuts down the sockets of calls past their deadline ---


class _Call:
    """One bounded call: its deadline and the sockets it has used so far."""

    __slots__ = ("answering", "deadline", "expired", "sockets", "transfer")

    def __init__(self, deadline: float, transfer: float | None) -> None:
        self.deadline = deadline
        self.transfer = transfer
        self.answering = False  # the first byte of an answer arrived and shortened the deadline
        self.expired = False
        self.sockets: list[socket.socket] = []


def _shut(sock: socket.socket) -> None:
    """Unblock any read or write on ``sock`` (the plain socket call: TLS state is left alone)."""
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """Marks calls expired at their deadline and shuts their sockets (one daemon thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._calls: set[_Call] = set()
        self._thread: threading.Thread | None = None

    def add(self, call: _Call) -> None:
        with self._cond:
            self._calls.add(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, call: _Call) -> None:
        with self._cond:
            self._calls.discard(call)

    def attach(self, call: _Call, sock: socket.socket) -> None:
        with self._cond:
            call.sockets.append(sock)
            if call.expired:
                _shut(sock)

    def answer_started(self, call: _Call) -> None:
        """The answer's first byte arrived: the rest must within ``call.transfer``."""
        with self._cond:
            if call.transfer is not None and not call.answering:
                call.answering = True
                call.deadline = min(call.deadline, time.monotonic() + call.transfer)
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for call in [c for c in self._calls if c.deadline <= now]:
                    call.expired = True
                    self._calls.discard(call)
                    for sock in call.sockets:
                        _shut(sock)
                upcoming = min((c.deadline for c in self._calls), default=None)
                self._cond.wait(None if upcoming is None else max(upcoming - now, 0.01))


_WATCHDOG = _Watchdog()
_current = threading.local()


def _attach_current(sock: socket.socket | None) -> None:
    """Tie ``sock`` to the bounded call running on this thread, if any."""
    call: _Call | None = getattr(_current, "call", None)
    if call is not None and sock is not None:
        _WATCHDOG.attach(call, sock)


class _AnswerReader(socket.SocketIO):
    """The socket reader of an answer: tells the call's watchdog when the first byte came."""

    def __init__(self, sock: socket.socket, call: _Call) -> None:
        super().__init__(sock, "rb")
        self._call = call

    def readinto(self, b: Any) -> int | None:
        n = super().readinto(b)
        if n:
            _WATCHDOG.answer_started(self._call)
        return n


class _WatchedResponse(http.client.HTTPResponse):
    """http.client's response reading through :class:`_AnswerReader` during a bounded call."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        call: _Call | None = getattr(_current, "call", None)
        if call is not None and call.transfer is not None:
            self.fp.close()  # nothing read yet: swap in the reader that sees the first byte
            sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile does
            self.fp = io.BufferedReader(_AnswerReader(sock, call))


class _WatchedHTTPConnection(HTTPConnection):
    """A urllib3 connection whose socket the running call's watchdog can shut."""

    response_class = _WatchedResponse

    def connect(self) -> None:
        super().connect()
        _attach_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self.sock)  # a reused keep-alive connection
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    """The TLS form of :class:`_WatchedHTTPConnection`."""

    response_class = _WatchedResponse

    def connect(self) -> None:
        super().connect()
        _attach_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# -- the adapter: watched connections, no urllib3 retries, every answer read under the cap ----


class BoundedAdapter(HTTPAdapter):
    """An adapter that reads every answer (each redirect too) under ``max_response_bytes``.

    No urllib3 retries: a request is sent at most once per call. ``socket_options`` are
    passed to every new connection (e.g. TCP keep-alive for long calls).
    """

    def __init__(
        self, limits: HttpLimits, socket_options: Sequence[tuple[int, int, int]] | None = None
    ) -> None:
        self.limits = limits
        self.socket_options = list(socket_options) if socket_options is not None else None
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        if self.socket_options is not None:
            pool_kwargs["socket_options"] = self.socket_options
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        response = super().send(
            request, stream=True, timeout=timeout, verify=verify, cert=cert, proxies=proxies
        )
        try:
            _read_capped(response, self.limits)
        except BaseException:
            response.close()
            raise
        return response


def _read_capped(response: requests.Response, limits: HttpLimits) -> None:
    """Read the whole body into ``response`` unless it is larger than the cap."""
    cap = limits.max_response_bytes
    host = urlsplit(response.url).hostname or response.url
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > cap:
        raise ResponseTooLarge(
            f"the answer from {host} is {int(declared):,} bytes, over the limit of "
            f"{_size(cap)}; it was not read. If answers this large are expected, raise "
            f"{limits.size_setting}",
            host=host,
            limit=cap,
        )
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_content(_CHUNK):
        total += len(chunk)
        if total > cap:
            raise ResponseTooLarge(
                f"the answer from {host} is over the limit of {_size(cap)}; reading stopped "
                f"there. If answers this large are expected, raise {limits.size_setting}",
                host=host,
                limit=cap,
            )
        chunks.append(chunk)
    response._content = b"".join(chunks)
    response._content_consumed = True  # type: ignore[attr-defined]


def _size(limit: int) -> str:
    mb = limit / (1024 * 1024)
    return f"{mb:g} MB" if mb >= 1 else f"{limit:,} bytes"


# -- the session ---------------------------------------------------------------------------


class BoundedSession(requests.Session):
    """A ``requests.Session`` whose calls obey :class:`HttpLimits` (see the module docstring)."""

    def __init__(
        self,
        limits: HttpLimits | None = None,
        socket_options: Sequence[tuple[int, int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.limits = limits or HttpLimits()
        adapter = BoundedAdapter(self.limits, socket_options)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """``requests.Session.request`` within the deadline (``timeout=`` may shorten it)."""
        kwargs.update(zip(_REQUEST_ARGS, args, strict=False))
        connect, read, deadline = self._bounds(kwargs.get("timeout"))
        kwargs["timeout"] = (connect, read)
        host = (
            urlsplit(url if isinstance(url, str) else url.decode("utf-8", "replace")).hostname
            or "the peer"
        )
        with _bounded(deadline, self.limits.transfer_seconds) as call:
            try:
                response = super().request(method, url, **kwargs)
            except (requests.ConnectTimeout, HttpLimitExceeded):
                raise
            except Exception:
                if call.sockets and (call.expired or time.monotonic() >= call.deadline):
                    raise self._late(host, deadline, call) from None
                raise
            if call.expired:  # cut off mid-answer: what was read cannot be trusted
                response.close()
                raise self._late(host, deadline, call)
            return response

    def _late(self, host: str, deadline: float, call: _Call) -> DeadlineExceeded:
        transfer = self.limits.transfer_seconds
        if call.answering and transfer is not None and transfer < deadline:
            return DeadlineExceeded(
                f"{host} started answering but did not finish within {transfer:g} s; it may "
                f"be stalled or trickling, and the request may have been applied. If such slow "
                f"answers are legitimate, raise {self.limits.transfer_setting or 'the limit'}",
                host=host,
                limit=transfer,
            )
        return DeadlineExceeded(
            f"{host} did not finish answering within {deadline:g} s (the whole call's "
            f"deadline); it may be stalled or trickling, and the request may have been applied. "
            f"If such slow answers are legitimate, raise {self.limits.deadline_setting}",
            host=host,
            limit=deadline,
        )

    def _bounds(self, timeout: Any) -> tuple[float, float, float]:
        """``(connect, read, deadline)``: the socket timeouts and the whole-call deadline.

        A caller's read timeout still ends a call whose peer stays silent that long.
        """
        connect = self.limits.connect_timeout_seconds
        deadline = self.limits.deadline_seconds
        read = deadline
        if isinstance(timeout, tuple | list) and len(timeout) == 2:
            own_connect, own_read = timeout
            if own_connect is not None:
                connect = min(connect, float(own_connect))
            if own_read is not None:
                read = float(own_read)
                deadline = min(deadline, connect + read)
        elif isinstance(timeout, int | float):
            connect = min(connect, float(timeout))
            read = deadline = min(deadline, float(timeout))
        return min(connect, deadline), min(read, deadline), deadline


@contextmanager
def _bounded(seconds: float, transfer: float | None) -> Iterator[_Call]:
    """Run the block as one bounded call on this thread (nested calls keep their own)."""
    call = _Call(time.monotonic() + seconds, transfer)
    previous = getattr(_current, "call", None)
    _current.call = call
    _WATCHDOG.add(call)
    try:
        yield call
    finally:
        _WATCHDOG.remove(call)
        _current.call = previous
