"""``nebridge config check``: validate daemon.yaml and every enabled plugin's options."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.admin import plugin_host
from daemon.cli.common import fail, get, print_json

app = typer.Typer(help="Check the configuration.", no_args_is_help=True)


@app.command("check")
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate daemon.yaml: core keys, plugin options, dependencies and the WMS connector."""
    app_ctx = get(ctx)
    loaded = app_ctx.load()
    host, issues = plugin_host(loaded)
    failed = [r for r in host.failed()]
    if as_json:
        print_json({
            "config": str(loaded.path),
            "valid": not issues,
            "issues": [{"path": i.path, "line": i.line, "message": i.message} for i in issues],
            "plugins_failed": [{"name": r.name, "error": r.error} for r in failed],
        })
        raise typer.Exit(1 if issues else 0)
    if issues:
        lines = "\n".join(f"  - {i}" for i in issues)
        fail(f"{loaded.path}: {len(issues)} problem(s):\n{lines}\n"
             "Fix them and run `nebridge config check` again.")
    for record in failed:
        typer.echo(f"warning: plugin {record.name} is {record.state.value}: {record.error}",
                   err=True)
    typer.echo(f"{loaded.path}: configuration is valid "
               f"({len(loaded.config.warehouses)} warehouse(s), plugins enabled: "
               f"{', '.join(loaded.config.enabled_plugins()) or 'none'})")
