"""Whether Next Engine work may run now (the gate every Next Engine caller asks first).

Closed while the link needs re-connection or Next Engine is in maintenance; WMS events keep
being accepted meanwhile. The importer, the executors and the token guard share one gate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from daemon.nelink import CONNECTED, RECONNECT_HINT, mark_needs_reconnect
from daemon.nextengine.errors import NeMaintenance, NeReauthRequired
from daemon.store.engine import Bind, read_session
from daemon.store.models import NeLink, utcnow

log = logging.getLogger(__name__)


class NeGate:
    """Whether Next Engine work may run now: linked, and not paused for maintenance."""

    def __init__(self, engine: Bind, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.paused_until: datetime | None = None
        self.pause_reason = ""

    def blocked(self) -> str | None:
        """Why Next Engine work must not run now, or None."""
        if self.paused_until is not None and self.clock() < self.paused_until:
            return f"paused until {self.paused_until:%H:%M:%S} UTC: {self.pause_reason}"
        with read_session(self.engine) as session:
            link = session.get(NeLink, 1)
        if link is None:
            return "Next Engine is not connected (run `nebridge connect`)"
        if link.state != CONNECTED:
            return f"Next Engine link needs re-connection: {link.reason} — {RECONNECT_HINT}"
        return None

    def observe(self, exc: BaseException) -> None:
        """React to an error that concerns every Next Engine call, not just one item."""
        if isinstance(exc, NeReauthRequired):
            mark_needs_reconnect(self.engine, exc.what())  # the status line adds the fix
        elif isinstance(exc, NeMaintenance):
            self.paused_until = self.clock() + exc.retry_after
            self.pause_reason = str(exc)
            log.warning("Next Engine maintenance; pausing Next Engine work: %s", exc)
