"""Keeping the Next Engine link alive, and warning before it lapses.

Next Engine's refresh token lives 3 days and is renewed only by a call made after the access
token (1 day) has expired. A daemon that imports orders calls Next Engine all the time; one
that only waits for stock changes may not. The guard therefore makes a cheap call
(``login_company/info``) whenever the access token has expired or the refresh token has less
than two days left, and warns — log, ``nebridge status``, the ``nebridge_notify`` hook — at
24 h and again at 6 h before the refresh token would lapse (which only happens when Next
Engine cannot be reached). A lost link is announced once, with the command that fixes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.config import DaemonConfig
from daemon.dispatch import NeGate
from daemon.nelink import CONNECTED, RECONNECT_HINT, link_info, token_store
from daemon.nextengine.client import NextEngineClient
from daemon.nextengine.errors import NextEngineError
from daemon.pluginmanager import PluginHost
from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import Cursor, utcnow
from hooks.records import Notification

log = logging.getLogger(__name__)

WARN_AT = (timedelta(hours=24), timedelta(hours=6))
KEEP_ALIVE_BELOW = timedelta(hours=48)
ACCESS_MARGIN = timedelta(minutes=10)
NOTIFIED_CURSOR = "ne.guard.notified"
KEEP_ANNOUNCED = 20


def notify(host: PluginHost, notification: Notification) -> None:
    """Log a notification and hand it to every ``nebridge_notify`` plugin, isolated."""
    level = {"info": logging.INFO, "warning": logging.WARNING}.get(notification.level,
                                                                    logging.ERROR)
    log.log(level, "%s: %s", notification.title, notification.message)
    for outcome in host.call_each("nebridge_notify", {"notification": notification}):
        if outcome.error is not None:
            log.error("notification plugin %s failed: %s", outcome.plugin, outcome.error)


def horizon_warning(refresh_end: datetime | None, now: datetime) -> str | None:
    """A warning text when the refresh token lapses within 24 h, else None."""
    if refresh_end is None:
        return None
    left = refresh_end - now
    if left > WARN_AT[0]:
        return None
    hours = max(0.0, left.total_seconds() / 3600)
    when = refresh_end.strftime("%Y-%m-%d %H:%M %Z")
    return (f"the Next Engine refresh token lapses in {hours:.1f} h (at {when}); nebridge "
            "renews it automatically while it can reach Next Engine — check the network and "
            f"`nebridge doctor`; once it lapsed, {RECONNECT_HINT}")


@dataclass
class GuardReport:
    """What one guard check did."""

    kept_alive: bool = False
    refresh_end: datetime | None = None
    warning: str | None = None
    error: str | None = None


class TokenGuard:
    """Keep-alive and lapse warnings for the linked Next Engine company."""

    def __init__(
        self,
        config: DaemonConfig,
        db: Bind,
        client: Callable[[], NextEngineClient],
        host: PluginHost,
        gate: NeGate,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.db = db
        self.client = client
        self.host = host
        self.gate = gate
        self.clock = clock

    def check(self) -> GuardReport:
        """Renew the tokens if due, then warn or announce what the admin must know."""
        report = GuardReport()
        if not self._linked():
            return report
        tokens = token_store(self.config).load()
        now = self.clock()
        if tokens is not None and self._due(tokens.access_token_end_date,
                                            tokens.refresh_token_end_date, now):
            try:
                self.client().company_info()
                report.kept_alive = True
            except NextEngineError as exc:
                self.gate.observe(exc)
                report.error = str(exc)
                log.warning("Next Engine keep-alive failed (will retry): %s", exc)
            if not self._linked():
                return report
            tokens = token_store(self.config).load()
        report.refresh_end = tokens.refresh_token_end_date if tokens else None
        report.warning = horizon_warning(report.refresh_end, now)
        if report.warning and report.refresh_end is not None:
            left = report.refresh_end - now
            threshold = min((t for t in WARN_AT if left <= t), default=WARN_AT[0])
            hours = int(threshold.total_seconds() // 3600)
            self._announce_once(
                f"token_expiring:{report.refresh_end.isoformat()}:{hours}",
                Notification("token_expiring", "warning" if hours >= 24 else "error",
                             f"Next Engine link lapses within {hours} h", report.warning))
        return report

    def _linked(self) -> bool:
        """True when linked; announces a lost link (once) when it is not."""
        info = link_info(self.config, self.db)
        if info.state == CONNECTED:
            return True
        if info.state != "not_connected":
            self._announce_once(f"link_lost:{info.reason}", Notification(
                "link_lost", "error", "Next Engine link lost",
                f"Next Engine no longer accepts nebridge's tokens ({info.reason}); Next Engine "
                f"work is stopped, WMS events are still accepted; {RECONNECT_HINT}"))
        return False

    @staticmethod
    def _due(access_end: datetime | None, refresh_end: datetime | None, now: datetime) -> bool:
        if access_end is not None and access_end <= now + ACCESS_MARGIN:
            return True
        return refresh_end is not None and refresh_end - now < KEEP_ALIVE_BELOW

    def _announce_once(self, key: str, notification: Notification) -> None:
        """Notify once per key (survives restarts), so a condition is not announced each tick."""
        with read_session(self.db) as session:
            seen = session.get(Cursor, NOTIFIED_CURSOR)
        announced = set(seen.value.split("\n")) if seen else set()
        if key in announced:
            return
        notify(self.host, notification)
        kept = [*sorted(announced)[-KEEP_ANNOUNCED:], key]
        with write_session(self.db) as session:
            row = session.get(Cursor, NOTIFIED_CURSOR) or Cursor(name=NOTIFIED_CURSOR, value="")
            row.value, row.updated_at = "\n".join(kept), self.clock()
            session.add(row)
