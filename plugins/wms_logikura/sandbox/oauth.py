"""Logikura's OAuth rules (reference §1): the permission code, the token endpoint's code and
refresh grants (RFC 6749 errors), refresh-token rotation, bearer authentication, expiry.

A part of :class:`~plugins.wms_logikura.sandbox.state.SandboxState` (mixed in): it shares
nothing with the warehouse rules but the state's config, clock, lock, ids and ledger.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from plugins.wms_logikura.sandbox.clock import Clock
from plugins.wms_logikura.sandbox.config import SandboxConfig
from plugins.wms_logikura.sandbox.errors import ApiError, Json, fail
from plugins.wms_logikura.sandbox.model import AuthCode, Token

SCOPES = frozenset({"read", "write"})


class OAuthRules:
    """Codes, grants and tokens of the sandbox's one OAuth client."""

    config: SandboxConfig
    clock: Clock
    lock: threading.RLock

    def next_id(self, kind: str) -> int:
        raise NotImplementedError  # the state numbers its records

    def acting(self, source: str, call_no: int | None = None) -> AbstractContextManager[None]:
        raise NotImplementedError  # the state attributes its ledger entries

    def _log(self, kind: str, **data: Any) -> None:
        raise NotImplementedError  # the state writes its ledger

    def _start_oauth(self) -> None:
        """No codes, no tokens yet."""
        self.codes: dict[str, AuthCode] = {}
        self.access_tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}

    def _scope(self, requested: str | None) -> str:
        scopes = (requested or "read write").replace("+", " ").split()
        if not scopes or set(scopes) - SCOPES:
            raise ApiError(
                400,
                {"error": "invalid_scope", "error_description": "scope must be read and/or write"},
            )
        return " ".join(s for s in ("read", "write") if s in scopes)

    def check_client(self, client_id: str, redirect_uri: str) -> None:
        """Refuse an authorisation request from an unknown client or to a foreign redirect."""
        if client_id != self.config.client_id:
            raise ApiError(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "クライアントIDが正しくありません",
                },
            )
        wanted = self.config.redirect_uri
        if not redirect_uri or (wanted is not None and redirect_uri != wanted):
            raise ApiError(
                400,
                {
                    "error": "invalid_redirect_uri",
                    "error_description": "リダイレクトURIが登録と一致しません",
                },
            )

    def issue_code(
        self, redirect_uri: str, scope: str | None = None, *, source: str = "python"
    ) -> str:
        """The user approved the app: a code for ``redirect_uri``, valid 10 minutes, once."""
        with self.acting(source):
            code = secrets.token_urlsafe(24)
            self.codes[code] = AuthCode(
                code,
                redirect_uri,
                self._scope(scope),
                self.clock.timestamp() + self.config.code_lifetime_s,
            )
            self._log("oauth.code")
            return code

    def token(self, params: Mapping[str, str]) -> Json:
        """``POST /oauth/token``: the code and refresh grants (RFC 6749 errors)."""
        with self.acting("oauth"):
            if (
                params.get("client_id") != self.config.client_id
                or params.get("client_secret") != self.config.client_secret
            ):
                raise ApiError(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "Client authentication failed",
                    },
                )
            grant_type = params.get("grant_type")
            now = self.clock.timestamp()
            if grant_type == "authorization_code":
                code = self.codes.get(params.get("code", ""))
                if (
                    code is None
                    or code.used
                    or code.expires_at <= now
                    or code.redirect_uri != params.get("redirect_uri")
                ):
                    raise ApiError(
                        400,
                        {
                            "error": "invalid_grant",
                            "error_description": "The authorization code is invalid or expired",
                        },
                    )
                code.used = True
                return self._issue(self.next_id("grant"), code.scope, None, "authorization_code")
            if grant_type == "refresh_token":
                old = self.refresh_tokens.get(params.get("refresh_token", ""))
                if old is None or old.revoked or old.expires_at <= now:
                    raise ApiError(
                        400,
                        {
                            "error": "invalid_grant",
                            "error_description": "The refresh token is invalid, revoked or expired",
                        },
                    )
                return self._issue(old.grant_id, old.scope, old, "refresh_token")
            raise ApiError(400, {"error": "unsupported_grant_type"})

    def _issue(self, grant_id: int, scope: str, old_refresh: Token | None, grant_type: str) -> Json:
        now = self.clock.timestamp()
        access = Token(
            secrets.token_urlsafe(32), grant_id, scope, now + self.config.access_token_lifetime_s
        )
        self.access_tokens[access.value] = access
        if old_refresh is not None and not self.config.rotate_refresh_token:
            refresh = old_refresh
        else:
            if old_refresh is not None:
                old_refresh.revoked = True
            refresh = Token(
                secrets.token_urlsafe(32),
                grant_id,
                scope,
                now + self.config.refresh_token_lifetime_s,
            )
            self.refresh_tokens[refresh.value] = refresh
        self._log("oauth.token", record_id=grant_id, detail={"grant_type": grant_type})
        return {
            "access_token": access.value,
            "token_type": "Bearer",
            "expires_in": self.config.access_token_lifetime_s,
            "refresh_token": refresh.value,
            "scope": scope,
            "created_at": int(now),
        }

    def issue_tokens(self, scope: str | None = None, *, source: str = "python") -> Json:
        """A fresh authorisation without the browser (e.g. for the warehouse staff's tool)."""
        with self.acting(source):
            return self._issue(self.next_id("grant"), self._scope(scope), None, "direct")

    def authenticate(self, header: str | None) -> Token:
        """The live access token of an ``Authorization: Bearer`` header, else 401."""
        value = (header or "").removeprefix("Bearer ").strip() if header else ""
        token = self.access_tokens.get(value) if value else None
        if token is None or token.revoked:
            raise fail(401, "The access token is invalid")
        if token.expires_at <= self.clock.timestamp():
            raise fail(401, "The access token expired")
        return token

    def expire_access_tokens(self) -> None:
        """Every access token expires now (the next call must refresh)."""
        with self.lock:
            for token in self.access_tokens.values():
                token.expires_at = min(token.expires_at, self.clock.timestamp() - 1)

    def expire_refresh_tokens(self) -> None:
        """Every refresh token expires now (as after 90 days): the app must be re-authorised."""
        with self.lock:
            for token in self.refresh_tokens.values():
                token.expires_at = min(token.expires_at, self.clock.timestamp() - 1)
