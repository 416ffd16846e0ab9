"""``nebridge config check``: validate daemon.yaml and every plugin's options."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.cli.common import fail, get, print_json
from daemon.config import ConfigError, ConfigIssue, load_config
from daemon.config_admin import check_config

app = typer.Typer(help="Check the configuration.", no_args_is_help=True)


@app.command("check")
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate daemon.yaml: every key, plugin options (of disabled plugins too), that each
    enabled plugin loads, dependencies and the WMS connector. Exits 1 on any problem."""
    app_ctx = get(ctx)
    if as_json:  # core problems too as the same JSON (not only a one-line error)
        try:
            load_config(app_ctx.config_path)
        except ConfigError as exc:
            print_json({"config": str(exc.source), "valid": False,
                        "issues": [issue_dict(i) for i in exc.issues],
                        "plugins_failed": [], "warnings": []})
            raise typer.Exit(1) from None
    loaded = app_ctx.load()
    found = check_config(loaded)
    issues = found.issues
    if as_json:
        print_json({
            "config": str(loaded.path),
            "valid": not issues,
            "issues": [issue_dict(i) for i in issues],
            "plugins_failed": [{"name": r.name, "state": r.state.value, "error": r.error}
                               for r in found.host.failed()],
            "warnings": found.warnings,
        })
        raise typer.Exit(1 if issues else 0)
    for warning in found.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if issues:
        lines = "\n".join(f"  - {i}" for i in issues)
        fail(f"{loaded.path}: {len(issues)} problem(s):\n{lines}\n"
             "Fix them and run `nebridge config check` again.")
    typer.echo(f"{loaded.path}: configuration is valid "
               f"({len(loaded.config.warehouses)} warehouse(s), plugins enabled: "
               f"{', '.join(loaded.config.enabled_plugins()) or 'none'})")


def issue_dict(issue: ConfigIssue) -> dict[str, object]:
    """JSON view of one configuration problem."""
    return {"path": issue.path, "line": issue.line, "message": issue.message}


@app.command("example")
def example() -> None:
    """Print the commented example daemon.yaml shipped with nebridge (the demo's), to start an
    installation from: nebridge config example > daemon.yaml"""
    from daemon.cli.demo import EXAMPLE_CONFIG

    typer.echo(EXAMPLE_CONFIG.read_text(encoding="utf-8"), nl=False)
