"""The link to one Next Engine company: connect, status, unlink, and the client factory.

Tokens live in the token file (mode 0600, written only by the client); the database keeps the
link's state (connected / needs re-connection) and the company's name, never a token.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from sqlalchemy import delete
from sqlmodel import col, select

from daemon import __version__, attention
from daemon.attention import AttentionKind
from daemon.config import (
    DaemonConfig,
    LoadedConfig,
    SecretUnreadable,
    client_secret,
    resolve_path,
)
from daemon.httpserve import PortInUse
from daemon.linkinfo import RECONNECT_HINT as RECONNECT_HINT
from daemon.linkinfo import LinkInfo as LinkInfo
from daemon.linkinfo import describe as describe
from daemon.linkinfo import link_state
from daemon.linkinfo import token_store as token_store
from daemon.logsetup import register_secret
from daemon.nextengine.errors import NeReauthRequired
from daemon.nextengine.tokens import TokenStore
from daemon.owners import me, not_yours_fix, user_name
from daemon.redirect import is_loopback, receive_redirect
from daemon.serialize import dumps
from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import (
    Cursor,
    LinkState,
    NeLink,
    OutboxItem,
    OutboxState,
    StockUpload,
    utcnow,
)
from hooks.files import write_private
from hooks.records import Problem

if TYPE_CHECKING:  # the client (and requests) loads only where a client is made
    from daemon.nextengine.client import NextEngineClient, RetryPolicy

log = logging.getLogger(__name__)

CONNECTED = LinkState.CONNECTED
NEEDS_RECONNECT = LinkState.NEEDS_RECONNECT
NE_CURSOR_PREFIX = "ne."
#: The attention item of a lost link: reported where the link is marked
#: ``needs_reconnect`` (in the same transaction), resolved where it is connected again.
LINK_LOST_KEY = f"{AttentionKind.NE_LINK_LOST}"


def link_lost_problem(reason: str | None) -> Problem:
    """The attention item saying Next Engine no longer accepts nebridge's tokens."""
    return Problem(
        key=LINK_LOST_KEY,
        kind=AttentionKind.NE_LINK_LOST,
        reason=(
            f"Next Engine no longer accepts nebridge's tokens ({reason}); "
            "Next Engine work is stopped, WMS events are still accepted"
        ),
        fix=RECONNECT_HINT,
    )


class LinkError(Exception):
    """Connecting or unlinking cannot go on; the message says what to do."""


def token_files(loaded: LoadedConfig) -> list[Path]:
    """Every token file of this installation: Next Engine's, the WMS connector's
    (``wms.<connector>.token_file``) and any ``*tokens.json`` in the state folder."""
    config = loaded.config
    files = [config.token_file]
    for key, value in config.wms.connector_section().items():
        if key.endswith("token_file") and isinstance(value, str) and value:
            files.append(resolve_path(value, loaded.path))
    if config.state_dir.is_dir():
        files.extend(sorted(config.state_dir.glob("*tokens.json")))
    return list(dict.fromkeys(files))


def secret_file_problems(config: DaemonConfig, more: Iterable[Path] = ()) -> list[str]:
    """Why the token files (Next Engine's, and ``more``) or the state folder are not private.

    A token file must be a regular file (never a symbolic link: whoever controls the link
    controls where secrets are read and written) owned by this user, mode 0600; the state
    folder must not be open to others. Each problem names the command that fixes it; the
    daemon refuses to start while any is left (``nebridge run``).
    """
    problems = []
    state = config.state_dir
    try:
        folder = os.stat(state)
    except FileNotFoundError:
        folder = None
    if folder is not None and stat.S_ISDIR(folder.st_mode) and folder.st_mode & 0o077:
        who = "other users" if folder.st_mode & 0o007 else "its group"
        problems.append(
            f"the state folder {state} is open to {who} (mode "
            f"{stat.S_IMODE(folder.st_mode):04o}); it holds the tokens and the database, for "
            f"the service user alone: run `chmod 700 {state}`"
        )
    for path in dict.fromkeys((config.token_file, *more)):
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISLNK(info.st_mode):
            problems.append(
                f"the token file {path} is a symbolic link; nebridge never reads "
                f"or writes secrets through one: replace it with the file itself "
                f'(`cp --remove-destination "$(readlink -f {path})" {path}`)'
            )
        elif not stat.S_ISREG(info.st_mode):
            problems.append(
                f"the token file {path} is not a regular file; remove it and run "
                "`nebridge connect` again"
            )
        elif info.st_uid != os.geteuid():
            owner = user_name(info.st_uid)
            problems.append(
                f"the token file {path} belongs to {owner}, not to {me()}: "
                f"{not_yours_fix(path, owner)}"
            )
        elif info.st_mode & 0o077:
            problems.append(
                f"the token file {path} is readable by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
            )
    return problems


