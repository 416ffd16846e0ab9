"""``nebridge outbox``: Next Engine actions and what became of them; retry and resolve."""

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
from daemon.outbox_admin import OutboxError, list_items, resolve_item, retry_item, shown_outcome
from daemon.store.engine import DatabaseNotMigrated, check_migrated, make_engine
from daemon.store.models import OutboxState

app = typer.Typer(help="Next Engine actions: list, retry, resolve.", no_args_is_help=True)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    state: Annotated[
        list[OutboxState] | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help="Only items in this state: pending, in_flight, done, "
            "failed, in_doubt or skipped (repeatable).",
        ),
    ] = None,
    limit: Annotated[int, limit_option("At most this many items (newest first).")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List outbox items: kind, subject, state, attempts, last error or result."""
    loaded = get(ctx).load()
    engine = make_engine(loaded.config.resolved_database_url, create=False)
    try:
        check_migrated(engine)
        rows = list_items(engine, [s.value for s in state or []], limit)
    except DatabaseNotMigrated as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    if as_json:
        print_json(rows)
        return
    if not rows:
        states = ", ".join(s.value for s in state or [])
        typer.echo("no outbox items" + (f" in state {states}" if states else ""))
        return
    zone = display_zone(loaded)
    print_table(
        "outbox",
        ["id", "kind", "subject", "warehouse", "state", "attempts", "updated at", "error / result"],
        [
            [
                r["id"],
                r["kind"],
                r["subject"],
                r["warehouse"],
                r["state"],
                r["attempts"],
                when(r["updated_at"], zone),
                shown_outcome(r)[:80],
            ]
            for r in rows
        ],
    )


def _change(ctx: typer.Context, action: str, item_id: int, applied: bool | None = None) -> None:
    config = get(ctx).load().config
    engine = make_engine(config.resolved_database_url, create=False)
    try:
        check_migrated(engine)
        message = (
            retry_item(engine, item_id)
            if action == "retry"
            else resolve_item(engine, item_id, bool(applied))
        )
    except (OutboxError, DatabaseNotMigrated) as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    info(message)


@app.command("retry")
def retry_cmd(ctx: typer.Context, item_id: int) -> None:
    """Send a failed or skipped item again (after fixing its cause)."""
    _change(ctx, "retry", item_id)


@app.command("resolve")
def resolve_cmd(
    ctx: typer.Context,
    item_id: int,
    applied: Annotated[
        bool | None,
        typer.Option(
            "--applied/--not-applied",
            help="What you found in Next Engine: the change is there (--applied) or not.",
        ),
    ] = None,
) -> None:
    """Settle an in-doubt item after checking Next Engine by hand."""
    if applied is None:
        fail("say what you found in Next Engine: --applied or --not-applied", code=2)
    _change(ctx, "resolve", item_id, applied)
