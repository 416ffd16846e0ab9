"""What ``status`` shows of the Next Engine link: its state, token end dates and the warning
before the refresh token lapses.

Kept apart from :mod:`daemon.nelink` (connecting, the client, the store's ORM) so that
``nebridge status`` answers without importing SQLAlchemy (#18); :mod:`daemon.nelink` and
:mod:`daemon.tokenguard` use these same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.nextengine.tokens import FileTokenStore, TokenSet, TokenStore
from daemon.owners import me, not_yours_fix, owner_of

if TYPE_CHECKING:
    from daemon.config import DaemonConfig

#: ``ne_link.state`` values (``daemon.store.models.LinkState``).
CONNECTED = "connected"
NEEDS_RECONNECT = "needs_reconnect"
#: Shown (never stored) when this user may not read the token file: a permission problem,
#: which signing in again (as the wrong user) would only repeat.
TOKEN_FILE_UNREADABLE = "token_file_unreadable"
RECONNECT_HINT = "run `nebridge connect` to sign in to Next Engine again"
#: Before the refresh token lapses: warn at 24 h, and again at 6 h.
WARN_AT = (timedelta(hours=24), timedelta(hours=6))


@dataclass
class LinkInfo:
    """What ``status`` and ``connect`` show about the link (never a token)."""

    state: str
    company_id: str = ""
    company_name: str = ""
    reason: str | None = None
    access_token_end: datetime | None = None
    refresh_token_end: datetime | None = None
    connected_at: datetime | None = None
    #: What to do about ``reason`` when it is not signing in again (a permission problem).
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON view, every time in UTC (Next Engine gives the token ends in JST) as the other
        ``--json`` times are."""
        return {
            "state": self.state,
            "company_id": self.company_id,
            "company_name": self.company_name,
            "reason": self.reason,
            "access_token_end": _utc(self.access_token_end),
            "refresh_token_end": _utc(self.refresh_token_end),
            "connected_at": _utc(self.connected_at),
            **({"fix": self.fix} if self.fix else {}),
        }


def token_store(config: DaemonConfig) -> FileTokenStore:
    """The company's token file."""
    return FileTokenStore(config.token_file)


def link_state(link: LinkInfo | None, store: TokenStore) -> LinkInfo:
    """The link as shown: ``link`` is the stored ``ne_link`` row (None: never connected),
    completed with the token end dates from ``store``, or marked ``needs_reconnect`` when the
    token pair cannot be read or is not there."""
    tokens: TokenSet | None
    try:
        tokens = store.load()
    except PermissionError as exc:
        path = Path(exc.filename or getattr(store, "path", ""))
        owner = owner_of(path.parent)
        return LinkInfo(
            state=TOKEN_FILE_UNREADABLE,
            reason=f"{me()} may not read {path} ({exc.strerror}), not a dead link",
            fix=not_yours_fix(path, owner) if owner else f"check the owner and mode of {path}",
            company_id=link.company_id if link else "",
            company_name=link.company_name if link else "",
        )
    except Exception as exc:
        return LinkInfo(
            state=NEEDS_RECONNECT,
            reason=str(exc),
            company_id=link.company_id if link else "",
            company_name=link.company_name if link else "",
        )
    if link is None:
        return LinkInfo(state="not_connected")
    info = LinkInfo(
        state=link.state,
        company_id=link.company_id,
        company_name=link.company_name,
        reason=link.reason,
        connected_at=link.connected_at,
    )
    if tokens is None:
        info.state, info.reason = (
            NEEDS_RECONNECT,
            (
                "the token file is missing"
                if isinstance(store, FileTokenStore)
                else "no token pair is stored"
            ),
        )
    else:
        info.access_token_end = tokens.access_token_end_date
        info.refresh_token_end = tokens.refresh_token_end_date
    return info


def horizon_warning(refresh_end: datetime | None, now: datetime) -> str | None:
    """A warning text when the refresh token lapses within 24 h, else None."""
    if refresh_end is None:
        return None
    left = refresh_end - now
    if left > WARN_AT[0]:
        return None
    hours = max(0.0, left.total_seconds() / 3600)
    when = refresh_end.isoformat(timespec="seconds")  # the CLI shows it in its zone
    return (
        f"the Next Engine refresh token lapses in {hours:.1f} h (at {when}); nebridge "
        "renews it automatically while it can reach Next Engine — check the network and "
        f"`nebridge doctor`; once it lapsed, {RECONNECT_HINT}"
    )


def describe(info: LinkInfo, zone: tzinfo | None = None) -> str:
    """One human line about the link; times in ISO 8601 with offset, in ``zone`` (default:
    the system's)."""
    if info.state == "not_connected":
        return "Next Engine: not connected (run `nebridge connect`)"
    who = f"{info.company_name} ({info.company_id})"
    if info.state == NEEDS_RECONNECT:
        return f"Next Engine: {who} NEEDS RE-CONNECTION: {info.reason} — {RECONNECT_HINT}"
    if info.state == TOKEN_FILE_UNREADABLE:
        return f"Next Engine: {who} TOKEN FILE UNREADABLE: {info.reason} — {info.fix}"
    ends = ""
    if info.refresh_token_end:
        access = (
            info.access_token_end.astimezone(zone).isoformat(timespec="seconds")
            if info.access_token_end
            else "-"
        )
        refresh = info.refresh_token_end.astimezone(zone).isoformat(timespec="seconds")
        ends = f"; access token until {access}, refresh token until {refresh}"
    return f"Next Engine: connected to {who}{ends}"


def _utc(moment: datetime | None) -> str | None:
    """``moment`` as ISO 8601 in UTC (None stays None)."""
    return moment.astimezone(UTC).isoformat() if moment else None
