"""``nebridge systemd unit``: print a hardened unit for this installation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import get, info
from daemon.systemd_unit import (
    DEFAULT_CREDENTIAL,
    UnitSettings,
    installed_executable,
    render_unit,
    writable_paths,
)

app = typer.Typer(help="systemd integration.", no_args_is_help=True)


@app.command("unit")
def unit(
    ctx: typer.Context,
    user: Annotated[str, typer.Option(help="Static service user (and group).")] = "nebridge",
    credential: Annotated[Path, typer.Option(
        help="File holding the Next Engine client secret, loaded as a systemd credential.")]
    = DEFAULT_CREDENTIAL,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the unit here instead of printing it.")] = None,
) -> None:
    """Print the unit (Type=notify, watchdog, reload, credentials, hardening) for this install."""
    app_ctx = get(ctx)
    loaded = app_ctx.load()
    text = render_unit(UnitSettings(
        executable=installed_executable(),
        config=app_ctx.config_path.resolve(),
        user=user,
        group=user,
        credential=credential,
        extra_writable=writable_paths(loaded.config, loaded.config.wms.connector_section()),
    ))
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    info(f"wrote {output}; install it with: sudo cp {output} /etc/systemd/system/nebridge.service"
         " && sudo systemctl daemon-reload && sudo systemctl enable --now nebridge")
