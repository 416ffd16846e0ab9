"""``nebridge orders``: the Next Engine orders nebridge imported or holds; retry and drop.

None of these commands calls Next Engine or the WMS: ``retry`` only has the next order import
read the order again; ``drop`` only stops nebridge from ever importing it; ``stopped`` and
``shipped-anyway`` close what ``order_watch`` put in front of a person (``--apply-stock``
queues stock changes that the next dispatch applies).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from sqlalchemy import Engine

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
from daemon.importer import (
    DROPPED,
    HELD,
    INSTRUCTED,
    RETRY,
    RUN_ONE_NOW,
    OrderAdminError,
    drop_order,
    list_orders,
    retry_order,
)
from daemon.orderwatch import (
    CANCELLED,
    REINSTRUCT,
    ShippedAnywayError,
    shipped_anyway,
    stopped,
)
from daemon.store.engine import DatabaseNotMigrated, check_migrated, make_engine
from daemon.store.models import utcnow

app = typer.Typer(
    help="Imported and held Next Engine orders: list, retry, drop; orders "
    "changed after import: stopped, shipped-anyway.",
    no_args_is_help=True,
)


class OrderState(StrEnum):
    """Where an order stands in nebridge."""

    INSTRUCTED = INSTRUCTED
    HELD = HELD
    RETRY = RETRY
    DROPPED = DROPPED
    CANCELLED = CANCELLED
    REINSTRUCT = REINSTRUCT


def _engine(ctx: typer.Context) -> Engine:
    config = get(ctx).load().config
    engine = make_engine(config.resolved_database_url, create=False)
    try:
        check_migrated(engine)
    except DatabaseNotMigrated as exc:
        engine.dispose()
        fail(str(exc))
    return engine


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    state: Annotated[
        list[OrderState] | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help="Only orders in this state: instructed, held, retry, "
            "dropped, cancelled (in Next Engine after import) or reinstruct (edited there, its "
            "new content not sent yet) (repeatable).",
        ),
    ] = None,
    warehouse: Annotated[
        str | None,
        typer.Option("--warehouse", metavar="CODE", help="Only orders of this warehouse."),
    ] = None,
    limit: Annotated[int, limit_option("At most this many orders (newest change first).")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List orders: instructed to the WMS, held (with the reason), retry or dropped."""
    engine = _engine(ctx)
    try:
        rows = list_orders(engine, [s.value for s in state or []], limit, warehouse)
    finally:
        engine.dispose()
    if as_json:
        print_json(rows)
        return
    if not rows:
        states = ", ".join(s.value for s in state or [])
        typer.echo(
            "no orders"
            + (f" in state {states}" if states else "")
            + (f" of warehouse {warehouse}" if warehouse else "")
        )
        return
    zone = display_zone(get(ctx).load())
    print_table(
        "orders",
        ["ne_order_id", "warehouse", "state", "updated at", "reason / batch"],
        [
            [
                r["ne_order_id"],
                r["warehouse"],
                r["state"],
                when(r["updated_at"], zone),
                (r["reason"] if r["state"] != INSTRUCTED else r["instruction_batch"]) or "",
            ]
            for r in rows
        ],
    )


#: ``orders retry --company``: a worker serving the company runs the import itself (and
#: refuses ``run --once --company`` meanwhile).
FLEET_RUN_NOW = (
    "the worker serving the company does it at its next order import; with no worker running "
    "(`nebridge companies list`), `nebridge run --once` runs one now"
)


def _change(ctx: typer.Context, ne_order_id: str, drop: bool) -> None:
    engine = _engine(ctx)
    try:
        if drop:
            message = drop_order(engine, ne_order_id)
        else:
            run_now = FLEET_RUN_NOW if get(ctx).fleet else RUN_ONE_NOW
            message = retry_order(engine, ne_order_id, run_now=run_now)
    except OrderAdminError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    info(message)


@app.command("retry")
def retry_cmd(ctx: typer.Context, ne_order_id: str) -> None:
    """Render a held (or dropped) order again after fixing it: the next order import reads it
    from Next Engine by id and imports or holds it anew. Nothing is sent to Next Engine now."""
    _change(ctx, ne_order_id, drop=False)


@app.command("drop")
def drop_cmd(ctx: typer.Context, ne_order_id: str) -> None:
    """Give a held order up for good: nebridge never imports it. Nothing changes in Next Engine
    (ship or cancel the order there by hand); `orders retry` undoes it."""
    _change(ctx, ne_order_id, drop=True)


@app.command("stopped")
def stopped_cmd(ctx: typer.Context, ne_order_id: str) -> None:
    """Note that an order cancelled or edited in Next Engine, which the WMS refused to drop
    (picking started), was stopped in the WMS by hand (closes its attention item)."""
    engine = _engine(ctx)
    try:
        message = stopped(engine, ne_order_id)
    except ShippedAnywayError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    info(message)


@app.command("shipped-anyway")
def shipped_anyway_cmd(
    ctx: typer.Context,
    ne_order_id: str,
    apply_stock: Annotated[
        bool,
        typer.Option(
            "--apply-stock",
            help="The goods left for good: take them off Next Engine stock "
            "(one stock change per product, applied once).",
        ),
    ] = False,
    leave_stock: Annotated[
        bool,
        typer.Option("--leave-stock", help="The goods came back or never left: change nothing."),
    ] = False,
) -> None:
    """Decide on goods the WMS shipped for an order cancelled in Next Engine (the order is
    never shipped there): apply the stock change to Next Engine, or leave stock as it is."""
    if apply_stock == leave_stock:
        fail("give exactly one of --apply-stock or --leave-stock", code=2)
    loaded = get(ctx).load()
    linked = {w.code for w in loaded.config.warehouses if w.ne_linked}
    engine = _engine(ctx)
    try:
        message = shipped_anyway(engine, ne_order_id, apply_stock, linked, utcnow)
    except ShippedAnywayError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    info(message)
