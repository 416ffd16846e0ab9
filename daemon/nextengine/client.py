"""The Next Engine API client: the only code in nebridge that talks to NE over HTTP.

The engine builds one :class:`NextEngineClient` per NE company (plugins never do). Every call
is a form-encoded POST to ``<api_base><path>`` with the stored token pair, made while holding
the company's lock (threads and processes), and a pair NE rotates is saved before the lock is
released. Errors map to the classes in :mod:`daemon.nextengine.errors`; the client retries only
answers where NE said nothing was applied, and requests that never left this host.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

import requests
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from daemon.nextengine.dates import format_ne_datetime
from daemon.nextengine.errors import (
    BULK_PARTIAL_CODE,
    DEFAULT_MAINTENANCE_RETRY_AFTER,
    REAUTH_CODES,
    STALE_TOKEN_CODE,
    NeBadAnswer,
    NeNotSent,
    NeOutcomeUnknown,
    NeOverloaded,
    NeQueueTimeout,
    NeReauthRequired,
    NeSystemError,
    NeTokenStale,
    NeTransient,
    NeTransportError,
    NextEngineError,
    error_from_response,
)
from daemon.nextengine.search import (
    DEFAULT_IN_MAX,
    DEFAULT_PAGE_SIZE,
    Resource,
    Row,
    Where,
    count_rows,
    iter_search,
)
from daemon.nextengine.tokens import (
    SharedTokenStore,
    TokenSet,
    TokenStore,
    company_lock,
    redact,
    redact_params,
)
from daemon.nextengine.xmlbuild import (
    FieldValue,
    OrderRef,
    OrderUpdate,
    build_bulk_receipted_xml,
    build_bulk_update_xml,
    build_update_xml,
    last_modified_text,
)
from hooks.http import BoundedSession, DeadlineExceeded, HttpLimits, ResponseTooLarge

log = logging.getLogger(__name__)

PATH_NEAUTH = "/api_neauth"
PATH_COMPANY_INFO = "/api_v1_login_company/info"
PATH_USER_INFO = "/api_v1_login_user/info"
PATH_ORDER_UPDATE = "/api_v1_receiveorder_base/update"
PATH_ORDER_BULKUPDATE = "/api_v1_receiveorder_base/bulkupdate"
PATH_ORDER_SHIPPED = "/api_v1_receiveorder_base/shipped"
PATH_ORDER_RECEIPTED = "/api_v1_receiveorder_base/receipted"
PATH_ORDER_BULKRECEIPTED = "/api_v1_receiveorder_base/bulkupdatereceipted"
PATH_GOODS_UPLOAD = "/api_v1_master_goods/upload"

QUEUE_FIELDS = (
    "que_id",
    "que_method_name",
    "que_upload_name",
    "que_status_id",
    "que_message",
    "que_creation_date",
    "que_last_modified_date",
)
GOODS_UPLOAD_METHOD = "SYOHIN_KIHON_CSV"
QUEUE_DONE, QUEUE_FAILED = 2, -1
_TOKEN_FIELDS = frozenset({"access_token", "refresh_token"})
_MESSAGE_MAX = 500
#: The largest answer read from NE: a 10,000-row search page is a few MB to some tens of MB.
DEFAULT_MAX_RESPONSE_BYTES = 100 * 1024 * 1024
#: Once NE starts answering, the whole answer must arrive within this (its silent wait before
#: answering may be long; a trickle after that is not normal).
DEFAULT_TRANSFER_TIMEOUT = 300.0

Params = Mapping[str, str | bytes]


def _socket_options() -> list[tuple[int, int, int]]:
    """TCP keep-alive every 60 s: NATs drop idle long-running calls (NE's SDK does the same)."""
    options = [*HTTPConnection.default_socket_options, (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Sleeps (seconds) before each in-client retry; the length is the number of retries."""

    overload_delays: tuple[float, ...] = (10.0, 30.0, 60.0)
    transient_delays: tuple[float, ...] = (10.0, 30.0, 60.0)
    not_sent_delays: tuple[float, ...] = (5.0, 15.0, 30.0)
    maintenance_retry_after: timedelta = DEFAULT_MAINTENANCE_RETRY_AFTER


@dataclass(frozen=True, slots=True)
class QueueResult:
    """One upload-queue row (``/api_v1_system_que``); ``status_id`` None = not visible yet."""

    que_id: str
    status_id: int | None
    message: str
    row: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """NE finished the upload (successfully or not)."""
        return self.status_id in (QUEUE_DONE, QUEUE_FAILED)

    @property
    def ok(self) -> bool:
        """NE processed the upload successfully (status 2)."""
        return self.status_id == QUEUE_DONE

    @classmethod
    def from_row(cls, row: Mapping[str, str | None]) -> QueueResult:
        """Build from a ``system_que`` search row."""
        status = row.get("que_status_id")
        return cls(
            que_id=str(row.get("que_id") or ""),
            status_id=int(status) if status not in (None, "") else None,
            message=str(row.get("que_message") or ""),
            row=dict(row),
        )


@dataclass(frozen=True, slots=True)
class BulkResult:
    """Per-order outcome of a bulk write: orders that succeeded and ``{order_id: (code, msg)}``."""

    succeeded: tuple[str, ...]
    failed: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every order succeeded."""
        return not self.failed

    def error(self, order_id: str) -> NextEngineError:
        """The error class (and so the policy) of a failed order, e.g. ``NeLockConflict``."""
        code, message = self.failed[order_id]
        return error_from_response({"result": "error", "code": code, "message": message})


def stock_delta_csv(deltas: Mapping[str, int]) -> bytes:
    """The ``syohin_code,zaiko_su`` CSV of a goods upload (UTF-8); zero deltas are omitted.

    Codes are sent exactly as given. NE matches goods codes case-insensitively *and* rewrites
    the stored spelling, so two codes differing only in case are refused here.
    """
    seen: dict[str, str] = {}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["syohin_code", "zaiko_su"])
    rows = 0
    for code, delta in deltas.items():
        if not isinstance(delta, int) or isinstance(delta, bool):
            raise TypeError(f"stock delta of {code!r} must be an int")
        if not code or code != code.strip():
            raise ValueError(f"goods code {code!r} is empty or has surrounding spaces")
        folded = code.casefold()
        if folded in seen:
            raise ValueError(f"goods codes {seen[folded]!r} and {code!r} differ only in case")
        seen[folded] = code
        if delta:
            writer.writerow([code, str(delta)])
            rows += 1
    if not rows:
        raise ValueError("no non-zero stock delta to upload")
    return buf.getvalue().encode("utf-8")


def _transport_error(exc: requests.RequestException, path: str) -> NeTransportError:
    """Split a requests failure into certainly-not-sent and maybe-applied."""
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    name = type(exc).__name__
    if isinstance(exc, requests.ConnectTimeout):
        return NeNotSent("", f"connecting to NE timed out ({name})", path=path)
    if isinstance(exc, requests.exceptions.SSLError):
        return NeNotSent("", f"TLS handshake with NE failed ({name})", path=path)
    if isinstance(exc, requests.ConnectionError) and isinstance(reason, ConnectTimeoutError):
        return NeNotSent("", f"could not connect to NE ({type(reason).__name__})", path=path)
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return NeNotSent("", f"the NE api_base URL is invalid ({name})", path=path)
    if isinstance(exc, ResponseTooLarge):
        return NeBadAnswer("", str(exc), path=path)
    if isinstance(exc, DeadlineExceeded):
        return NeOutcomeUnknown("", str(exc), path=path)
    if isinstance(exc, requests.ReadTimeout):
        return NeOutcomeUnknown("", "NE did not answer within the read timeout", path=path)
    return NeOutcomeUnknown("", f"the connection to NE broke after sending ({name})", path=path)


def _message_text(body: Mapping[str, Any], secrets: Iterable[str | None]) -> str:
    message = body.get("message")
    text = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
    text = redact(text, secrets)
    return text if len(text) <= _MESSAGE_MAX else text[:_MESSAGE_MAX] + "…"


class NextEngineClient:
    """A client for one NE company, whose token pair lives in ``token_store``.

    ``version`` goes into the User-Agent. ``sleep`` and ``monotonic`` are injectable so tests
    never wait. ``client_id``/``client_secret`` are only needed by :meth:`authorize`.
    ``timeout_grace``: after a read timeout the company lock is held this many seconds more,
    so NE can finish the abandoned request before the next one is sent. A call ends at most
    ``connect_timeout + read_timeout`` after it started (NE's ``wait_flag`` waits up to 60 min
    in silence), however slowly NE answers, and once NE sends the first byte of its answer the
    rest must arrive within ``transfer_timeout``; an answer over ``max_response_bytes`` is
    refused unread (:mod:`hooks.http`). These count as "outcome unknown". A pair NE refused
    (``002002``, ``002004``, ``redirect``) is never sent again by this client.
    """

    def __init__(
        self,
        api_base: str,
        token_store: TokenStore,
        *,
        version: str,
        client_id: str = "",
        client_secret: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 3600.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transfer_timeout: float | None = DEFAULT_TRANSFER_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
        in_max: int = DEFAULT_IN_MAX,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        observer: Callable[[str, str], None] | None = None,
        timeout_grace: float = 0.0,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.token_store = token_store
        self.client_id = client_id
        self._client_secret = client_secret
        self.timeout = (connect_timeout, read_timeout)
        self.page_size = page_size
        self.in_max = in_max
        self.retry = retry
        self._sleep = sleep
        self._monotonic = monotonic
        self._observer = observer
        self.timeout_grace = timeout_grace
        self._refused_access: str | None = None
        self._session = BoundedSession(
            HttpLimits(
                connect_timeout_seconds=connect_timeout,
                deadline_seconds=connect_timeout + read_timeout,
                max_response_bytes=max_response_bytes,
                transfer_seconds=transfer_timeout,
                deadline_setting="nextengine.read_timeout_seconds",
                size_setting="nextengine.max_response_mb",
                transfer_setting="nextengine.transfer_timeout_seconds",
            ),
            socket_options=_socket_options(),
        )
        self._session.headers["User-Agent"] = f"nebridge/{version} (+python-requests)"
        # requests re-reads the proxy environment on every call (a scan of os.environ, ~0.4 ms):
        # read it once; the daemon's environment does not change while it runs.
        self._session.proxies.update(requests.utils.get_environ_proxies(self.api_base))
        self._session.trust_env = False
        self._shared_store = isinstance(token_store, SharedTokenStore)

    def __repr__(self) -> str:
        return f"NextEngineClient({self.api_base!r}, {self.token_store!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------------

    def call(
        self,
        path: str,
        params: Params | None = None,
        *,
        wait_flag: bool = True,
        accept_codes: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """POST ``params`` to ``path`` with the company's tokens; return NE's answer.

        The answer is returned without the token fields. ``accept_codes`` are error codes
        returned instead of raised (``020500`` for bulk writes). ``wait_flag`` asks NE to wait
        out overload (batch work) instead of failing fast.
        """
        form: dict[str, str | bytes] = dict(params or {})
        if wait_flag:
            form["wait_flag"] = "1"
        return self._with_retries(lambda: self._exchange(path, form, accept_codes))

    def _with_retries(self, attempt: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``attempt``, retrying only what NE did not apply or what was never sent."""
        used: Counter[str] = Counter()
        while True:
            try:
                return attempt()
            except NeTokenStale:
                if used["stale"]:
                    raise
                used["stale"] += 1
                log.warning("Next Engine called the token pair old; reloading the stored pair")
            except (NeOverloaded, NeTransient, NeNotSent) as exc:
                delays = self._delays_for(exc)
                kind = type(exc).__name__
                if used[kind] >= len(delays):
                    raise
                delay = delays[used[kind]]
                used[kind] += 1
                log.warning(  # the message, not the class name: admins read this line
                    "Next Engine %s: %s; retry %d/%d in %.0f s",
                    exc.path or "call",
                    exc.message,
                    used[kind],
                    len(delays),
                    delay,
                )
                self._sleep(delay)

    def _delays_for(self, exc: NextEngineError) -> tuple[float, ...]:
        if isinstance(exc, NeOverloaded):
            return self.retry.overload_delays
        if isinstance(exc, NeTransient):
            return self.retry.transient_delays
        return self.retry.not_sent_delays

    def _exchange(
        self, path: str, form: Mapping[str, str | bytes], accept_codes: frozenset[str]
    ) -> dict[str, Any]:
        """One request under the company lock; a rotated pair is saved before unlocking."""
        with company_lock(self.token_store, self._shared_store):
            tokens = self.token_store.load()
            if tokens is None:
                raise NeReauthRequired(
                    "", "no Next Engine tokens are stored for this company", path=path
                )
            if tokens.access_token == self._refused_access:
                raise NeTokenStale(
                    STALE_TOKEN_CODE,
                    "Next Engine already refused the stored token pair; it is not sent again",
                    path=path,
                )
            sent = {**form, "access_token": tokens.access_token}
            sent["refresh_token"] = tokens.refresh_token
            try:
                body = self._post(path, sent)
            except NeOutcomeUnknown:
                _warn_if_rotation_lost(tokens, path)
                raise
            if _refuses_pair(body):
                self._refused_access = tokens.access_token
            rotated = TokenSet.from_response(body, tokens)
            if rotated is not None and rotated != tokens:
                self.token_store.save(rotated)
                log.info(
                    "Next Engine rotated the token pair; saved it (access token valid until %s)",
                    rotated.access_token_end_date,
                )
        secrets = (*tokens.secrets(), *(rotated.secrets() if rotated else ()))
        return self._check(path, body, accept_codes, secrets)

    def _post(self, path: str, form: Mapping[str, str | bytes]) -> dict[str, Any]:
        """Send one form POST; transport failures become NeNotSent / NeOutcomeUnknown."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("POST %s %s", path, redact_params(form))
        try:
            response = self._session.post(
                self.api_base + path, data=form, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            self._observe(path, "transport")
            error = _transport_error(exc, path)
            if isinstance(exc, requests.ReadTimeout) and self.timeout_grace > 0:
                log.warning(
                    "no answer from NE on %s in time; waiting %.0f s before the next "
                    "call so NE can finish this one",
                    path,
                    self.timeout_grace,
                )
                self._sleep(self.timeout_grace)
            raise error from None
        if response.status_code != 200:
            self._observe(path, f"http_{response.status_code}")
            raise NeBadAnswer(
                "",
                f"NE answered HTTP {response.status_code} instead of 200{_content_note(response)}",
                path=path,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._observe(path, f"http_{response.status_code}")
            raise NeBadAnswer(
                "",
                f"NE answered with something that is not a JSON object{_content_note(response)}",
                path=path,
            )
        self._observe(
            path,
            "success"
            if body.get("result") == "success"
            else str(body.get("code") or body.get("result") or "unknown"),
        )
        return body

    def _observe(self, path: str, outcome: str) -> None:
        """Report one exchange (endpoint, result code) to the metrics observer, if any."""
        if self._observer is not None:
            self._observer(path, outcome)

    def _check(
        self,
        path: str,
        body: dict[str, Any],
        accept_codes: frozenset[str],
        secrets: Iterable[str | None],
    ) -> dict[str, Any]:
        """Return a successful (or accepted) answer without tokens; raise the mapped error."""
        result = body.get("result")
        if result == "success" or (result == "error" and str(body.get("code")) in accept_codes):
            return {k: v for k, v in body.items() if k not in _TOKEN_FIELDS}
        text = _message_text(body, secrets)
        if result not in ("error", "redirect"):
            raise NeBadAnswer(
                "",
                f"NE answered with result={result!r}"
                + (f": {text}" if body.get("message") else ""),
                path=path,
            )
        log.debug("NE %s on %s: %s", body.get("code"), path, text)
        raise error_from_response(
            body, path=path, message=text, retry_after=self.retry.maintenance_retry_after
        )

    # -- authorisation and account ------------------------------------------------------------

    def authorize(self, uid: str, state: str) -> TokenSet:
        """Exchange the ``uid``/``state`` of NE's sign-in redirect for tokens and store them."""
        if not self.client_id or not self._client_secret:
            raise ValueError("client_id and client_secret are needed to connect a company")
        form = {
            "uid": uid,
            "state": state,
            "client_id": self.client_id,
            "client_secret": self._client_secret,
        }
        secrets = (uid, state, self._client_secret)

        saved: list[TokenSet] = []

        def attempt() -> dict[str, Any]:
            with company_lock(self.token_store):
                body = self._post(PATH_NEAUTH, form)
                if body.get("result") == "success":
                    tokens = TokenSet.from_response(body, None)
                    if tokens is None:
                        raise NeOutcomeUnknown(
                            "", "the sign-in answer had no tokens", path=PATH_NEAUTH
                        )
                    self.token_store.save(tokens)
                    saved.append(tokens)
                    return body
            return self._check(PATH_NEAUTH, body, frozenset(), (*secrets, *_tokens_of(body)))

        self._with_retries(attempt)
        tokens = saved[-1]
        log.info("Connected Next Engine company %s (%s)", tokens.company_id, tokens.company_name)
        return tokens

    def company_info(self) -> dict[str, Any]:
        """``/api_v1_login_company/info`` ``data[0]`` (cheap; also keeps the tokens alive)."""
        return _first(self.call(PATH_COMPANY_INFO), PATH_COMPANY_INFO)

    def user_info(self) -> dict[str, Any]:
        """``/api_v1_login_user/info`` ``data[0]`` (the person who connected the app)."""
        return _first(self.call(PATH_USER_INFO), PATH_USER_INFO)

    # -- searches -----------------------------------------------------------------------------

    def _poster(self, wait_flag: bool) -> Callable[[str, Mapping[str, str]], Mapping[str, Any]]:
        def post(path: str, params: Mapping[str, str]) -> Mapping[str, Any]:
            body = self.call(path, params, wait_flag=wait_flag)
            _check_read_answer(path, params, body)
            return body

        return post

    def search(
        self,
        resource: str,
        fields: str | Iterable[str],
        *,
        where: Where | None = None,
        sort: str | None = None,
        page_size: int | None = None,
        wait_flag: bool = True,
    ) -> Iterator[Row]:
        """Yield every row of ``/api_v1_<resource>/search`` across pages.

        ``sort`` is ``"<field>-asc"`` or ``"<field>-desc"`` (see :func:`~.search.asc`).
        Rows are dicts of NE's strings (or None). Each page is a separate locked request.
        """
        return iter_search(
            self._poster(wait_flag),
            resource,
            fields,
            where=where,
            sort=sort,
            page_size=page_size or self.page_size,
            in_max=self.in_max,
        )

    def count(self, resource: str, where: Where | None = None, *, wait_flag: bool = True) -> int:
        """The number of rows ``/api_v1_<resource>/count`` reports for ``where``."""
        return count_rows(self._poster(wait_flag), resource, where=where, in_max=self.in_max)

    def search_orders(
        self, fields: str | Iterable[str], *, where: Where | None = None, sort: str | None = None
    ) -> Iterator[Row]:
        """Order headers (``receiveorder_base``)."""
        return self.search(Resource.RECEIVEORDER_BASE, fields, where=where, sort=sort)

    def search_order_rows(
        self, fields: str | Iterable[str], *, where: Where | None = None, sort: str | None = None
    ) -> Iterator[Row]:
        """Order rows (``receiveorder_row``); conditions and fields may name base fields too."""
        return self.search(Resource.RECEIVEORDER_ROW, fields, where=where, sort=sort)

    def search_goods(
        self, fields: str | Iterable[str], *, where: Where | None = None, sort: str | None = None
    ) -> Iterator[Row]:
        """Goods master (``master_goods``); stock fields may be joined in."""
        return self.search(Resource.MASTER_GOODS, fields, where=where, sort=sort)

    def search_stock(
        self, fields: str | Iterable[str], *, where: Where | None = None, sort: str | None = None
    ) -> Iterator[Row]:
        """Stock master (``master_stock``)."""
        return self.search(Resource.MASTER_STOCK, fields, where=where, sort=sort)

    def search_queue(
        self, fields: str | Iterable[str], *, where: Where | None = None, sort: str | None = None
    ) -> Iterator[Row]:
        """Upload queue (``system_que``)."""
        return self.search(Resource.SYSTEM_QUE, fields, where=where, sort=sort)

    # -- order writes -------------------------------------------------------------------------

    def update_order(
        self,
        order_id: str | int,
        last_modified: str | datetime,
        base_fields: Mapping[str, FieldValue],
        *,
        shipped_update: bool = False,
        wait_flag: bool = True,
    ) -> dict[str, Any]:
        """Set ``base_fields`` of one order (``update``); 020006 -> :class:`NeLockConflict`.

        ``shipped_update`` allows changing a shipped (50) order. Re-read the order before the
        next write: its last-modified date changed.
        """
        params = {
            "receive_order_id": str(order_id),
            "receive_order_last_modified_date": last_modified_text(last_modified),
            "data": build_update_xml(base_fields),
        }
        if shipped_update:
            params["receive_order_shipped_update_flag"] = "1"
        return self.call(PATH_ORDER_UPDATE, params, wait_flag=wait_flag)

    def bulk_update(
        self,
        items: Sequence[OrderUpdate],
        *,
        data_type: Literal["gz", "xml"] = "gz",
        shipped_update: bool = False,
        wait_flag: bool = True,
    ) -> BulkResult:
        """Update many orders in one call; per-order failures come back in the result.

        A failure of the whole request (maintenance, bad XML, ...) raises instead.
        """
        ids = _order_ids(items)
        if not ids:
            return BulkResult(())
        xml = build_bulk_update_xml(items)
        params: dict[str, str | bytes] = {
            "data_type": data_type,
            "data": gzip.compress(xml.encode("utf-8")) if data_type == "gz" else xml,
        }
        if shipped_update:
            params["receive_order_shipped_update_flag"] = "1"
        body = self.call(
            PATH_ORDER_BULKUPDATE,
            params,
            wait_flag=wait_flag,
            accept_codes=frozenset({BULK_PARTIAL_CODE}),
        )
        return _bulk_result(PATH_ORDER_BULKUPDATE, body, ids)

    def shipped(
        self, order_id: str | int, last_modified: str | datetime, *, wait_flag: bool = True
    ) -> dict[str, Any]:
        """Confirm shipment of one order (-> status 50); NE has no bulk form of this."""
        return self.call(
            PATH_ORDER_SHIPPED, _order_params(order_id, last_modified), wait_flag=wait_flag
        )

    def receipted(
        self,
        order_id: str | int,
        last_modified: str | datetime,
        *,
        label_print_flag: int | None = None,
        wait_flag: bool = True,
    ) -> dict[str, Any]:
        """Mark one order's delivery note printed (20 -> 40: handed to the warehouse)."""
        params = _order_params(order_id, last_modified)
        if label_print_flag is not None:
            params["receive_order_label_print_flag"] = str(int(label_print_flag))
        return self.call(PATH_ORDER_RECEIPTED, params, wait_flag=wait_flag)

    def bulk_receipted(
        self,
        items: Sequence[OrderRef],
        *,
        label_print_flag: int | None = None,
        wait_flag: bool = True,
    ) -> BulkResult:
        """Mark many orders printed (20 -> 40) in one call; per-order results as bulk_update."""
        ids = _order_ids(items)
        if not ids:
            return BulkResult(())
        params = {"data_type": "xml", "data": build_bulk_receipted_xml(items, label_print_flag)}
        body = self.call(
            PATH_ORDER_BULKRECEIPTED,
            params,
            wait_flag=wait_flag,
            accept_codes=frozenset({BULK_PARTIAL_CODE}),
        )
        return _bulk_result(PATH_ORDER_BULKRECEIPTED, body, ids)

    # -- stock upload and queue ---------------------------------------------------------------

    def upload_stock_deltas(
        self, deltas: Mapping[str, int], *, gz: bool = True, wait_flag: bool = True
    ) -> str:
        """Add ``deltas`` to NE stock via the goods upload; return the upload's ``que_id``.

        ``zaiko_su`` is additive, so an upload must never be repeated blindly: after
        :class:`NeOutcomeUnknown` use :meth:`find_queue_rows` to see whether NE queued it.
        """
        data = stock_delta_csv(deltas)
        params: dict[str, str | bytes] = (
            {"data_type": "gz", "data": gzip.compress(data)}
            if gz
            else {"data_type": "csv", "data": data.decode("utf-8")}
        )
        body = self.call(PATH_GOODS_UPLOAD, params, wait_flag=wait_flag)
        que_id = body.get("que_id")
        if que_id in (None, ""):
            raise NeOutcomeUnknown(
                "", "NE accepted the upload but sent no que_id", path=PATH_GOODS_UPLOAD
            )
        return str(que_id)

    def queue_status(self, que_id: str) -> QueueResult:
        """The current state of one upload-queue row."""
        rows = list(self.search_queue(QUEUE_FIELDS, where=Where().eq("que_id", que_id)))
        return QueueResult.from_row(rows[0]) if rows else QueueResult(que_id, None, "")

    def wait_for_queue(
        self,
        que_id: str,
        poll_interval: float = 5.0,
        timeout: float = 300.0,
        *,
        on_progress: Callable[[QueueResult], None] | None = None,
    ) -> QueueResult:
        """Poll the queue until NE finished (status 2 or -1); :class:`NeQueueTimeout` after
        ``timeout`` seconds. A failed upload (-1) is returned, not raised: see ``.ok``."""
        deadline = self._monotonic() + timeout
        while True:
            result = self.queue_status(que_id)
            if on_progress is not None:
                on_progress(result)
            if result.done:
                return result
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise NeQueueTimeout(que_id, result.status_id, path="/api_v1_system_que/search")
            self._sleep(min(poll_interval, remaining))

    def find_queue_rows(
        self,
        created_from: datetime,
        created_to: datetime,
        method: str = GOODS_UPLOAD_METHOD,
    ) -> list[QueueResult]:
        """Queue rows of ``method`` created in ``[created_from, created_to]``, oldest first.

        Used to reconcile an upload whose answer was lost (did NE queue it or not?).
        """
        where = (
            Where()
            .gte("que_creation_date", format_ne_datetime(created_from))
            .lte("que_creation_date", format_ne_datetime(created_to))
            .eq("que_method_name", method)
        )
        rows = self.search_queue(QUEUE_FIELDS, where=where, sort="que_id-asc")
        return [QueueResult.from_row(row) for row in rows]


def _bulk_result(path: str, body: Mapping[str, Any], ids: Sequence[str]) -> BulkResult:
    """Per-order outcome of a bulk answer (success, or 020500 with the per-order list)."""
    if body.get("result") == "success":
        return BulkResult(tuple(ids))
    entries = body.get("message")
    if not isinstance(entries, list):
        raise NeOutcomeUnknown(
            BULK_PARTIAL_CODE, "partial failure without a per-order list", path=path
        )
    failed: dict[str, tuple[str, str]] = {}
    for entry in entries:
        if isinstance(entry, Mapping):
            order_id = str(entry.get("receive_order_id"))
            failed[order_id] = (str(entry.get("code") or ""), str(entry.get("message") or ""))
    return BulkResult(tuple(i for i in ids if i not in failed), failed)


def _check_read_answer(path: str, params: Mapping[str, str], body: Mapping[str, Any]) -> None:
    """Refuse a search or count answer that lacks what was asked for (never read as "none").

    A search answer must hold a ``data`` list of rows, each with every requested field as a
    string or null; a count answer a numeric ``count``.
    """
    if path.endswith("/count"):
        count = body.get("count")
        if not (isinstance(count, str | int) and str(count).isdigit()):
            raise NeBadAnswer("", f"the count answer has no numeric 'count' ({count!r})", path=path)
        return
    data = body.get("data")
    if not isinstance(data, list):
        raise NeBadAnswer("", "the search answer has no 'data' list", path=path)
    fields = [f for f in params.get("fields", "").split(",") if f]
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise NeBadAnswer("", f"row {index} of the search answer is not an object", path=path)
        missing = [f for f in fields if f not in row]
        if missing:
            raise NeBadAnswer(
                "",
                f"row {index} of the search answer lacks field(s) {', '.join(missing)}",
                path=path,
            )
        wrong = [f for f in fields if not isinstance(row[f], str | None)]
        if wrong:
            raise NeBadAnswer(
                "",
                f"row {index} of the search answer has non-text value(s) in {', '.join(wrong)}",
                path=path,
            )


def _refuses_pair(body: Mapping[str, Any]) -> bool:
    """NE answered that the token pair sent is dead or must be signed in again."""
    code = str(body.get("code") or "")
    return body.get("result") == "redirect" or (
        body.get("result") == "error" and (code == STALE_TOKEN_CODE or code in REAUTH_CODES)
    )


def _warn_if_rotation_lost(tokens: TokenSet, path: str) -> None:
    """An answer to a call made with an expired access token was lost: NE may have rotated the
    pair in it, and then the stored pair is dead (only re-connecting helps)."""
    end = tokens.access_token_end_date
    if end is not None and end <= datetime.now(UTC):
        log.warning(
            "the answer on %s was lost while the access token had expired: if Next "
            "Engine rotated the pair in it, the stored pair is dead and the next call "
            "will ask for `nebridge connect`",
            path,
        )


def _content_note(response: requests.Response) -> str:
    """`` (text/html, 1234 bytes)``: what came instead of NE's JSON (never the body itself)."""
    kind = response.headers.get("Content-Type") or "no content type"
    return f" ({kind}, {len(response.content)} bytes)"


def _tokens_of(body: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(body[k]) for k in _TOKEN_FIELDS if body.get(k))


def _first(body: Mapping[str, Any], path: str) -> dict[str, Any]:
    data = body.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise NeSystemError("", "NE's answer had no data row", path=path)
    return data[0]


def _order_params(order_id: str | int, last_modified: str | datetime) -> dict[str, str]:
    return {
        "receive_order_id": str(order_id),
        "receive_order_last_modified_date": last_modified_text(last_modified),
    }


def _order_ids(items: Sequence[OrderRef] | Sequence[OrderUpdate]) -> list[str]:
    ids = [str(item.order_id) for item in items]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"orders listed twice in one bulk call: {', '.join(duplicates)}")
    return ids
