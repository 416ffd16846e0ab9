"""``nebridge warehouses``: the configured warehouses and their Next Engine link flag."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.cli.common import fail, get, info, print_json, print_table, yes_no
from daemon.config_admin import AdminError, set_warehouse_link, warehouse_rows

app = typer.Typer(help="Warehouses (拠点) and their Next Engine link.", no_args_is_help=True)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List warehouses with their Next Engine link and order-import flags."""
    rows = warehouse_rows(get(ctx).load())
    if as_json:
        print_json(rows)
        return
    print_table(
        "warehouses",
        ["code", "name", "ne_linked", "import_orders", "shop_ids"],
        [
            [
                r["code"],
                r["name"],
                yes_no(r["ne_linked"]),
                yes_no(r["import_orders"]),
                ", ".join(r["shop_ids"]),
            ]
            for r in rows
        ],
    )


def _link(ctx: typer.Context, code: str, linked: bool) -> None:
    path, validation = get(ctx).edit_target()
    try:
        notes = set_warehouse_link(path, code, linked, **validation)
    except AdminError as exc:
        fail(str(exc))
    for note in notes:
        info(note)


@app.command("link")
def link_cmd(ctx: typer.Context, code: str) -> None:
    """Link a warehouse to Next Engine: its stock changes will reach Next Engine."""
    _link(ctx, code, True)


@app.command("unlink")
def unlink_cmd(ctx: typer.Context, code: str) -> None:
    """Unlink a warehouse: its stock changes stay out of Next Engine."""
    _link(ctx, code, False)
