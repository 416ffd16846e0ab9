"""``nebridge doctor``: check everything, with a fix for each problem."""

from __future__ import annotations

from datetime import tzinfo
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import display_zone, get, print_json, print_table, times_in_zone
from daemon.doctor import as_dict, diagnose


def doctor(
    ctx: typer.Context,
    offline: Annotated[bool, typer.Option(help="Skip the checks that call Next Engine.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Config, database, plugins, paused stages, Next Engine link, tokens, WMS folders, clock.

    In fleet mode, of the company given with --company (its token pair in the vault).

    Exits 1 when a check fails; what waits for a person is a warning (exit 0).
    """
    app_ctx = get(ctx)
    if app_ctx.company is None and not _fleet_mode(app_ctx.config_path):
        found = diagnose(app_ctx.config_path, offline=offline)  # reports a bad daemon.yaml
    else:  # fleet mode: the company's configuration and its token pair in the vault
        loaded = app_ctx.load()  # refused without --company, with the codes
        fleet = app_ctx.fleet_database()
        try:
            found = diagnose(
                app_ctx.config_path,
                offline=offline,
                loaded=loaded,
                store=app_ctx.token_store(fleet),
            )
        finally:
            if fleet is not None:
                fleet.close()
    bad = found.failed
    if as_json:
        print_json(
            {
                "ok": not bad,
                "checks": [as_dict(c) for c in found.checks]
                + [as_dict(w, warning=True) for w in found.warnings],
            }
        )
    else:
        zone = _zone(app_ctx.config_path)
        print_table(
            "nebridge doctor",
            ["check", "ok", "detail", "fix"],
            [
                [c.name, "ok" if c.ok else "FAIL", times_in_zone(c.detail, zone), c.fix]
                for c in found.checks
            ]
            + [[w.name, "WARN", times_in_zone(w.detail, zone), w.fix] for w in found.warnings],
        )
        verdict = "all checks passed" if not bad else f"{len(bad)} problem(s) found"
        if found.warnings:
            verdict += f", {len(found.warnings)} warning(s)"
        typer.echo(verdict)
    raise typer.Exit(1 if bad else 0)


def _zone(config_path: Path) -> tzinfo | None:
    """The zone times are shown in (a plugin's link detail names its times in its own);
    the system's when daemon.yaml cannot be read (the diagnosis says why)."""
    from daemon.config import ConfigError, load_config

    try:
        return display_zone(load_config(config_path))
    except ConfigError:
        return None


def _fleet_mode(config_path: Path) -> bool:
    """Whether daemon.yaml sets ``companies_dir`` (False when it cannot be read: the
    diagnosis says why)."""
    from daemon.config import ConfigError, load_config

    try:
        return load_config(config_path).config.companies_dir is not None
    except ConfigError:
        return False