def make_client(
    config: DaemonConfig,
    *,
    secret: str | None = None,
    observer: Callable[[str, str], None] | None = None,
    store: TokenStore | None = None,
) -> NextEngineClient:
    """A Next Engine client for the configured company (the engine owns it).

    ``observer(endpoint, outcome)`` sees every exchange (metrics); ``store`` keeps the token
    pair (default: the token file; in fleet mode the company's row in the vault).
    """
    from daemon.nextengine.client import NextEngineClient

    if secret is not None:
        resolved: str | None = secret
    else:
        try:
            resolved = client_secret(config)
        except SecretUnreadable as exc:  # only signing in needs it; API calls go on
            log.warning("%s; only `nebridge connect` needs the client secret", exc)
            resolved = None
    register_secret(resolved)
    ne = config.nextengine
    return NextEngineClient(
        ne.api_base,
        token_store(config) if store is None else store,
        version=__version__,
        client_id=ne.client_id,
        client_secret=resolved,
        connect_timeout=ne.connect_timeout_seconds,
        read_timeout=ne.read_timeout_seconds,
        max_response_bytes=int(ne.max_response_mb * 1024 * 1024),
        transfer_timeout=ne.transfer_timeout_seconds,
        page_size=ne.page_size,
        retry=retry_policy(config),
        timeout_grace=ne.timeout_grace_seconds,
        observer=observer,
    )


def retry_policy(config: DaemonConfig) -> RetryPolicy:
    """The client's retry delays and maintenance pause from ``nextengine:``."""
    from daemon.nextengine.client import RetryPolicy

    ne = config.nextengine
    pause = timedelta(seconds=ne.maintenance_pause_seconds)
    delays = ne.retry_delays_seconds
    if delays is None:
        return RetryPolicy(maintenance_retry_after=pause)
    return RetryPolicy(
        overload_delays=delays,
        transient_delays=delays,
        not_sent_delays=delays,
        maintenance_retry_after=pause,
    )


def sign_in_url(config: DaemonConfig) -> str:
    """Where the admin signs in to Next Engine to link the company (§1.2)."""
    query = urlencode(
        {"client_id": config.nextengine.client_id, "redirect_uri": config.nextengine.redirect_uri}
    )
    return f"{config.nextengine.login_base.rstrip('/')}/users/sign_in/?{query}"


def wait_for_redirect(redirect_uri: str, timeout: float) -> tuple[str, str]:
    """Serve the loopback redirect URI once and return the ``uid`` and ``state`` NE sends."""
    if not is_loopback(redirect_uri):
        raise LinkError(
            f"redirect_uri {redirect_uri} is not on this machine; sign in, then "
            "pass the uid and state from the address bar with --uid/--state"
        )
    try:
        found = receive_redirect(
            redirect_uri,
            lambda q: bool(q.get("uid") and q.get("state")),
            "Next Engine sign-in received. You can close this window; the terminal shows the "
            "result.",
            timeout,
            change="stop that program, or sign in and pass the uid and state from the address "
            "bar with --uid/--state, or change the port of nextengine.redirect_uri (also "
            "in the app's settings at Next Engine)",
        )
    except PortInUse as exc:
        raise LinkError(str(exc)) from None
    if found is None:
        raise LinkError(
            f"no sign-in arrived at {redirect_uri} within {timeout:.0f} s; run "
            "`nebridge connect` again, or pass --uid/--state"
        )
    register_secret(found["uid"])
    register_secret(found["state"])
    return found["uid"], found["state"]


def connect(
    config: DaemonConfig, engine: Bind, uid: str, state: str, *, store: TokenStore | None = None
) -> LinkInfo:
    """Exchange ``uid``/``state`` for tokens, read the company and record the link; the pair
    goes to ``store`` (default: the token file)."""
    register_secret(uid)
    register_secret(state)
    try:
        secret = client_secret(config)
    except SecretUnreadable as exc:
        raise LinkError(
            f"{exc}; or give the secret through env NEBRIDGE_NE_CLIENT_SECRET "
            "or nextengine.client_secret"
        ) from None
    if not config.nextengine.client_id or not secret:
        raise LinkError(
            "nextengine.client_id and the client secret must be configured first "
            f"(secret: the file {config.credentials_dir}/nextengine-client-secret"
            ", env NEBRIDGE_NE_CLIENT_SECRET, or nextengine.client_secret)"
        )
    client = make_client(config, secret=secret, store=store)
    try:
        try:
            tokens = client.authorize(uid, state)
        except NeReauthRequired as exc:  # the admin is re-connecting: say what to do instead
            raise LinkError(
                f"{exc.what()} — the uid/state pair is invalid, expired (it lives 5 minutes) "
                "or already used: sign in to Next Engine again and use the new pair, or run "
                "`nebridge connect` without --uid/--state to receive it by itself"
            ) from None
        company = client.company_info()
    finally:
        client.close()
    company_id = str(company.get("company_id") or tokens.company_id or "")
    name = str(company.get("company_name") or tokens.company_name or "")
    now = utcnow()
    with write_session(engine) as session:
        link = session.get(NeLink, 1) or NeLink(state=CONNECTED)
        link.state, link.reason = CONNECTED, None
        link.company_id, link.company_name = company_id, name
        link.connected_at, link.updated_at = now, now
        session.add(link)
        attention.resolve_in(session, [LINK_LOST_KEY], now)
    log.info("linked Next Engine company %s (%s)", name, company_id)
    return link_info(config, engine, store=store)


