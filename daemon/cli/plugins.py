"""``nebridge plugins``: list, inspect, enable and disable plugins."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.admin import AdminError, change_plugin, plugin_details, plugin_host, plugin_rows
from daemon.cli.common import fail, get, info, print_json, print_table

app = typer.Typer(help="Feature plugins and WMS connectors.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="Include disabled plugins.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List enabled plugins (``--all``: every installed one) with their load state."""
    host, _issues = plugin_host(get(ctx).load())
    rows = plugin_rows(host, show_all)
    if as_json:
        print_json(rows)
        return
    print_table(
        "plugins", ["name", "enabled", "state", "requires", "summary / error"],
        [[r["name"], "yes" if r["enabled"] else "no", r["state"], ", ".join(r["requires"]),
          r["error"] or r["summary"]] for r in rows],
    )


@app.command("info")
def info_cmd(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show one plugin: summary, requirements, hooks and its options' JSON schema."""
    host, _issues = plugin_host(get(ctx).load())
    try:
        data = plugin_details(host, name)
    except AdminError as exc:
        fail(str(exc))
    if as_json:
        print_json(data)
        return
    for key in ("name", "state", "enabled", "summary", "setting_ja", "requires", "hooks",
                "source", "distribution", "version", "error", "note"):
        value = data.get(key)
        if value not in (None, "", []):
            typer.echo(f"{key:>12}: {', '.join(value) if isinstance(value, list) else value}")
    schema = data.get("config_schema")
    if schema:
        typer.echo("     options:")
        for opt, spec in (schema.get("properties") or {}).items():
            default = f" (default {spec['default']!r})" if "default" in spec else ""
            typer.echo(f"              {opt}: {spec.get('description', spec.get('type', ''))}"
                       f"{default}")


def _change(ctx: typer.Context, name: str, enabled: bool) -> None:
    app_ctx = get(ctx)
    app_ctx.load()
    try:
        notes = change_plugin(app_ctx.config_path, name, enabled)
    except AdminError as exc:
        fail(str(exc))
    for note in notes:
        info(note)


@app.command("enable")
def enable_cmd(ctx: typer.Context, name: str) -> None:
    """Enable a plugin in daemon.yaml (comments and order kept)."""
    _change(ctx, name, True)


@app.command("disable")
def disable_cmd(ctx: typer.Context, name: str) -> None:
    """Disable a plugin in daemon.yaml (comments and order kept)."""
    _change(ctx, name, False)
