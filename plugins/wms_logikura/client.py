"""The Logikura REST client: bearer tokens, the rate limit, paging and clear errors.

* Every request first takes a slot from the :class:`~.ratelimit.RateLimiter`; the
  ``X-RateLimit-Remaining`` / ``X-Rate-Limit-Reset`` headers of every answer are honoured, and
  both 429 (the live service) and 499 (the SPEC) mean "slow down": wait, then send again
  (Logikura did not process the request).
* 401 refreshes the grant once and repeats the request; a second 401, or 403 (scope), is an
  auth error saying what to do.
* Reads (GET) are repeated after a dropped connection or a 5xx; writes never are — their
  outcome is unknown, so the error says so (``ambiguous``) and callers reconcile first.
  ``ctx.http`` (:mod:`hooks.http`) bounds every call: ``timeout_seconds`` is the whole call's
  deadline, and an answer over the size cap is an error that is not read again.
* Lists follow the ``Link: <…>; rel="next"`` header to the end, never to another host, and
  never to a page already read (a repeating or looping link ends the read with an error, as
  does a list longer than :data:`MAX_PAGES` pages).
* Inside :meth:`LogikuraClient.bulk` (an order import creating schedules) requests take the
  rate limiter's bulk lane and stop waiting when the engine stops (:mod:`.ratelimit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from hooks.http import ResponseTooLarge
from plugins.wms_logikura.auth import Authorizer
from plugins.wms_logikura.config import LogikuraConfig
from plugins.wms_logikura.errors import (
    RECONNECT_HINT,
    LogikuraAuthError,
    LogikuraError,
    LogikuraRefused,
    LogikuraUnavailable,
)
from plugins.wms_logikura.ratelimit import DEFAULT_PAUSE_SECONDS, RateLimiter

Json = dict[str, Any]
RATE_LIMITED = frozenset({429, 499})
MAX_RATE_RETRIES = 5
READ_RETRIES = 2
MAX_PAGES = 1000
_Lane = tuple[bool, Callable[[], bool] | None]  # (bulk, should_stop)
_LANE: ContextVar[_Lane] = ContextVar("logikura_lane", default=(False, None))
_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


def _error_text(body: Any) -> str:
    """Logikura's own message from an error body (``error``, ``errors`` or the raw text)."""
    if isinstance(body, dict):
        if body.get("error"):
            return str(body["error"])
        if body.get("errors"):
            errors = body["errors"]
            return "; ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
    return str(body)[:300] if body else "no details"