def mark_needs_reconnect(engine: Bind, reason: str) -> None:
    """Stop Next Engine work until an admin re-connects (WMS events are still accepted).

    The ``ne_link_lost`` attention item is opened in the same transaction, so the admin is
    told at once (notifiers, ``nebridge attention``), not at the token guard's next check.
    """
    with write_session(engine) as session:
        link = session.get(NeLink, 1)
        if link is None or link.state == NEEDS_RECONNECT:
            return
        now = utcnow()
        link.state, link.reason, link.updated_at = NEEDS_RECONNECT, reason, now
        session.add(link)
        attention.report_in(session, link_lost_problem(reason), source="nextengine", now=now)
    log.error("Next Engine link needs re-connection: %s — %s", reason, RECONNECT_HINT)


def link_info(config: DaemonConfig, engine: Bind, *, store: TokenStore | None = None) -> LinkInfo:
    """The link's state and token end dates (``not_connected`` when there is none); the pair
    is read from ``store`` (default: the token file)."""
    with read_session(engine) as session:
        link = session.get(NeLink, 1)
    stored = (
        None
        if link is None
        else LinkInfo(
            state=link.state,
            company_id=link.company_id,
            company_name=link.company_name,
            reason=link.reason,
            connected_at=link.connected_at,
        )
    )
    return link_state(stored, token_store(config) if store is None else store)


@dataclass
class PendingWork:
    """Next Engine work that unlinking would drop, exported before anything is removed."""

    actions: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    cursors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Unfinished actions and uploads."""
        return len(self.actions) + len(self.uploads)


_UNFINISHED = [
    OutboxState.PENDING.value,
    OutboxState.IN_FLIGHT.value,
    OutboxState.IN_DOUBT.value,
    OutboxState.FAILED.value,
]


def pending_work(engine: Bind) -> PendingWork:
    """Everything Next Engine-related that is not finished."""
    work = PendingWork()
    with read_session(engine) as session:
        for item in session.scalars(
            select(OutboxItem)
            .where(col(OutboxItem.state).in_(_UNFINISHED))
            .order_by(col(OutboxItem.id))
        ):
            work.actions.append(
                {
                    "id": item.id,
                    "kind": item.kind,
                    "state": item.state,
                    "warehouse": item.warehouse,
                    "subject": item.subject,
                    "plugin": item.plugin,
                    "payload": json.loads(item.payload),
                    "last_error": item.last_error,
                    "created_at": item.created_at.isoformat(),
                }
            )
        for upload in session.scalars(
            select(StockUpload).where(col(StockUpload.state).notin_(["done"]))
        ):
            work.uploads.append(
                {
                    "ref": upload.ref,
                    "state": upload.state,
                    "deltas": json.loads(upload.deltas),
                    "que_id": upload.que_id,
                    "message": upload.message,
                }
            )
        for cursor in session.scalars(
            select(Cursor).where(col(Cursor.name).startswith(NE_CURSOR_PREFIX))
        ):
            work.cursors.append({"name": cursor.name, "value": cursor.value})
    return work


def unlink(
    config: DaemonConfig, engine: Bind, *, forget: Callable[[], object] | None = None
) -> tuple[PendingWork, Path]:
    """Remove all Next Engine integration state after exporting unfinished work to a file.

    Removed: the token file (or, with ``forget``, whatever it removes: the company's pair
    in the vault), the link record, Next Engine cursors, unfinished Next Engine actions and
    uploads. Kept: WMS events, finished actions and the imported-order map (so a
    later re-connect never sends the same order to the warehouse twice).
    """
    work = pending_work(engine)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    export = config.state_dir / f"unlink-export-{stamp}.json"
    write_private(
        export,
        dumps(
            {
                "unlinked_at": utcnow(),
                "actions": work.actions,
                "uploads": work.uploads,
                "cursors": work.cursors,
            }
        ).encode("utf-8"),
    )
    with write_session(engine) as session:
        session.execute(delete(OutboxItem).where(col(OutboxItem.state).in_(_UNFINISHED)))
        session.execute(delete(StockUpload).where(col(StockUpload.state).notin_(["done"])))
        session.execute(delete(Cursor).where(col(Cursor.name).startswith(NE_CURSOR_PREFIX)))
        session.execute(delete(NeLink))
        # not connected by the admin's choice is a state, not an incident (status says it)
        attention.resolve_in(session, [LINK_LOST_KEY], utcnow())
    if forget is not None:
        forget()
    else:
        store = token_store(config)
        store.path.unlink(missing_ok=True)
        store.lock_path.unlink(missing_ok=True)
    log.info("unlinked Next Engine; %d unfinished item(s) exported to %s", work.count, export)
    return work, export
