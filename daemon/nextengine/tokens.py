"""Next Engine tokens: the token pair, where it is kept, the per-company lock and redaction.

NE rotates the access/refresh pair when the access token expires; the first request sent with
the expired pair gets the new one and the old pair is dead from then on. Hence: only one
request per company may be in flight (threads *and* processes), each request reads the pair
from the store under that lock, and a rotated pair is saved before the lock is released.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from daemon.nextengine.dates import parse_ne_datetime
from daemon.nextengine.errors import NeReauthRequired
from hooks.files import locked_file, write_private

REDACTED = "***"
SECRET_PARAMS = frozenset({"access_token", "refresh_token", "client_secret", "uid", "state"})
_SHOWN_CHARS = 120


@dataclass(frozen=True, slots=True, repr=False)
class TokenSet:
    """One NE token pair with its end dates and the company it belongs to.

    ``company_id`` is NE's platform id of the company (``company_ne_id``).
    ``repr`` never shows the tokens.
    """

    access_token: str
    refresh_token: str
    access_token_end_date: datetime | None = None
    refresh_token_end_date: datetime | None = None
    company_id: str | None = None
    company_name: str | None = None

    def __repr__(self) -> str:
        end = self.access_token_end_date.isoformat() if self.access_token_end_date else None
        refresh_end = (
            self.refresh_token_end_date.isoformat() if self.refresh_token_end_date else None
        )
        return (
            f"TokenSet(access_token={REDACTED}, refresh_token={REDACTED}, "
            f"access_token_end_date={end!r}, refresh_token_end_date={refresh_end!r}, "
            f"company_id={self.company_id!r}, company_name={self.company_name!r})"
        )

    __str__ = __repr__

    def secrets(self) -> tuple[str, str]:
        """The values that must never be logged."""
        return (self.access_token, self.refresh_token)

    def to_json(self) -> dict[str, str | None]:
        """The JSON form kept in the token file (end dates as ISO 8601 with offset)."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "access_token_end_date": _iso(self.access_token_end_date),
            "refresh_token_end_date": _iso(self.refresh_token_end_date),
            "company_id": self.company_id,
            "company_name": self.company_name,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenSet:
        """Inverse of :meth:`to_json`; raises ``KeyError``/``ValueError`` on a bad document."""
        access, refresh = data["access_token"], data["refresh_token"]
        if not isinstance(access, str) or not isinstance(refresh, str) or not access:
            raise ValueError("access_token and refresh_token must be non-empty strings")
        return cls(
            access_token=access,
            refresh_token=refresh,
            access_token_end_date=_from_iso(data.get("access_token_end_date")),
            refresh_token_end_date=_from_iso(data.get("refresh_token_end_date")),
            company_id=data.get("company_id"),
            company_name=data.get("company_name"),
        )

    @classmethod
    def from_response(cls, body: Mapping[str, Any], previous: TokenSet | None) -> TokenSet | None:
        """The pair an NE response carries, with ``previous``'s company; ``None`` if absent.

        ``api_neauth`` answers also carry the company (``company_ne_id``, ``company_name``).
        """
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not (isinstance(access, str) and access and isinstance(refresh, str) and refresh):
            return None
        base = previous or cls(access_token=access, refresh_token=refresh)
        company_id = body.get("company_ne_id")
        company_name = body.get("company_name")
        return replace(
            base,
            access_token=access,
            refresh_token=refresh,
            access_token_end_date=_end_date(body.get("access_token_end_date")),
            refresh_token_end_date=_end_date(body.get("refresh_token_end_date")),
            company_id=str(company_id) if company_id else base.company_id,
            company_name=str(company_name) if company_name else base.company_name,
        )


