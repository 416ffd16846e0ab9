"""``nebridge history``: the audit trail of one order, shipment or receipt."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.cli.common import display_zone, fail, get, print_json, print_table, when
from daemon.history import event_history, goods_history, order_history
from daemon.store.engine import DatabaseNotMigrated, check_migrated, make_engine


def history(
    ctx: typer.Context,
    order: Annotated[str | None, typer.Option("--order", help="Next Engine order id.")] = None,
    shipment: Annotated[str | None, typer.Option("--shipment", help="WMS shipment id.")] = None,
    receipt: Annotated[str | None, typer.Option("--receipt", help="WMS receipt id.")] = None,
    goods: Annotated[
        str | None, typer.Option("--goods", help="Next Engine goods code: its stock corrections.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show what happened to one order, shipment, receipt or goods' stock corrections, from
    arrival (or decision) to Next Engine."""
    chosen = [
        (k, v)
        for k, v in (
            ("order", order),
            ("shipment", shipment),
            ("receipt", receipt),
            ("goods", goods),
        )
        if v
    ]
    if len(chosen) != 1:
        fail("give exactly one of --order, --shipment, --receipt or --goods", code=2)
    kind, ident = chosen[0]
    loaded = get(ctx).load()
    engine = make_engine(loaded.config.resolved_database_url, create=False)
    try:
        check_migrated(engine)
        steps = (
            order_history(engine, ident)
            if kind == "order"
            else goods_history(engine, ident)
            if kind == "goods"
            else event_history(engine, kind, ident)
        )
    except DatabaseNotMigrated as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    if not steps:
        fail(
            f"nebridge knows no {kind} {ident}; `nebridge inbox list` and `nebridge outbox "
            "list` show what it holds"
        )
    if as_json:
        print_json({"kind": kind, "id": ident, "steps": [s.as_dict() for s in steps]})
        return
    print_table(
        f"history of {kind} {ident}",
        ["at", "what", "detail"],
        [[when(s.at, display_zone(loaded)), s.what, s.detail] for s in steps],
    )
