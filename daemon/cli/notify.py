"""``nebridge notify``: send a test message through each sink; list what was sent."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.cli.common import (
    display_zone,
    fail,
    get,
    info,
    limit_option,
    print_json,
    print_table,
    when,
)
from daemon.config import ConfigError
from daemon.notify import recent
from daemon.store.engine import DatabaseNotMigrated, check_migrated, make_engine

app = typer.Typer(
    help="Notifications: send a test message, list what was sent.", no_args_is_help=True
)


@app.command("test")
def test_cmd(
    ctx: typer.Context,
    plugin: Annotated[
        str | None,
        typer.Option(
            "--plugin", help="Only this notifier plugin (e.g. notify_email).", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Send a test message through each enabled notifier plugin now; report each."""
    app_ctx = get(ctx)
    try:
        runtime = app_ctx.runtime(app_ctx.load())  # fleet mode: the company's, naming it
    except (ConfigError, DatabaseNotMigrated) as exc:
        fail(str(exc))
    try:
        notifier = runtime.notifier()
        sinks = notifier.sinks()
        if plugin is not None and plugin not in sinks:
            fail(
                f"{plugin} is not an enabled notifier plugin (enabled: "
                f"{', '.join(sinks) or 'none'}); enable it with `nebridge plugins enable "
                f"{plugin}` and set its options in daemon.yaml",
                code=2,
            )
        if not sinks:
            fail(
                "no notifier plugin is enabled; enable notify_email or notify_webhook "
                "(`nebridge plugins enable notify_webhook`) and set its options"
            )
        results = notifier.send_test(plugin)
    finally:
        runtime.close()
    if as_json:
        print_json([{"sink": r.sink, "ok": r.ok, "error": r.error} for r in results])
    else:
        for r in results:
            typer.echo(f"{r.sink}: sent" if r.ok else f"{r.sink}: FAILED — {r.error}")
        if not all(r.ok for r in results):
            info(
                "fix the plugin's options in daemon.yaml (or the receiving side), then run "
                "`nebridge notify test` again"
            )
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    limit: Annotated[int, limit_option("At most this many notifications (newest first).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List recent notifications with their delivery state per sink."""
    loaded = get(ctx).load()
    engine = make_engine(loaded.config.resolved_database_url, create=False)
    try:
        check_migrated(engine)
        rows = recent(engine, limit)
    except DatabaseNotMigrated as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no notifications")
        return
    zone = display_zone(loaded)
    print_table(
        "notifications",
        ["id", "at", "event", "title", "deliveries"],
        [
            [
                r["id"],
                when(r["created_at"], zone),
                r["event"],
                r["title"][:60],
                "; ".join(
                    f"{d['sink']} {d['state']}"
                    + (f" ×{d['attempts']}" if d["attempts"] > 1 else "")
                    + (f" ({d['last_error'][:60]})" if d["last_error"] else "")
                    for d in r["deliveries"]
                )
                or "no sink",
            ]
            for r in rows
        ],
    )
