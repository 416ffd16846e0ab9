"""Logikura's OAuth 2 authorisation-code flow, from the app's side.

``nebridge wms connect`` sends the admin to :meth:`Authorizer.authorization_url`; the code
Logikura hands back (valid 10 minutes) is exchanged once for an access token (24 h) and a
refresh token (90 days). :meth:`Authorizer.access_token` refreshes the access token
``refresh_before_seconds`` before it ends — under the token file's lock, re-reading the file
first, so the daemon and the CLI never refresh with the same refresh token. When Logikura
refuses the refresh token the file is set to *needs re-connection* and every call says to run
``nebridge wms connect``. Tokens, codes and the client secret never reach a log line or an
error message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

from hooks.connectors import LinkStatus
from hooks.credentials import SecretUnreadable
from plugins.wms_logikura.config import LogikuraConfig
from plugins.wms_logikura.errors import (
    RECONNECT_HINT,
    LogikuraAuthError,
    LogikuraConfigError,
    LogikuraUnavailable,
)
from plugins.wms_logikura.tokens import TokenFile, Tokens

REFRESH_TOKEN_DAYS = 90
WARN_DAYS = 7
SOON = "the refresh token ends in"
_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


class Authorizer:
    """Obtains, stores and refreshes the grant of one Logikura account."""

    def __init__(
        self,
        config: LogikuraConfig,
        token_file: TokenFile,
        session: requests.Session,
        clock: Callable[[], float],
        mask_secret: Callable[[str], None],
        log: _Log,
        credentials_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.file = token_file
        self.session = session
        self.clock = clock
        self.mask = mask_secret
        self.log = log
        self.secret_problem = ""
        try:
            self.secret = config.client_secret_value(credentials_dir=credentials_dir)
        except SecretUnreadable as exc:  # only signing in needs it; API calls go on
            self.secret, self.secret_problem = None, str(exc)
        if self.secret:
            mask_secret(self.secret)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ---------------------------------------------------------------- the code flow
    def authorization_url(self, state: str) -> str:
        """Logikura's permission page for this app; ``state`` comes back with the code."""
        if not self.config.client_id:
            raise LogikuraConfigError(
                "set wms.logikura.client_id to the client id of the app "
                "registered at Logikura (/oauth/applications)"
            )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_uri,
                "scope": self.config.scope,
                "state": state,
            }
        )
        return f"{self.config.auth_base}/oauth/authorize?{query}"

    def exchange(self, code: str) -> Tokens:
        """Trade an authorisation code for a grant and store it (the old one is replaced)."""
        self.mask(code)
        with self.file.locked():
            body = self._token_call(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.config.redirect_uri,
                },
                "code",
            )
            tokens = self._tokens(body, None)
            self.file.save(tokens)
        self.log.info("Logikura authorised nebridge (scope %s)", tokens.scope)
        return tokens

    # ---------------------------------------------------------------- using the grant
    def access_token(self) -> str:
        """A live access token, refreshed first when it ends within the configured margin."""
        tokens = self._stored()
        margin = timedelta(seconds=self.config.refresh_before_seconds)
        if self._now() < tokens.access_expires_at - margin:
            return tokens.access_token
        return self.refresh(tokens.access_token, rejected=False)

    def refresh(self, stale: str, *, rejected: bool) -> str:
        """Refresh the grant unless another thread or process already replaced ``stale``.

        ``rejected``: Logikura answered 401 to ``stale``, so it must not be used again even
        if the refresh cannot be done right now.
        """
        with self.file.locked():
            tokens = self._stored()
            margin = timedelta(seconds=self.config.refresh_before_seconds)
            if tokens.access_token != stale and self._now() < tokens.access_expires_at - margin:
                return tokens.access_token
            try:
                body = self._token_call(
                    {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
                    "refresh",
                )
            except LogikuraUnavailable:
                if not rejected and self._now() < tokens.access_expires_at:
                    self.log.warning(
                        "could not refresh the Logikura access token yet; the "
                        "current one stays valid until %s",
                        tokens.access_expires_at.isoformat(),
                    )
                    return tokens.access_token
                raise
            renewed = self._tokens(body, tokens)
            self.file.save(renewed)
        self.log.info(
            "Logikura access token refreshed; valid until %s", renewed.access_expires_at.isoformat()
        )
        return renewed.access_token

    def warning(self) -> str | None:
        """What the admin must hear at start: no grant, a dead one, or one ending soon."""
        status = self.status()
        if status.state != "connected" or SOON in status.detail:
            return status.detail
        return None

    def status(self) -> LinkStatus:
        """How the grant stands, from the token file alone."""
        stored = self.file.load()
        if stored.unreadable:
            return LinkStatus("needs_reconnect", f"{stored.unreadable}; {RECONNECT_HINT}")
        if stored.reconnect_reason is not None:
            return LinkStatus("needs_reconnect", f"{stored.reconnect_reason}; {RECONNECT_HINT}")
        tokens = stored.tokens
        if tokens is None:
            return LinkStatus(
                "not_connected",
                "nebridge is not authorised in Logikura yet; run `nebridge wms connect`",
            )
        days = (tokens.refresh_expires_at - self._now()).total_seconds() / 86_400
        detail = (
            f"access token until {tokens.access_expires_at.isoformat()}, refresh token "
            f"until {tokens.refresh_expires_at.isoformat()} (scope {tokens.scope})"
        )
        if days < 0:
            return LinkStatus(
                "needs_reconnect",
                f"the refresh token ended on {tokens.refresh_expires_at.date()}; {RECONNECT_HINT}",
            )
        if days < WARN_DAYS:
            detail += f"; {SOON} {days:.1f} days: {RECONNECT_HINT} before then"
        return LinkStatus("connected", detail)

    # ---------------------------------------------------------------- plumbing
    def _stored(self) -> Tokens:
        stored = self.file.load()
        if stored.tokens is not None:
            self.mask(stored.tokens.access_token)
            self.mask(stored.tokens.refresh_token)
            return stored.tokens
        raise LogikuraAuthError(self.status().detail)

    def _token_call(self, fields: Mapping[str, str], purpose: str) -> dict[str, Any]:
        if self.secret_problem:
            raise LogikuraConfigError(self.secret_problem)
        if not self.config.client_id or not self.secret:
            raise LogikuraConfigError(
                "the Logikura client id and secret are not configured: set "
                "wms.logikura.client_id and the secret (env NEBRIDGE_LOGIKURA_CLIENT_SECRET, "
                "the credential file logikura-client-secret in credentials_dir, or "
                "wms.logikura.client_secret)"
            )
        data = {**fields, "client_id": self.config.client_id, "client_secret": self.secret}
        try:
            answer = self.session.post(
                f"{self.config.auth_base}/oauth/token",
                data=data,
                timeout=self.config.timeout_seconds,
            )
        except requests.RequestException as exc:
            raise LogikuraUnavailable(
                f"Logikura's token endpoint did not answer "
                f"({type(exc).__name__}); nebridge tries again later"
            ) from None
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.status_code == 200 and isinstance(body, dict) and body.get("access_token"):
            self.mask(str(body["access_token"]))
            if body.get("refresh_token"):
                self.mask(str(body["refresh_token"]))
            return body
        error = str(body.get("error") or "") if isinstance(body, dict) else ""
        if error == "invalid_client":
            raise LogikuraAuthError(
                "Logikura does not accept the client id and secret; check "
                "wms.logikura.client_id and the client secret of the app"
            )
        if error == "invalid_grant" and purpose == "refresh":
            reason = (
                "Logikura refused the refresh token (it ends 90 days after it was "
                "issued, or the app's access was revoked)"
            )
            self.file.mark_reconnect(reason, self._now())
            self.log.error("%s; %s", reason, RECONNECT_HINT)
            raise LogikuraAuthError(f"{reason}; {RECONNECT_HINT}")
        if error == "invalid_grant":
            raise LogikuraAuthError(
                "Logikura refused the authorisation code (it is valid "
                "10 minutes, once, for the same redirect URI); run "
                "`nebridge wms connect` again"
            )
        if answer.status_code >= 500 or answer.status_code in (429, 499):
            raise LogikuraUnavailable(
                f"Logikura's token endpoint answered HTTP "
                f"{answer.status_code}; nebridge tries again later"
            )
        raise LogikuraAuthError(
            f"Logikura's token endpoint answered HTTP {answer.status_code}"
            f" ({error or 'no error code'}); {RECONNECT_HINT}"
        )

    def _tokens(self, body: Mapping[str, Any], previous: Tokens | None) -> Tokens:
        now = self._now()
        refresh = str(body.get("refresh_token") or (previous.refresh_token if previous else ""))
        if not refresh:
            raise LogikuraAuthError(f"Logikura issued no refresh token; {RECONNECT_HINT}")
        rotated = previous is None or refresh != previous.refresh_token
        refresh_end = (
            now + timedelta(days=REFRESH_TOKEN_DAYS)
            if rotated or previous is None
            else previous.refresh_expires_at
        )
        try:
            lifetime = float(body.get("expires_in") or 86_400)
        except (TypeError, ValueError):
            lifetime = 86_400.0
        return Tokens(
            str(body["access_token"]),
            refresh,
            now + timedelta(seconds=lifetime),
            refresh_end,
            str(body.get("scope") or self.config.scope),
            previous.connected_at if previous else now,
        )
