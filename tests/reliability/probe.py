"""What the campaign sees of every Next Engine call: faults drawn, answers lost, and hooks.

The sandbox runs in the campaign's process. :class:`Probe` wraps three of its seams (the
traffic counter, the fault draw and the HTTP handler's call function) to record, per call,
which faults were injected and whether the answer reached the client, to add *timeouts* (a
latency longer than the daemon's read timeout on a seeded share of calls, a larger share of
stock uploads: NE applies the call after the client gave up), and to tell the kill triggers
when a call was answered.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import daemon.sandbox.server as sandbox_server
from daemon.sandbox import SandboxServer
from daemon.sandbox import api as sandbox_api
from daemon.sandbox.faults import FaultDecision

WRITE_PATHS = frozenset(
    {
        "/api_v1_receiveorder_base/update",
        "/api_v1_receiveorder_base/bulkupdate",
        "/api_v1_receiveorder_base/shipped",
        "/api_v1_receiveorder_base/receipted",
        "/api_v1_receiveorder_base/bulkupdatereceipted",
        "/api_v1_master_goods/upload",
    }
)
QUE_SEARCH = "/api_v1_system_que/search"
UPLOAD = "/api_v1_master_goods/upload"
ROW_SEARCH = "/api_v1_receiveorder_row/search"
CODE_KIND = {
    "003001": "overload",
    "003002": "overload",
    "002007": "maintenance",
    "003004": "maintenance",
    "003005": "maintenance",
    "008010": "maintenance",
    "000001": "transient 000001",
    "999999": "system error 999999",
}

Listener = Callable[["CallRecord"], None]


@dataclass
class CallRecord:
    """One API call as the sandbox handled it."""

    call_no: int
    path: str
    faults: list[str] = field(default_factory=list)
    answered: bool = False


@dataclass
class Probe:
    """Hooks on one in-process sandbox; use as a context manager around the campaign."""

    sandbox: SandboxServer
    seed: int = 0
    timeout_rate: float = 0.0
    upload_timeout_rate: float = 0.0
    timeout_latency_s: float = 0.0
    calls: dict[int, CallRecord] = field(default_factory=dict)
    _listeners: list[Listener] = field(default_factory=list)
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def listen(self, listener: Listener) -> None:
        """Call ``listener(record)`` after every answered or dropped API call."""
        with self._lock:
            self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @contextmanager
    def installed(self) -> Iterator[Probe]:
        """Wrap the sandbox's seams for the duration of the block."""
        traffic, faults = self.sandbox.state.traffic, self.sandbox.state.faults
        original_handle = sandbox_api.handle_api_call
        begin, decide = traffic.begin, faults.decide

        def counted_begin(company_id: str, path: str) -> int:
            number = begin(company_id, path)
            self._local.call_no = number
            with self._lock:
                self.calls[number] = CallRecord(number, path)
            return number

        def drawn(path: str, **kw: Any) -> FaultDecision:
            decision = decide(path, **kw)
            record = self.calls[self._local.call_no]
            with self._lock:
                rate = self.upload_timeout_rate if path == UPLOAD else self.timeout_rate
                if rate and self._rng.random() < rate:
                    decision = dataclasses.replace(decision, latency_s=self.timeout_latency_s)
                    record.faults.append("timeout")
            if decision.drop_before:
                record.faults.append("dropped before applying")
            if decision.error_code:
                record.faults.append(CODE_KIND.get(decision.error_code, decision.error_code))
            if decision.drop_after:
                record.faults.append("dropped after applying")
            if decision.human_race:
                record.faults.append("concurrent edit (020006)")
            if decision.expire_token:
                record.faults.append("token expiry")
            return decision

        def handled(state: Any, path: str, params: Any, raw: Any, sleep: Any) -> bytes | None:
            payload = original_handle(state, path, params, raw, sleep)
            number = getattr(self._local, "call_no", None)
            record = self.calls.get(number) if number is not None else None
            if record is not None:
                record.answered = payload is not None
                with self._lock:
                    listeners = list(self._listeners)
                for listener in listeners:
                    listener(record)
            return payload

        httpd: Any = getattr(self.sandbox, "_httpd", None)
        report_error = httpd.handle_error if httpd is not None else None

        def quiet(request: Any, client_address: Any) -> None:
            """A killed daemon resets its connections: expected here, not worth a traceback."""
            if not isinstance(sys.exc_info()[1], ConnectionError) and report_error is not None:
                report_error(request, client_address)

        traffic.begin = counted_begin  # type: ignore[method-assign]
        faults.decide = drawn  # type: ignore[method-assign]
        sandbox_server.handle_api_call = handled  # type: ignore[attr-defined]
        if httpd is not None:
            httpd.handle_error = quiet
        try:
            yield self
        finally:
            sandbox_server.handle_api_call = original_handle  # type: ignore[attr-defined]
            del traffic.begin
            del faults.decide
            if httpd is not None:
                del httpd.handle_error

    # -- figures ------------------------------------------------------------------------------

    def fault_counts(self) -> Counter[str]:
        """Faults injected, by kind (a call may carry several)."""
        with self._lock:
            return Counter(kind for r in self.calls.values() for kind in r.faults)

    def failing_share(self) -> float:
        """Share of calls that met at least one failure (token expiry alone is no failure)."""
        with self._lock:
            records = list(self.calls.values())
        failing = [r for r in records if set(r.faults) - {"token expiry"}]
        return len(failing) / len(records) if records else 0.0

    def answer_reached(self, call_no: int) -> bool:
        """Whether the client got the answer of this call (not dropped, not timed out)."""
        with self._lock:
            record = self.calls.get(call_no)
            return record is not None and record.answered and "timeout" not in record.faults

    def faults_of(self, call_no: int) -> list[str]:
        """The faults injected into one call."""
        with self._lock:
            record = self.calls.get(call_no)
            return list(record.faults) if record else []

    def lost_rotations(self) -> list[int]:
        """Call numbers that rotated the token pair but whose answer never reached the client
        (dropped after applying, or answered after the client's read timeout)."""
        rotating = {
            u.call_no for u in self.sandbox.state.traffic.token_uses() if u.verdict == "rotated"
        }
        with self._lock:
            return sorted(
                n
                for n in rotating
                if n in self.calls
                and (not self.calls[n].answered or "timeout" in self.calls[n].faults)
            )
