"""``nebridge systemd unit``: print a hardened unit for this installation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from daemon.cli.common import fail, get, info
from daemon.config import CLIENT_SECRET_CREDENTIAL, ConfigError, LoadedConfig
from daemon.pluginload import load_plugins
from daemon.systemd_unit import (
    STATE_BASE,
    UnitSettings,
    installed_executable,
    managed_folder,
    outermost,
    private_paths,
    render_unit,
    unit_notes,
    writable_paths,
)
from hooks.files import write_file

if TYPE_CHECKING:
    from daemon.fleet.companies import Companies

app = typer.Typer(help="systemd integration.", no_args_is_help=True)


@app.command("unit")
def unit(
    ctx: typer.Context,
    user: Annotated[str, typer.Option(help="Static service user (and group).")] = "nebridge",
    wms_group: Annotated[
        str | None,
        typer.Option(
            "--wms-group",
            help="Group of the WMS's user: the service joins it, so order files and "
            "error reports (mode 0640) are readable by the WMS in folders owned by this group "
            "with the setgid bit (chgrp GROUP DIR && chmod 2770 DIR).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the unit here instead of printing it."),
    ] = None,
) -> None:
    """Print the unit (Type=notify, watchdog, reload, credentials, hardening) for this install.

    Paths are made absolute; every secret the configuration needs (the Next Engine client
    secret, and the WMS connector's) is loaded from credentials_dir with LoadCredential=.
    In fleet mode the unit also loads the vault key, lets the service write every company's
    WMS folders, and says how to run the same unit on several hosts.
    """
    from daemon.cli.config_cmd import inherited_sections
    from daemon.fleet.companies import Companies

    app_ctx = get(ctx)
    loaded = app_ctx.load()
    host, issues, _connector, _error = load_plugins(loaded)
    fleet = Companies(loaded) if loaded.config.companies_dir is not None else None
    # a fleet's daemon.yaml needs no `wms:` (nor its secrets) when every company has its own
    wms_used = fleet is None or "wms" in inherited_sections(fleet)
    issues = [i for i in issues if wms_used or not i.path.startswith("wms")]
    if issues:
        fail(str(ConfigError(app_ctx.config_path, issues)))
    spec = host.connector_specs().get(loaded.config.wms.connector) if wms_used else None
    credentials = (CLIENT_SECRET_CREDENTIAL, *(spec[1].credentials if spec else ()))
    state = loaded.config.state_dir.absolute()
    managed = state if managed_folder(state, STATE_BASE) is not None else None
    # in fleet mode daemon.yaml's WMS folders are writable only if a company uses them
    wms_options = {} if fleet is not None else loaded.config.wms.connector_section()
    writable = writable_paths(loaded.config, app_ctx.config_path, wms_options, managed)
    private = private_paths(loaded.config)
    if fleet is not None:
        credentials, writable, private = _fleet_paths(
            loaded, fleet, credentials, writable, private, managed
        )
    settings = UnitSettings(
        executable=installed_executable(),
        config=app_ctx.config_path.absolute(),
        credentials_dir=loaded.config.credentials_dir,
        user=user,
        group=user,
        credentials=credentials,
        extra_writable=writable,
        wms_group=wms_group,
        companies_dir=loaded.config.companies_dir,
        lease_seconds=loaded.config.fleet_lease_seconds,
        state_dir=state,
        private=private,
    )
    text = render_unit(settings)
    for note in unit_notes(settings):
        info(f"note: {note}")
    if output is None:
        typer.echo(text, nl=False)
        return
    write_file(output, text.encode("utf-8"))  # never through a link planted at output
    info(
        f"wrote {output}; install it with: sudo cp {output} /etc/systemd/system/nebridge.service"
        " && sudo systemctl daemon-reload && sudo systemctl enable --now nebridge"
    )


def _fleet_paths(
    loaded: LoadedConfig,
    companies: Companies,
    credentials: tuple[str, ...],
    writable: tuple[Path, ...],
    private: tuple[Path, ...],
    managed: Path | None,
) -> tuple[tuple[str, ...], tuple[Path, ...], tuple[Path, ...]]:
    """Fleet mode: the vault key (and the previous one while its file is in credentials_dir:
    a key rotation is under way) and each company's connector secrets as credentials, and
    each company's WMS folders and state as writable paths, its state as private ones
    (refused files are left out: the note says so)."""
    from daemon.fleet.vault import KEY_CREDENTIAL, PREVIOUS_KEY_CREDENTIAL

    for refusal in companies.refused:
        info(f"note: {refusal.path} is refused and left out of the unit: {refusal}")
    names = [*credentials, KEY_CREDENTIAL]
    if (loaded.config.credentials_dir / PREVIOUS_KEY_CREDENTIAL).exists():
        names.append(PREVIOUS_KEY_CREDENTIAL)
    paths, secret = list(writable), list(private)
    for company in companies.companies.values():
        company_loaded = LoadedConfig(company.path or loaded.path, company.config)
        host, _issues, _connector, _error = load_plugins(company_loaded)
        spec = host.connector_specs().get(company.config.wms.connector)
        if spec is not None:
            names += spec[1].credentials
        paths += writable_paths(
            company.config, company_loaded.path, company.config.wms.connector_section(), managed
        )
        secret += private_paths(company.config)
    return tuple(dict.fromkeys(names)), outermost(paths), tuple(dict.fromkeys(secret))
