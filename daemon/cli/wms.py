"""``nebridge wms connect|status``: authorise nebridge in a WMS whose API needs it (Logikura);
``adopt-state-folder``: record a new state folder for a connector's records.

Works for every connector implementing :class:`hooks.connectors.AuthorizingConnector`:
``connect`` prints the WMS's permission page, receives ``code`` and ``state`` on the loopback
redirect URI (or takes ``--code`` copied from the browser) and hands the code to the
connector, which stores the tokens in the state folder (mode 0600). Codes and tokens are never
printed or logged.
"""

from __future__ import annotations

import secrets
import webbrowser
from datetime import tzinfo
from typing import Annotated

import typer

from daemon.cli.common import display_zone, fail, get, info, print_json, times_in_zone
from daemon.config import ConfigError
from daemon.httpserve import PortInUse
from daemon.redirect import is_loopback, receive_redirect
from daemon.runtime import Runtime
from daemon.store.engine import DatabaseNotMigrated
from hooks.connectors import AuthorizingConnector, LinkStatus
from hooks.errors import NebridgeError

app = typer.Typer(
    help="Authorise nebridge in the WMS (connectors with an API sign-in).", no_args_is_help=True
)


class RedirectError(Exception):
    """The authorisation did not come back usable; the message says what to do."""


def wait_for_code(redirect_uri: str, state: str, timeout: float) -> str:
    """Serve the loopback ``redirect_uri`` until the WMS sends ``code`` (with ``state``)."""
    if not is_loopback(redirect_uri):
        raise RedirectError(
            f"redirect_uri {redirect_uri} is not on this machine; approve in "
            "the browser, then pass the code from the address bar with --code"
        )
    try:  # only the answer to this request counts: an old tab or a stray request is refused
        outcome = receive_redirect(
            redirect_uri,
            lambda q: q.get("state") == state and bool({"code", "error"} & set(q)),
            "nebridge received the answer. You can close this window; the terminal shows the "
            "result.",
            timeout,
            change="stop that program, or approve and pass the code from the address bar with "
            "--code, or change the port of the connector's redirect_uri in daemon.yaml "
            "(also where the app is registered at the WMS)",
        )
    except PortInUse as exc:
        raise RedirectError(str(exc)) from None
    if outcome is None:
        raise RedirectError(
            f"no answer arrived at {redirect_uri} within {timeout:.0f} s; run "
            "`nebridge wms connect` again (or pass --code)"
        )
    if "error" in outcome:
        raise RedirectError(
            f"the WMS answered {outcome['error']!r} (authorisation refused or "
            "not possible); run `nebridge wms connect` again and approve"
        )
    return outcome["code"]


def _runtime(ctx: typer.Context) -> tuple[Runtime, AuthorizingConnector, str]:
    app_ctx = get(ctx)
    loaded = app_ctx.load()
    name = loaded.config.wms.connector
    try:
        runtime = app_ctx.runtime(loaded)
    except (ConfigError, DatabaseNotMigrated) as exc:
        fail(str(exc))
    connector: object = runtime.connector
    if not isinstance(connector, AuthorizingConnector):
        runtime.close()
        fail(f"the {name!r} WMS connector needs no authorisation; nothing to connect")
    return runtime, connector, name


def _show(status: LinkStatus, name: str, as_json: bool, zone: tzinfo | None) -> None:
    if as_json:
        print_json({"connector": name, "state": status.state, "detail": status.detail})
    else:
        detail = times_in_zone(status.detail, zone)
        typer.echo(f"{name}: {status.state.replace('_', ' ')} — {detail}")


@app.command("connect")
def connect(
    ctx: typer.Context,
    code: Annotated[
        str | None,
        typer.Option(
            "--code", help="The code from the WMS's redirect (skips the loopback receiver)."
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open the permission page.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the approval.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Authorise nebridge in the WMS: approve in the browser, the tokens are stored (0600)."""
    runtime, connector, name = _runtime(ctx)
    try:
        connector_ctx = runtime.connector_context()
        if code is None:
            state = secrets.token_urlsafe(24)
            url = connector.authorization_url(state, connector_ctx)
            info(f"Authorise nebridge in {name} here:")
            typer.echo(url, err=True)  # whole, on its own line: never wrapped, copyable
            info(f"Waiting for the redirect to {connector.redirect_uri} …")
            if open_browser:
                webbrowser.open(url)
            code = wait_for_code(connector.redirect_uri, state, timeout)
        status = connector.authorize(code, connector_ctx)
    except (NebridgeError, RedirectError) as exc:
        fail(f"{name}: {exc}")
    finally:
        runtime.close()
    _show(status, name, as_json, display_zone(runtime.loaded))


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """How nebridge's authorisation in the WMS stands; exit 1 unless connected."""
    runtime, connector, name = _runtime(ctx)
    try:
        link = connector.link_status(runtime.connector_context())
    except NebridgeError as exc:
        fail(f"cannot tell the {name} link: {exc}")
    finally:
        runtime.close()
    _show(link, name, as_json, display_zone(runtime.loaded))
    raise typer.Exit(0 if link.state == "connected" else 1)


@app.command("adopt-state-folder")
def adopt_state_folder(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Record this host's state folder as the one holding the WMS connector's records, after
    the folder they were in is lost for good (a connector that keeps records there, such as
    Logikura, refuses to start on another folder: it would send again what was sent)."""
    from daemon import statedir

    app_ctx = get(ctx)
    try:
        runtime = app_ctx.runtime(app_ctx.load())
    except (ConfigError, DatabaseNotMigrated) as exc:
        fail(str(exc))
    try:
        folder = runtime.config.state_dir
        if statedir.recorded(runtime.db) == statedir.marker_of(folder) is not None:
            info(f"{folder} is already the folder of the WMS connector's records; nothing to do")
            return
        info(
            f"The WMS connector's records of what it already sent (e.g. Logikura's shipping "
            f"schedules) are not in {folder}: from now on they are kept there, and what they "
            "said is gone — an order whose schedule was sent from the lost folder may be sent "
            "again. Check the WMS for orders it already has before the next start."
        )
        if not yes and not typer.confirm(f"Record {folder} as the state folder?", default=False):
            fail("nothing changed")
        statedir.adopt(runtime.db, folder)
        info(f"recorded {folder}; start nebridge again")
    finally:
        runtime.close()
