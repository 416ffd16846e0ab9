"""``nebridge connect`` / ``nebridge unlink``: link this installation to a Next Engine company."""

from __future__ import annotations

import errno
import socket
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer
from sqlalchemy import Engine

from daemon.cli.common import AppContext, display_zone, fail, get, info, print_json
from daemon.config import DaemonConfig
from daemon.fleet.hold import LeaseHeld, hold_company
from daemon.instancelock import AlreadyRunning, instance_lock
from daemon.nelink import (
    LinkError,
    connect,
    describe,
    pending_work,
    sign_in_url,
    unlink,
    wait_for_redirect,
)
from daemon.nextengine.errors import NextEngineError
from daemon.redirect import is_loopback
from daemon.store.engine import DatabaseNotMigrated, check_migrated, make_engine

if TYPE_CHECKING:
    from daemon.fleet.runtime import FleetDatabase


def connect_cmd(
    ctx: typer.Context,
    uid: Annotated[
        str | None,
        typer.Option(
            "--uid", help="uid from Next Engine's redirect (skips the loopback receiver)."
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="state from Next Engine's redirect (valid 5 minutes)."),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open the sign-in page.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the sign-in.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Link a Next Engine company: sign in, receive uid/state, exchange them for tokens.

    In fleet mode (--company CODE) the token pair goes to the vault in the database, sealed
    with the vault key, instead of a token file.
    """
    app_ctx = get(ctx)
    loaded = app_ctx.load()
    config = loaded.config
    if (uid is None) != (state is None):
        fail("pass both --uid and --state, or neither", code=2)
    fleet = app_ctx.fleet_database()
    engine = make_engine(config.resolved_database_url, create=False)
    try:
        check_migrated(engine)
        store = app_ctx.token_store(fleet)
        if uid is None or state is None:
            _check_redirect_port(config.nextengine.redirect_uri)
            url = sign_in_url(config)
            info("Sign in to Next Engine here:")
            typer.echo(url, err=True)  # whole, on its own line: never wrapped, copyable
            info(f"Waiting for the redirect to {config.nextengine.redirect_uri} …")
            if open_browser:
                webbrowser.open(url)
            uid, state = wait_for_redirect(config.nextengine.redirect_uri, timeout)
        linked = connect(config, engine, uid, state, store=store)
    except (LinkError, NextEngineError, DatabaseNotMigrated) as exc:
        fail(f"could not connect: {exc}")
    finally:
        engine.dispose()
        if fleet is not None:
            fleet.close()
    if as_json:
        print_json(linked.as_dict())
    else:
        typer.echo(describe(linked, display_zone(loaded)))


def _check_redirect_port(redirect_uri: str) -> None:
    """Refuse before the sign-in URL is shown when the redirect's loopback port is taken —
    most likely by another `nebridge connect` waiting (in a fleet every company signs in
    through the one redirect_uri: one at a time per host)."""
    if not is_loopback(redirect_uri):
        return  # --uid/--state are asked for by wait_for_redirect
    parts = urlsplit(redirect_uri)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as the redirect listener binds: a port a finished connect left in TIME_WAIT is
        # free for it (on Linux a port with a listener is still refused)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # privileges and the like: wait_for_redirect says what to change
            raise LinkError(
                f"port {port} on {host} is already in use ({redirect_uri}): another "
                "`nebridge connect` may be waiting for its sign-in (every company signs in "
                "through this redirect_uri, so one at a time on a host); let it finish or "
                "stop it and run this again, or sign in and pass the uid and state from the "
                "address bar with --uid/--state"
            ) from None


def unlink_cmd(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Remove ALL Next Engine integration (連携を解除する); unfinished work is exported first.

    Refused while the daemon runs (it may be sending the actions removed): stop it first. In
    fleet mode (--company CODE) the company's token pair is removed from the vault, and the
    command holds the company's lease: refused while a worker serves it.
    """
    app_ctx = get(ctx)
    config = app_ctx.load().config
    fleet = app_ctx.fleet_database()
    code = app_ctx.company or ""
    engine = make_engine(config.resolved_database_url, create=False)
    try:
        check_migrated(engine)
        # the vault (and its key) first: refused before anything is removed
        store = app_ctx.token_store(fleet)
        forget = None if fleet is None or store is None else partial(fleet.vault.forget, code)
        with _held_against_the_daemon(app_ctx, engine, fleet):
            _unlink(config, engine, forget, yes=yes, as_json=as_json)
    except (DatabaseNotMigrated, AlreadyRunning, LeaseHeld) as exc:
        fail(str(exc))
    finally:
        engine.dispose()
        if fleet is not None:
            fleet.close()


@contextmanager
def _held_against_the_daemon(
    app_ctx: AppContext, engine: Engine, fleet: FleetDatabase | None
) -> Iterator[None]:
    """Keep the daemon off the link while unlink removes its unfinished actions, which the
    daemon may be sending: the instance lock of a single-company installation, the
    company's lease in fleet mode (:class:`AlreadyRunning` / :class:`LeaseHeld` saying who
    works on it and what to do)."""
    if fleet is None:
        with instance_lock(app_ctx.load().config, engine):
            yield
        return
    code = app_ctx.company or ""
    with hold_company(
        fleet.control,
        code,
        lease_seconds=app_ctx.load_base().config.fleet_lease_seconds,
        what=f"`nebridge unlink --company {code}`",
        why="Unlinking removes the unfinished actions that worker may be sending",
    ):
        yield


def _unlink(
    config: DaemonConfig,
    engine: Engine,
    forget: Callable[[], object] | None,
    *,
    yes: bool,
    as_json: bool,
) -> None:
    """List what unlinking removes, ask (unless ``yes``), unlink and say where the unfinished
    work went."""
    work = pending_work(engine)
    if not as_json:
        typer.echo(
            f"Unlinking removes the Next Engine tokens, cursors and "
            f"{len(work.actions)} unfinished action(s) and {len(work.uploads)} "
            f"unfinished stock upload(s):"
        )
        for action in work.actions[:20]:
            typer.echo(
                f"  {action['state']:>9} {action['kind']} {action['subject']} "
                f"(warehouse {action['warehouse']})"
            )
        if len(work.actions) > 20:
            typer.echo(f"  … and {len(work.actions) - 20} more (all go to the export file)")
    if not yes and not typer.confirm("Unlink Next Engine now?", default=False):
        fail("not unlinked (nothing changed)")
    removed, export = unlink(config, engine, forget=forget)
    if as_json:
        print_json(
            {
                "unlinked": True,
                "exported_to": str(export),
                "actions": removed.actions,
                "uploads": removed.uploads,
            }
        )
    else:
        typer.echo(f"Next Engine unlinked. Unfinished work was exported to {export}")