def _page_key(url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A page's identity: its path and sorted query, however the link spells them (no
    ``page`` is page 1, as in Logikura's ``?page=N`` links)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.setdefault("page", "1")
    return parts.path, tuple(sorted(query.items()))


def _reset_header(answer: requests.Response) -> str | None:
    return answer.headers.get("X-Rate-Limit-Reset") or answer.headers.get("X-RateLimit-Reset")


class LogikuraClient:
    """Calls the Logikura API for one account (see the module docstring)."""

    def __init__(
        self,
        config: LogikuraConfig,
        session: requests.Session,
        authorizer: Authorizer,
        limiter: RateLimiter,
        sleep: Callable[[float], None],
        log: _Log,
    ) -> None:
        self.config = config
        self.session = session
        self.auth = authorizer
        self.limiter = limiter
        self.sleep = sleep
        self.log = log
        base = urlsplit(config.api_base)
        self._origin = (base.scheme, base.netloc)

    @contextmanager
    def bulk(self, should_stop: Callable[[], bool]) -> Iterator[None]:
        """Requests of this thread inside the block are bulk work, which yields to history
        reads and stops waiting with :class:`~.ratelimit.TurnOver` once ``should_stop()``."""
        token = _LANE.set((True, should_stop))
        try:
            yield
        finally:
            _LANE.reset(token)

    # ---------------------------------------------------------------- verbs
    def get(self, path: str, params: dict[str, str] | None = None) -> Json:
        """GET one resource."""
        return self._json(self.request("GET", path, params=params))

    def post(self, path: str, body: Json) -> Json:
        """POST (create); never repeated after an unknown outcome."""
        return self._json(self.request("POST", path, body=body))

    def get_all(self, path: str, key: str, params: dict[str, str] | None = None) -> Iterator[Json]:
        """Every record of a list, page after page, following ``rel="next"`` to the end."""
        url: str = path
        query = params
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        while True:
            answer = self.request("GET", url, params=query)
            seen.add(_page_key(answer.url))
            data = self._json(answer)
            records = data.get(key)
            if not isinstance(records, list):
                raise LogikuraError(
                    f"Logikura answered {path} without a {key!r} list; "
                    "is wms.logikura.api_base right?"
                )
            yield from records
            following = answer.links.get("next", {}).get("url")
            if not following:
                return
            target = urlsplit(following)
            if (target.scheme, target.netloc) != self._origin:
                raise LogikuraError(
                    f"Logikura's next-page link for {path} points to "
                    f"{target.netloc}, not {self._origin[1]}; not followed"
                )
            looped = _page_key(following) in seen
            if looped or len(seen) >= MAX_PAGES:
                raise LogikuraError(
                    f"Logikura's next-page links for {path} "
                    + (
                        "lead back to a page already read"
                        if looped
                        else f"go on past {MAX_PAGES} pages"
                    )
                    + f" ({urlsplit(following).query or 'no page number'}); the list was "
                    "not read to its end. Nebridge tries again at its next run; if this "
                    "persists, report it to Logikura support"
                )
            url, query = following, None

    # ---------------------------------------------------------------- the core
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Json | None = None,
    ) -> requests.Response:
        """Send one request with the rules of the module docstring; 2xx answers only."""
        url = path if path.startswith("http") else f"{self.config.api_base}{path}"
        shown = urlsplit(url).path
        refreshed = False
        rate_retries = read_retries = 0
        bulk, stop = _LANE.get()
        while True:
            token = self.auth.access_token()
            self.limiter.acquire(bulk=bulk, stop=stop)
            try:
                answer = self.session.request(
                    method,
                    url,
                    params=params,
                    json=body,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    timeout=self.config.timeout_seconds,
                )
            except requests.RequestException as exc:
                if isinstance(exc, ResponseTooLarge):  # the same answer again would be too
                    raise LogikuraUnavailable(
                        f"{method} {shown}: {exc}", ambiguous=method != "GET"
                    ) from None
                if method == "GET" and read_retries < READ_RETRIES:
                    read_retries += 1
                    self.sleep(float(read_retries))
                    continue
                raise LogikuraUnavailable(
                    f"Logikura did not answer {method} {shown} ({type(exc).__name__})"
                    + (
                        "; it may have been applied, nebridge checks before sending again"
                        if method != "GET"
                        else "; nebridge tries again later"
                    ),
                    ambiguous=method != "GET",
                ) from None
            self._note_budget(answer)
            status = answer.status_code
            if status in RATE_LIMITED:
                rate_retries += 1
                pause = self.limiter.reset_seconds(_reset_header(answer)) or DEFAULT_PAUSE_SECONDS
                self.limiter.pause(pause)
                self.log.warning(
                    "Logikura answered %d (too many requests) to %s %s; pausing %.0f s",
                    status,
                    method,
                    shown,
                    pause,
                )
                if rate_retries > MAX_RATE_RETRIES:
                    raise LogikuraUnavailable(
                        f"Logikura keeps answering {status} (too many "
                        "requests); nebridge goes on at its next run"
                    )
                continue
            if status == 401 and not refreshed:
                refreshed = True
                self.auth.refresh(token, rejected=True)
                continue
            if status < 400:
                return answer
            if status >= 500 and method == "GET" and read_retries < READ_RETRIES:
                read_retries += 1
                self.sleep(float(read_retries))
                continue
            raise self._error(method, shown, answer)

    def _note_budget(self, answer: requests.Response) -> None:
        remaining = answer.headers.get("X-RateLimit-Remaining")
        if remaining is not None and remaining.strip() in ("0", "-1"):
            reset = self.limiter.reset_seconds(_reset_header(answer))
            self.limiter.pause(DEFAULT_PAUSE_SECONDS if reset is None else reset)

    def _error(self, method: str, shown: str, answer: requests.Response) -> LogikuraError:
        status = answer.status_code
        try:
            body: Any = answer.json()
        except ValueError:
            body = answer.text[:300]
        text = _error_text(body)
        if status == 401:
            return LogikuraAuthError(
                f"Logikura refused the access token for {method} {shown} "
                f"even after a refresh ({text}); {RECONNECT_HINT}"
            )
        if status == 403:
            return LogikuraAuthError(
                f"Logikura refused {method} {shown}: the app lacks a "
                f"scope ({text}); register it with 'read' and 'write' and "
                "run `nebridge wms connect`"
            )
        if status == 404:
            return LogikuraRefused(
                f"Logikura has no {shown} ({text}); check "
                "wms.logikura.api_base or whether the record was deleted",
                status,
                body,
            )
        if status >= 500:
            return LogikuraUnavailable(
                f"Logikura answered HTTP {status} to {method} {shown}"
                + (
                    "; it may have been applied, nebridge checks before sending again"
                    if method != "GET"
                    else "; nebridge tries again later"
                ),
                ambiguous=method != "GET",
            )
        return LogikuraRefused(
            f"Logikura refused {method} {shown} (HTTP {status}): {text}", status, body
        )

    @staticmethod
    def _json(answer: requests.Response) -> Json:
        if not answer.content:
            return {}
        try:
            data = answer.json()
        except ValueError:
            raise LogikuraError(
                f"Logikura answered {urlsplit(answer.url).path} with "
                "something that is not JSON; is wms.logikura.api_base "
                "right?"
            ) from None
        if not isinstance(data, dict):
            raise LogikuraError(
                f"Logikura answered {urlsplit(answer.url).path} with JSON that is not an object"
            )
        return data
