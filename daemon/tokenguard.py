"""Keeping the Next Engine link alive, and warning before it lapses.

Next Engine's refresh token lives 3 days and is renewed only by a call made after the access
token (1 day) has expired. A daemon that imports orders calls Next Engine all the time; one
that only waits for stock changes may not. The guard therefore makes a cheap call
(``login_company/info``) whenever the access token has expired or the refresh token has less
than two days left, and warns — log, ``nebridge status``, an attention item that
:mod:`daemon.notify` tells the notifier plugins about — at 24 h and again at 6 h before the
refresh token would lapse (which only happens when Next Engine cannot be reached). A lost link
is an attention item too, with the command that fixes it; both are resolved (and the people
told so) once the link works again. A fleet worker lacking the vault key the pair is sealed
with is not a lost link: the gate's ``vault_key_missing`` item says so, and nothing is checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import col, select

from daemon import attention
from daemon.attention import AttentionKind
from daemon.config import DaemonConfig
from daemon.linkinfo import WARN_AT, LinkInfo, horizon_warning
from daemon.negate import NeGate
from daemon.nelink import (
    CONNECTED,
    LINK_LOST_KEY,
    RECONNECT_HINT,
    link_info,
    link_lost_problem,
)
from daemon.nextengine.errors import NextEngineError
from daemon.nextengine.tokens import TokenStore
from daemon.store.engine import Bind, write_session
from daemon.store.models import NeLink, utcnow
from hooks.records import Problem

if TYPE_CHECKING:  # a type only: ``status`` reads the horizon without the client
    from daemon.nextengine.client import NextEngineClient

log = logging.getLogger(__name__)

KEEP_ALIVE_BELOW = timedelta(hours=48)
ACCESS_MARGIN = timedelta(minutes=10)
HORIZON_KEYS = tuple(
    f"{AttentionKind.NE_TOKEN_EXPIRING}:{int(t.total_seconds() // 3600)}h" for t in WARN_AT
)


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
        gate: NeGate,
        store: Callable[[], TokenStore],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.db = db
        self.client = client
        self.gate = gate
        #: The store the client's token pair is in (fleet mode: the vault, never the file).
        self.store = store
        self.clock = clock

    def check(self) -> GuardReport:
        """Renew the tokens if due, then warn or announce what the admin must know."""
        report = GuardReport()
        missing = self.gate.vault_key_missing()
        if missing is not None:  # fleet mode: this process lacks the key, the link is fine
            report.error = missing
            return report
        info = self._linked()  # its token end dates are the pair's (read once)
        if info is None:
            return report
        now = self.clock()
        if self._due(info.access_token_end, info.refresh_token_end, now):
            try:
                self.client().company_info()
                report.kept_alive = True
            except NextEngineError as exc:
                self.gate.observe(exc)
                report.error = str(exc)
                log.warning("Next Engine keep-alive failed (will retry): %s", exc)
            info = self._linked()
            if info is None:
                return report
        report.refresh_end = info.refresh_token_end
        report.warning = horizon_warning(report.refresh_end, now)
        if report.warning and report.refresh_end is not None:
            left = report.refresh_end - now
            threshold = min((t for t in WARN_AT if left <= t), default=WARN_AT[0])
            hours = int(threshold.total_seconds() // 3600)
            key = f"{AttentionKind.NE_TOKEN_EXPIRING}:{hours}h"
            if key not in attention.open_problem_keys(self.db, key):
                log.warning("Next Engine link lapses within %d h: %s", hours, report.warning)
            attention.report(
                self.db,
                Problem(
                    key=key,
                    kind=AttentionKind.NE_TOKEN_EXPIRING,
                    severity="warning" if hours >= 24 else "error",
                    reason=f"Next Engine link lapses within {hours} h: {report.warning}",
                    fix=(
                        "make sure nebridge reaches Next Engine (`nebridge doctor`); once the "
                        f"link lapsed, {RECONNECT_HINT}"
                    ),
                ),
                source="token_guard",
                now=now,
            )
        elif report.refresh_end is not None:
            attention.resolve(self.db, HORIZON_KEYS, now)
        return report

    def _linked(self) -> LinkInfo | None:
        """The link (with the pair's end dates) when linked, else None; a lost link is an
        attention item until it is linked again.

        A link marked ``needs_reconnect`` already opened the item at that moment; this also
        covers what only shows here (a token file gone) and closes it once linked again.
        """
        info = link_info(self.config, self.db, store=self.store())
        if info.state == CONNECTED:
            return info if self._resolve_link_lost() else None
        if info.state != "not_connected":
            attention.report(
                self.db, link_lost_problem(info.reason), source="token_guard", now=self.clock()
            )
        return None

    def _resolve_link_lost(self) -> bool:
        """Close ``ne_link_lost`` if the link is still connected now; return whether it is.

        The link read above may be stale: an importer or executor whose tokens Next Engine
        refused marks the link lost (and opens the item) in a transaction of its own at any
        moment. So the row is read again in the transaction that resolves, and nothing is
        resolved unless it still says connected. On PostgreSQL the row is read ``FOR SHARE``:
        a marking not yet committed is waited for (and then seen), one not yet begun waits
        until this commits; on SQLite the write transaction (``BEGIN IMMEDIATE``) already
        excludes it. Either way the item opens after the resolve or is not resolved.
        """
        with write_session(self.db) as session:
            link = session.exec(
                select(NeLink).where(col(NeLink.id) == 1).with_for_update(read=True)
            ).first()
            if link is None or link.state != CONNECTED:
                return False  # lost meanwhile: whoever marked it opened the item
            attention.resolve_in(session, [LINK_LOST_KEY], self.clock())
        return True

    @staticmethod
    def _due(access_end: datetime | None, refresh_end: datetime | None, now: datetime) -> bool:
        if access_end is not None and access_end <= now + ACCESS_MARGIN:
            return True
        return refresh_end is not None and refresh_end - now < KEEP_ALIVE_BELOW