def _end_date(value: Any) -> datetime | None:
    """An end date from a response; unreadable ones are dropped, never fatal: the pair
    itself must be saved whatever NE did to its dates."""
    try:
        return _parse_end_date(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _from_iso(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"token end date without a time zone: {value!r}")
    return parsed


@runtime_checkable
class TokenStore(Protocol):
    """Where one company's token pair is kept."""

    def load(self) -> TokenSet | None:
        """The current pair, or ``None`` when the company was never connected."""
        ...

    def save(self, tokens: TokenSet) -> None:
        """Replace the pair durably (the next ``load`` must return it, even after a crash)."""
        ...


@runtime_checkable
class SharedTokenStore(TokenStore, Protocol):
    """A store that other store objects or processes may share (e.g. a file).

    ``lock_key`` is equal for every store object that reaches the same pair;
    ``process_lock`` excludes other processes (the CLI and the daemon) for its duration.
    """

    @property
    def lock_key(self) -> str:
        """Identity of the stored pair, shared by all store objects reaching it."""
        ...

    def process_lock(self) -> AbstractContextManager[None]:
        """Hold an exclusive cross-process lock on the pair."""
        ...


class TokenFileError(NeReauthRequired):
    """The token file exists but cannot be read as a token pair."""


class FileTokenStore:
    """Tokens in a JSON file (mode 0600), replaced atomically; ``<file>.lock`` for processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_key = f"file:{self.path.resolve()}"
        self._loaded: tuple[tuple[int, int, int], TokenSet] | None = None

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"

    @property
    def lock_key(self) -> str:
        """The resolved file path: two stores on one file share one lock."""
        return self._lock_key

    @property
    def lock_path(self) -> Path:
        """The file ``flock``-ed by :meth:`process_lock`."""
        return self.path.with_name(self.path.name + ".lock")

    def load(self) -> TokenSet | None:
        """Read the pair; ``None`` if the file does not exist."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._loaded is not None and self._loaded[0] == identity:
            return self._loaded[1]
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            tokens = TokenSet.from_json(json.loads(raw))
            self._loaded = (identity, tokens)
            return tokens
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenFileError(
                "", f"token file {self.path} is unreadable ({type(exc).__name__})"
            ) from None

    def save(self, tokens: TokenSet) -> None:
        """Write a temp file (0600, fsync) next to the target, then ``os.replace`` it."""
        payload = json.dumps(tokens.to_json(), ensure_ascii=False, indent=2).encode("utf-8")
        write_private(self.path, payload)

    def process_lock(self) -> AbstractContextManager[None]:
        """``flock`` ``<file>.lock`` exclusively (blocks until the other process is done)."""
        return locked_file(self.lock_path)


_REGISTRY_GUARD = threading.Lock()
_COMPANY_LOCKS: dict[str, threading.Lock] = {}


@functools.lru_cache(maxsize=64)
def _parse_end_date(value: str) -> datetime | None:
    return parse_ne_datetime(value)


def store_lock_key(store: TokenStore) -> str:
    """The registry key of ``store``: its ``lock_key`` if shared, else the object itself."""
    if isinstance(store, SharedTokenStore):
        return store.lock_key
    return f"object:{id(store)}"


def _thread_lock(key: str) -> threading.Lock:
    with _REGISTRY_GUARD:
        lock = _COMPANY_LOCKS.get(key)
        if lock is None:
            lock = _COMPANY_LOCKS[key] = threading.Lock()
        return lock


@contextmanager
def company_lock(store: TokenStore, shared: bool | None = None) -> Iterator[None]:
    """Hold the company's lock: one thread of this process, and one process, at a time.

    ``shared`` is ``isinstance(store, SharedTokenStore)`` when the caller knows it already
    (a runtime protocol check, which evaluates ``lock_key``: slow on every call)."""
    if shared is None:
        shared = isinstance(store, SharedTokenStore)
    if not shared:
        with _thread_lock(store_lock_key(store)):
            yield
        return
    file_store = cast(SharedTokenStore, store)
    with _thread_lock(file_store.lock_key), file_store.process_lock():
        yield


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``***`` (longest secrets first)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def redact_params(params: Mapping[str, object]) -> dict[str, str]:
    """A loggable view of request parameters: secrets masked, payloads summarised."""
    shown: dict[str, str] = {}
    for key, value in params.items():
        if key in SECRET_PARAMS:
            shown[key] = REDACTED
        elif isinstance(value, bytes):
            shown[key] = f"<{len(value)} bytes>"
        else:
            text = str(value)
            shown[key] = text if len(text) <= _SHOWN_CHARS else f"<{len(text)} chars>"
    return shown
