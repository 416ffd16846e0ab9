"""``nebridge doctor``: check everything, with a fix for each problem."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.cli.common import get, print_json, print_table
from daemon.doctor import as_dict, diagnose


def doctor(
    ctx: typer.Context,
    offline: Annotated[bool, typer.Option(help="Skip the checks that call Next Engine.")] =
    False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Config, database, plugins, paused stages, Next Engine link, tokens, WMS folders, clock.

    Exits 1 when a check fails; what waits for a person is a warning (exit 0).
    """
    found = diagnose(get(ctx).config_path, offline=offline)
    bad = found.failed
    if as_json:
        print_json({"ok": not bad,
                    "checks": [as_dict(c) for c in found.checks]
                    + [as_dict(w, warning=True) for w in found.warnings]})
    else:
        print_table("nebridge doctor", ["check", "ok", "detail", "fix"],
                    [[c.name, "ok" if c.ok else "FAIL", c.detail, c.fix] for c in found.checks]
                    + [[w.name, "WARN", w.detail, w.fix] for w in found.warnings])
        verdict = "all checks passed" if not bad else f"{len(bad)} problem(s) found"
        if found.warnings:
            verdict += f", {len(found.warnings)} warning(s)"
        typer.echo(verdict)
    raise typer.Exit(1 if bad else 0)
