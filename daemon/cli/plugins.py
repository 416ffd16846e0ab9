"""``nebridge plugins``: list, inspect, enable and disable plugins; write a new one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import fail, get, info, print_json, print_table, yes_no
from daemon.config_admin import (
    AdminError,
    change_plugin,
    plugin_details,
    plugin_host,
    plugin_rows,
)

app = typer.Typer(help="Feature plugins and WMS connectors.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    enabled_only: Annotated[
        bool,
        typer.Option("--enabled", help="Only the enabled plugins (and the WMS connector in use)."),
    ] = False,
    _all: Annotated[
        bool, typer.Option("--all", hidden=True, help="Every installed plugin (the default).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List every installed plugin: enabled or not, load state, requirements, summary."""
    host, _issues = plugin_host(get(ctx).load())
    rows = plugin_rows(host, enabled_only)
    if as_json:
        print_json(rows)
        return
    print_table(
        "plugins",
        ["name", "enabled", "state", "requires", "summary / error"],
        [
            [
                r["name"],
                yes_no(r["enabled"]),
                r["state"],
                ", ".join(r["requires"]),
                r["error"] or r["summary"],
            ]
            for r in rows
        ],
    )


@app.command("info")
def info_cmd(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show one plugin: summary, requirements, hooks and its options (disabled ones too)."""
    host, _issues = plugin_host(get(ctx).load())
    try:
        data = plugin_details(host, name)
    except AdminError as exc:
        fail(str(exc))
    if as_json:
        print_json(data)
        return
    for key in (
        "name",
        "state",
        "enabled",
        "summary",
        "setting_ja",
        "requires",
        "hook_api",
        "hooks",
        "source",
        "distribution",
        "version",
        "error",
        "note",
    ):
        value = data.get(key)
        if value not in (None, "", []):
            shown = (
                ", ".join(value)
                if isinstance(value, list)
                else yes_no(value)
                if isinstance(value, bool)
                else value
            )
            typer.echo(f"{key:>12}: {shown}")
    schema = data.get("config_schema")
    if schema:
        typer.echo("     options:")
        for opt, spec in (schema.get("properties") or {}).items():
            default = f" (default {spec['default']!r})" if "default" in spec else ""
            typer.echo(
                f"              {opt}: {spec.get('description', spec.get('type', ''))}{default}"
            )


def _change(ctx: typer.Context, name: str, enabled: bool) -> None:
    path, validation = get(ctx).edit_target()
    try:
        notes = change_plugin(path, name, enabled, **validation)
    except AdminError as exc:
        fail(str(exc))
    for note in notes:
        info(note)


@app.command("enable")
def enable_cmd(ctx: typer.Context, name: str) -> None:
    """Enable a plugin in daemon.yaml, or the company's file with --company (comments and
    order kept)."""
    _change(ctx, name, True)


@app.command("disable")
def disable_cmd(ctx: typer.Context, name: str) -> None:
    """Disable a plugin in daemon.yaml, or the company's file with --company (comments and
    order kept)."""
    _change(ctx, name, False)


@app.command("new")
def new_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The plugin's name: a lowercase Python identifier.")],
    kind: Annotated[
        str,
        typer.Option(
            "--kind", help="filter | actions | connector | notifier: the example it starts from."
        ),
    ] = "filter",
    folder: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Where to write it (new or empty; default ./nebridge-NAME).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a new plugin package (pyproject, plugin, test with the testing kit, README)."""
    from daemon.scaffold import PluginKind, ScaffoldError, create

    get(ctx)  # refuses --company: a new plugin belongs to no company

    kinds = [k.value for k in PluginKind]
    if kind not in kinds:
        fail(f"unknown --kind {kind!r}: choose one of {', '.join(kinds)}", code=2)
    try:
        made = create(name, PluginKind(kind), folder)
    except ScaffoldError as exc:
        fail(str(exc), code=2)
    if as_json:
        print_json(
            {
                "folder": str(made.folder),
                "distribution": made.distribution,
                "files": list(made.files),
            }
        )
        return
    typer.echo(f"wrote {made.distribution} in {made.folder}:")
    for file in made.files:
        typer.echo(f"  {file}")
    typer.echo(
        f"next: cd {made.folder} && pip install -e '.[test]' && pytest, then "
        f"`nebridge plugins enable {name}`"
    )


@app.command("commands")
def commands_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the commands enabled plugins add to nebridge, and those refused (a core name)."""
    from daemon.cli import COMMANDS
    from daemon.surface import COMMAND_NAME, command_host, plugin_commands

    loaded = get(ctx).load()
    rows = plugin_commands(command_host(loaded), loaded.path, COMMANDS).as_rows()
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no enabled plugin adds a command (`nebridge plugins list` shows the plugins)")
        return
    print_table(
        "plugin commands",
        ["command", "plugin", "state", "help / reason"],
        [
            [
                f"nebridge {r['name'] if COMMAND_NAME.fullmatch(r['name']) else repr(r['name'])}",
                r["plugin"],
                r["state"],
                r["reason"] or r["help"],
            ]
            for r in rows
        ],
    )
