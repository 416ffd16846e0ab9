"""Logikura tokens: the token file (mode 0600, replaced atomically, never logged) and the
lock that keeps two refreshes (threads or processes: the daemon and the CLI) apart.

The file holds either the live grant (access token, 24 h; refresh token, 90 days) or, once
Logikura refused the refresh token, only the *needs re-connection* state with its reason — a
dead refresh token is never kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hooks.files import locked_file, write_private

REDACTED = "***"
_LOCKS_GUARD = threading.Lock()
_THREAD_LOCKS: dict[str, threading.Lock] = {}


@dataclass(frozen=True, slots=True, repr=False)
class Tokens:
    """One Logikura grant: the pair, when each part ends, and the granted scope."""

    access_token: str
    refresh_token: str
    access_expires_at: datetime
    refresh_expires_at: datetime
    scope: str
    connected_at: datetime

    def __repr__(self) -> str:
        return (
            f"Tokens(access_token={REDACTED}, refresh_token={REDACTED}, "
            f"access_expires_at={self.access_expires_at.isoformat()!r}, "
            f"refresh_expires_at={self.refresh_expires_at.isoformat()!r}, "
            f"scope={self.scope!r})"
        )

    __str__ = __repr__

    def to_json(self) -> dict[str, str]:
        """The JSON form kept in the token file."""
        return {
            "state": "connected",
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "access_expires_at": self.access_expires_at.isoformat(),
            "refresh_expires_at": self.refresh_expires_at.isoformat(),
            "scope": self.scope,
            "connected_at": self.connected_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tokens:
        """Inverse of :meth:`to_json`; raises KeyError/ValueError/TypeError when malformed."""
        access, refresh = data["access_token"], data["refresh_token"]
        if not (isinstance(access, str) and access and isinstance(refresh, str) and refresh):
            raise ValueError("access_token and refresh_token must be non-empty strings")
        return cls(
            access,
            refresh,
            _aware(data["access_expires_at"]),
            _aware(data["refresh_expires_at"]),
            str(data.get("scope") or ""),
            _aware(data["connected_at"]),
        )


def _aware(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone in the token file: {value!r}")
    return moment


@dataclass(frozen=True, slots=True)
class StoredLink:
    """What the token file says: a grant, or why a re-connection is needed, or nothing."""

    tokens: Tokens | None = None
    reconnect_reason: str | None = None
    unreadable: str | None = None


class TokenFile:
    """The token file: JSON, mode 0600, written to a temp file and renamed over the old one;
    ``<file>.lock`` is ``flock``-ed while a grant is refreshed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"

    @property
    def lock_path(self) -> Path:
        """The file locked by :meth:`locked`."""
        return self.path.with_name(self.path.name + ".lock")

    def load(self) -> StoredLink:
        """Read the file; a missing file is "never connected"."""
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return StoredLink()
        except (OSError, ValueError) as exc:
            return StoredLink(unreadable=f"{self.path} is unreadable ({type(exc).__name__})")
        try:
            if data.get("state") == "needs_reconnect":
                return StoredLink(reconnect_reason=str(data.get("reason") or "unknown"))
            return StoredLink(tokens=Tokens.from_json(data))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return StoredLink(
                unreadable=f"{self.path} is not a Logikura token file ({type(exc).__name__})"
            )

    def save(self, tokens: Tokens) -> None:
        """Store a grant durably."""
        self._write(tokens.to_json())

    def mark_reconnect(self, reason: str, at: datetime) -> None:
        """Forget the dead grant and remember why nebridge must be authorised again."""
        self._write({"state": "needs_reconnect", "reason": reason, "since": at.isoformat()})

    def _write(self, data: Mapping[str, str]) -> None:
        write_private(self.path, json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8"))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the grant: one thread of this process and one process at a time."""
        key = str(self.path.resolve())
        with _LOCKS_GUARD:
            thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
        with thread_lock, locked_file(self.lock_path):
            yield
