"""``nebridge systemd unit``: print a hardened unit for this installation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import fail, get, info
from daemon.config import CLIENT_SECRET_CREDENTIAL, ConfigError
from daemon.pluginload import load_plugins
from daemon.systemd_unit import (
    UnitSettings,
    installed_executable,
    render_unit,
    unit_notes,
    writable_paths,
)
from hooks.files import write_file

app = typer.Typer(help="systemd integration.", no_args_is_help=True)


@app.command("unit")
def unit(
    ctx: typer.Context,
    user: Annotated[str, typer.Option(help="Static service user (and group).")] = "nebridge",
    wms_group: Annotated[str | None, typer.Option(
        "--wms-group", help="Group of the WMS's user: the service joins it, so order files and "
        "error reports (mode 0640) are readable by the WMS in folders owned by this group "
        "with the setgid bit (chgrp GROUP DIR && chmod 2770 DIR).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the unit here instead of printing it.")] = None,
) -> None:
    """Print the unit (Type=notify, watchdog, reload, credentials, hardening) for this install.

    Paths are made absolute; every secret the configuration needs (the Next Engine client
    secret, and the WMS connector's) is loaded from credentials_dir with LoadCredential=.
    """
    app_ctx = get(ctx)
    loaded = app_ctx.load()
    host, issues, _connector, _error = load_plugins(loaded)
    if issues:
        fail(str(ConfigError(app_ctx.config_path, issues)))
    spec = host.connector_specs()[loaded.config.wms.connector][1]
    settings = UnitSettings(
        executable=installed_executable(),
        config=app_ctx.config_path.absolute(),
        credentials_dir=loaded.config.credentials_dir,
        user=user,
        group=user,
        credentials=(CLIENT_SECRET_CREDENTIAL, *spec.credentials),
        extra_writable=writable_paths(loaded.config, app_ctx.config_path,
                                      loaded.config.wms.connector_section()),
        wms_group=wms_group,
    )
    text = render_unit(settings)
    for note in unit_notes(settings):
        info(f"note: {note}")
    if output is None:
        typer.echo(text, nl=False)
        return
    write_file(output, text.encode("utf-8"))  # never through a link planted at output
    info(f"wrote {output}; install it with: sudo cp {output} /etc/systemd/system/nebridge.service"
         " && sudo systemctl daemon-reload && sudo systemctl enable --now nebridge")
