"""Whether Next Engine work may run now (the gate every Next Engine caller asks first).

Closed while the link needs re-connection or Next Engine is in maintenance, and in fleet mode
while this process lacks the vault key the company's token pair is sealed with (a key rotation
that has not reached this host: a ``vault_key_missing`` attention item naming the key, the host
and the fix, one log line, closed by itself once the key is there); WMS events keep being
accepted meanwhile. The importer, the executors and the token guard share one gate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session

from daemon import attention
from daemon.attention import AttentionKind
from daemon.nelink import CONNECTED, RECONNECT_HINT, mark_needs_reconnect
from daemon.nextengine.errors import NeMaintenance, NeReauthRequired
from daemon.store.engine import Bind, read_session
from daemon.store.models import NeLink, utcnow
from hooks.records import Problem

log = logging.getLogger(__name__)

#: The attention item of a token pair this process has no vault key for (fleet mode).
KEY_MISSING_KEY = f"{AttentionKind.VAULT_KEY_MISSING}"
_UNCHECKED = "unchecked"
#: Fleet mode: why this process cannot open the company's token pair for want of its vault
#: key, or None — read in the caller's session when one is given (None: on its own).
KeyMissing = Callable[[Session | None], str | None]


class NeGate:
    """Whether Next Engine work may run now: linked, and not paused for maintenance."""

    def __init__(
        self,
        engine: Bind,
        clock: Callable[[], datetime] = utcnow,
        key_missing: KeyMissing = lambda session: None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.paused_until: datetime | None = None
        self.pause_reason = ""
        #: Fleet mode: why this process cannot open the token pair for want of its key.
        self.key_missing = key_missing
        self._key_state: str | None = _UNCHECKED

    def blocked(self, session: Session | None = None) -> str | None:
        """Why Next Engine work must not run now, or None. ``session``: a read session of the
        caller's to read the link in (its first statement), instead of one of its own."""
        if self.paused_until is not None and self.clock() < self.paused_until:
            return f"paused until {self.paused_until:%H:%M:%S} UTC: {self.pause_reason}"
        if session is not None:
            link = session.get(NeLink, 1)
        else:
            with read_session(self.engine) as own:
                link = own.get(NeLink, 1)
        if link is None:
            return "Next Engine is not connected (run `nebridge connect`)"
        if link.state != CONNECTED:
            return f"Next Engine link needs re-connection: {link.reason} — {RECONNECT_HINT}"
        return self.vault_key_missing(session)

    def vault_key_missing(self, session: Session | None = None) -> str | None:
        """Why this process cannot open the company's token pair for want of its vault key,
        or None (read in ``session`` if given). Its attention item is opened (and one warning
        logged) when that starts, and closed when it ends or is first found fine (another
        worker may have opened it)."""
        reason = self.key_missing(session)
        if reason == self._key_state:
            return reason
        self._key_state = reason
        if reason is None:
            attention.resolve(self.engine, [KEY_MISSING_KEY], self.clock())
            return None
        log.warning("Next Engine work waits: %s", reason)
        attention.report(
            self.engine,
            Problem(
                key=KEY_MISSING_KEY,
                kind=AttentionKind.VAULT_KEY_MISSING,
                reason=f"Next Engine work waits: {reason}",
                fix=(
                    "install the vault key named in the reason on that host and restart that "
                    "worker (docs/fleet.md, rotating the vault key); it closes by itself once "
                    "a worker with the key serves the company"
                ),
            ),
            source="vault",
            now=self.clock(),
        )
        return reason

    def observe(self, exc: BaseException) -> None:
        """React to an error that concerns every Next Engine call, not just one item."""
        if isinstance(exc, NeReauthRequired):
            mark_needs_reconnect(self.engine, exc.what())  # the status line adds the fix
        elif isinstance(exc, NeMaintenance):
            self.paused_until = self.clock() + exc.retry_after
            self.pause_reason = str(exc)
            log.warning("Next Engine maintenance; pausing Next Engine work: %s", exc)
