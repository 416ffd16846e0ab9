"""``nebridge inbox``: WMS input accepted, pending, held and rejected, and retrying it."""

from __future__ import annotations

from datetime import tzinfo
from typing import Annotated

import typer
from rich.markup import escape

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
from daemon.inbox_admin import (
    InboxError,
    InboxListing,
    ListState,
    list_inbox,
    requeue_rejected,
    retry_held_event,
    retry_outcome,
)
from daemon.store.engine import DatabaseNotMigrated, check_migrated, make_engine

app = typer.Typer(help="WMS input: accepted, pending, held and rejected.", no_args_is_help=True)

REASON_LINES = 3
"""Lines of a rejection's errors shown in the table (``--json`` has them all)."""


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    state: Annotated[
        ListState,
        typer.Option(
            "--state",
            metavar="STATE",
            help="Which part of the inbox to show: accepted, pending, held, rejected or all.",
        ),
    ] = ListState.ALL,
    limit: Annotated[int, limit_option("At most this many rows per part.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List accepted batches, pending and held events, and rejected batches with reasons."""
    loaded = get(ctx).load()
    engine = make_engine(loaded.config.resolved_database_url, create=False)
    try:
        check_migrated(engine)
        listing = list_inbox(engine, state, limit)
    except DatabaseNotMigrated as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    if as_json:
        print_json(listing.as_dict())
    else:
        _print_listing(listing, display_zone(loaded))


def _print_listing(listing: InboxListing, zone: tzinfo | None) -> None:
    """Human view: one table per part, or a line saying it is empty."""
    if listing.accepted is not None:
        accepted = listing.accepted
        _table(
            "accepted batches",
            "newest first",
            accepted.total,
            ["id", "source", "kind", "events", "duplicates", "received at"],
            [
                [r.id, r.source, r.kind, r.events, r.duplicates, when(r.received_at, zone)]
                for r in accepted.rows
            ],
        )
    for title, events in (("pending events", listing.pending), ("held events", listing.held)):
        if events is None:
            continue
        _table(
            title,
            "oldest first",
            events.total,
            ["event", "warehouse", "source", "attempts", "reason"],
            [[r.ref, r.warehouse, r.source, r.attempts, r.reason] for r in events.rows],
        )
    if listing.held is not None and listing.held.total:
        typer.echo("once the cause is fixed: `nebridge inbox retry --event KIND:ID`")
    if listing.rejected is not None:
        rejected = listing.rejected
        _table(
            "rejected batches",
            "newest first",
            rejected.total,
            ["id", "source", "kind", "received at", "reason"],
            [
                [r.id, r.source, r.kind, when(r.received_at, zone), _shorten(r.reason)]
                for r in rejected.rows
            ],
        )
        if rejected.total:
            typer.echo(
                "fix the file (csv connector: <inbox>/rejected/NAME, errors in "
                "NAME.errors.txt), then `nebridge inbox retry NAME`"
            )


def _confirmed(question: str) -> bool:
    """The admin's answer; no answer (no terminal, end of input) is no."""
    try:
        return typer.confirm(question, err=True)
    except typer.Abort:
        return False


def _table(
    title: str, order: str, total: int, columns: list[str], rows: list[list[object]]
) -> None:
    """A table titled with how many rows of how many it shows, or a line if there are none.

    Cells are escaped: sources and reasons come from outside (``[product_code]`` is text,
    not rich markup).
    """
    if not total:
        typer.echo(f"no {title}")
        return
    shown = f"{len(rows)} of {total}" if len(rows) < total else str(total)
    print_table(
        f"{title} ({shown}, {order})",
        columns,
        [[None if cell is None else escape(str(cell)) for cell in row] for row in rows],
    )


def _shorten(reason: str) -> str:
    """The first lines of a rejection's errors, saying how many more there are."""
    lines = reason.splitlines()
    if len(lines) <= REASON_LINES:
        return reason
    more = len(lines) - REASON_LINES
    return "\n".join([*lines[:REASON_LINES], f"… {more} more line(s) (see --json)"])


@app.command("retry")
def retry_cmd(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help="A rejected batch (file name) to put back into the WMS inbox after fixing it.",
            show_default=False,
        ),
    ] = None,
    event: Annotated[
        str | None,
        typer.Option(
            "--event",
            help="A held event to process again, as KIND:ID (e.g. shipment:S-1).",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Do not ask before confirming a held partial or mismatching shipment."
        ),
    ] = False,
) -> None:
    """Retry a rejected batch after fixing it (NAME), or a held event (--event KIND:ID).

    A shipment held as partial or not matching its order is taken as the admin confirmed
    it: its Next Engine order is shipped whole; the command says so and asks first.
    """
    if (name is None) == (event is None):
        fail(
            "give either a rejected batch NAME or --event KIND:ID "
            "(`nebridge inbox list` shows both)",
            code=2,
        )
    app_ctx = get(ctx)
    loaded = app_ctx.load()
    if event is not None:
        engine = make_engine(loaded.config.resolved_database_url, create=False)
        try:
            check_migrated(engine)
            outcome = retry_outcome(engine, event)
            if outcome.warning is not None:
                info(outcome.warning)
                if not yes and not _confirmed("Confirm it?"):
                    fail("nothing changed; run it again and answer y, or add --yes")
            row = retry_held_event(engine, event)
        except (DatabaseNotMigrated, InboxError) as exc:
            fail(str(exc))
        finally:
            engine.dispose()
        info(
            f"{row.kind} {row.external_id} ({row.warehouse}) is pending again; "
            f"{outcome.effect} (now: `nebridge run --once`)"
        )
        return
    assert name is not None
    try:
        runtime = app_ctx.runtime(loaded)
    except (ConfigError, DatabaseNotMigrated) as exc:
        fail(str(exc))
    try:
        if runtime.connector is None:
            fail(
                runtime.connector_error
                or "no WMS connector could be started; `nebridge config check` says why"
            )
        where = requeue_rejected(
            runtime.engine,
            runtime.connector,
            loaded.config.wms.connector,
            runtime.connector_context(),
            name,
        )
    except InboxError as exc:
        fail(str(exc))
    finally:
        runtime.close()
    info(
        f"{name} is back in the WMS inbox ({where}); a running daemon takes it within "
        "seconds (now: `nebridge run --once`)"
    )
