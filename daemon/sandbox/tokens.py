"""NE's sign-in and token rules (reference §1): uid/state logins, token pairs, rotation when an
access token expired, revocation by a newer login, app-level authentication.

A part of :class:`~daemon.sandbox.state.SandboxState` (mixed in): it shares nothing with the
order, goods and upload rules but the state's config, clock, lock, ledger and traffic.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta
from typing import Any

from daemon.sandbox.clock import Clock
from daemon.sandbox.config import SandboxConfig
from daemon.sandbox.errors import NEError
from daemon.sandbox.model import TokenPair
from daemon.sandbox.traffic import TokenUse, Traffic, Verdict


class TokenRules:
    """Logins and token pairs of the sandbox company's one user."""

    config: SandboxConfig
    clock: Clock
    lock: threading.RLock
    traffic: Traffic
    user: dict[str, str]

    def _log(self, kind: str, source: str, call_no: int | None, **data: Any) -> None:
        raise NotImplementedError  # the state writes its ledger

    def _start_tokens(self) -> None:
        """No logins, no pairs yet."""
        self._pairs: dict[str, TokenPair] = {}
        self._pair_seq = 0
        self._current_pairs: list[TokenPair] = []
        self._logins: dict[str, tuple[str, datetime, bool]] = {}

    def issue_login(self) -> tuple[str, str]:
        """Simulate a user signing in: return ``(uid, state)``; state lives 5 minutes."""
        with self.lock:
            state = secrets.token_hex(32)
            expires = self.clock.now() + timedelta(seconds=self.config.state_lifetime_s)
            self._logins[state] = (self.user["uid"], expires, False)
            return self.user["uid"], state

    def exchange_login(
        self,
        uid: str,
        state: str,
        client_id: str,
        client_secret: str,
        *,
        call_no: int | None = None,
    ) -> TokenPair:
        """``api_neauth``: trade a uid/state for a new token pair."""
        with self.lock:
            if client_id != self.config.client_id or client_secret != self.config.client_secret:
                raise NEError("client_secret_invalid", tokens=False)
            if not uid:
                raise NEError("uid_missing", tokens=False)
            if not state:
                raise NEError("state_missing", tokens=False)
            login = self._logins.get(state)
            if login is None or login[0] != uid:
                raise NEError("uid_state_invalid", result="redirect", tokens=False)
            _uid, expires, used = login
            if self.clock.now() >= expires or (used and self.config.state_single_use):
                raise NEError("uid_state_invalid", result="redirect", tokens=False)
            self._logins[state] = (uid, expires, True)
            return self.issue_tokens(call_no=call_no, source="api")

    def issue_tokens(self, *, call_no: int | None = None, source: str = "python") -> TokenPair:
        """Issue a fresh pair (as a completed login would); see ``neauth_revokes_previous_pair``."""
        with self.lock:
            if self.config.neauth_revokes_previous_pair:
                for old in self._current_pairs:
                    if old.status == "live":
                        old.status = "revoked"
                self._current_pairs = []
            pair = self._new_pair()
            self._current_pairs.append(pair)
            self._log("token.issue", source, call_no, after={"pair_id": pair.pair_id})
            return pair

    def _new_pair(self) -> TokenPair:
        now = self.clock.now().replace(microsecond=0)
        self._pair_seq += 1
        pair = TokenPair(
            pair_id=self._pair_seq,
            access_token=secrets.token_hex(32),
            refresh_token=secrets.token_hex(32),
            access_end=now + timedelta(seconds=self.config.access_token_lifetime_s),
            refresh_end=now + timedelta(seconds=self.config.refresh_token_lifetime_s),
        )
        self._pairs[pair.access_token] = pair
        return pair

    def current_tokens(self) -> TokenPair | None:
        """The newest live pair, if any (for tests and the demo)."""
        with self.lock:
            live = [p for p in self._current_pairs if p.status == "live"]
            return live[-1] if live else None

    def expire_access_token(self) -> None:
        """Make every live pair's access token expired now (refresh tokens unaffected)."""
        with self.lock:
            past = self.clock.now() - timedelta(seconds=1)
            for pair in self._current_pairs:
                if pair.status == "live" and pair.access_end > past:
                    pair.access_end = past

    def classify_tokens(self, access: str | None) -> tuple[TokenPair | None, Verdict]:
        """What a call with ``access`` would meet, without rotating anything."""
        if not access:
            return None, "missing"
        pair = self._pairs.get(access)
        if pair is None:
            return None, "unknown"
        if pair.status != "live":
            return pair, "dead"
        return pair, "current" if self.clock.now() < pair.access_end else "expired"

    def authenticate(
        self,
        access: str | None,
        refresh: str | None,
        *,
        call_no: int,
        path: str,
        force_expire: bool = False,
    ) -> TokenPair:
        """Check the pair a call sent; rotate it when the access token expired (§1.3)."""
        with self.lock:
            if force_expire:
                self.expire_access_token()
            pair, verdict = self.classify_tokens(access)
            try:
                if verdict == "missing":
                    raise NEError("access_token_missing", tokens=False)
                if verdict in ("unknown", "dead") or pair is None:
                    raise NEError("access_token_invalid", tokens=False)
                if verdict == "current":
                    return pair
                if not refresh:
                    raise NEError("access_token_expired", result="redirect", tokens=False)
                if refresh != pair.refresh_token or self.clock.now() >= pair.refresh_end:
                    verdict = "refresh_expired"
                    raise NEError("refresh_token_invalid", result="redirect", tokens=False)
                pair.status = "rotated"
                new = self._new_pair()
                self._current_pairs = [p for p in self._current_pairs if p is not pair] + [new]
                verdict = "rotated"
                self._log(
                    "token.rotate",
                    "api",
                    call_no,
                    before={"pair_id": pair.pair_id},
                    after={"pair_id": new.pair_id},
                )
                return new
            finally:
                self.traffic.record_token_use(
                    TokenUse(call_no, path, None if pair is None else pair.pair_id, verdict)
                )

    def check_app(self, client_id: str | None, client_secret: str | None) -> None:
        """Authenticate an app-level call (``/api_app/company``)."""
        if client_id != self.config.client_id or client_secret != self.config.client_secret:
            raise NEError("app_auth_invalid", tokens=False)
