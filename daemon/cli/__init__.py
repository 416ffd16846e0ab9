"""The ``nebridge`` admin CLI (Typer). Commands are thin: they call daemon service functions.

Exit codes: 0 ok, 1 operational failure, 2 usage error. Errors go to stderr and say what to
do next. Every listing accepts ``--json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon import __version__
from daemon.cli import (
    attention,
    common,
    config_cmd,
    db,
    demo,
    doctor,
    history,
    inbox,
    link,
    notify,
    orders,
    outbox,
    plugins,
    run,
    sandbox,
    status,
    stock,
    systemd_cmd,
    warehouses,
    wms,
)

app = typer.Typer(
    name="nebridge",
    help="Link a warehouse management system (WMS) to Next Engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,  # plain help, like git and systemctl: no <bool>, no boxes
    cls=common.CliGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nebridge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="daemon.yaml to use (env NEBRIDGE_CONFIG; "
                     "default ./daemon.yaml)", show_default=False),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True,
                           help="Show the version and exit.")
    ] = False,
) -> None:
    """nebridge: WMS ⇄ Next Engine integration daemon."""
    ctx.obj = common.AppContext.create(config)


app.add_typer(config_cmd.app, name="config")
app.add_typer(db.app, name="db")
app.add_typer(plugins.app, name="plugins")
app.add_typer(warehouses.app, name="warehouses")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(inbox.app, name="inbox")
app.add_typer(outbox.app, name="outbox")
app.add_typer(orders.app, name="orders")
app.add_typer(wms.app, name="wms")
app.add_typer(stock.app, name="stock")
app.add_typer(systemd_cmd.app, name="systemd")
app.add_typer(notify.app, name="notify")
app.command("run")(run.run)
app.command("status")(status.status)
app.command("attention")(attention.attention_cmd)
app.command("demo")(demo.demo)
app.command("doctor")(doctor.doctor)
app.command("history")(history.history)
app.command("connect")(link.connect_cmd)
app.command("unlink")(link.unlink_cmd)


def main() -> None:
    """Console-script entry point."""
    app()
