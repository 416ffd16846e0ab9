"""``nebridge doctor``: check everything, with a fix for each problem."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.cli.common import get, print_json, print_table
from daemon.doctor import as_dict, run_checks


def doctor(
    ctx: typer.Context,
    offline: Annotated[bool, typer.Option(help="Skip the checks that call Next Engine.")] =
    False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Config, database migration, plugins, Next Engine link, tokens, WMS folders, clock."""
    checks = run_checks(get(ctx).config_path, offline=offline)
    bad = [c for c in checks if not c.ok]
    if as_json:
        print_json({"ok": not bad, "checks": [as_dict(c) for c in checks]})
    else:
        print_table("nebridge doctor", ["check", "ok", "detail", "fix"],
                    [[c.name, "ok" if c.ok else "FAIL", c.detail, c.fix] for c in checks])
        typer.echo("all checks passed" if not bad else f"{len(bad)} problem(s) found")
    raise typer.Exit(1 if bad else 0)
