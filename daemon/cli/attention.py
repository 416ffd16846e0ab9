"""``nebridge attention``: everything that waits for a person, each with the command that
resolves it (held orders and events, failed and in-doubt actions, rejected files, paused and
crashed stages, problems the WMS connector reported)."""

from __future__ import annotations

from datetime import tzinfo
from typing import Annotated, Any

import typer

from daemon.cli.common import display_zone, fail, get, limit_option, print_json, when
from daemon.config_admin import AdminError
from daemon.status import attention_report


def attention_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    limit: Annotated[
        int, limit_option("Show at most N items (newest first); every kind is counted in full.")
    ] = 50,
    warehouse: Annotated[
        str | None,
        typer.Option(
            "--warehouse",
            help="Only this warehouse's items (and those tied to none, such as "
            "paused stages and rejected files).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List what waits for a person, newest first, with the reason and the fix for each."""
    app_ctx = get(ctx)
    loaded = app_ctx.load()
    if warehouse is not None and loaded.config.warehouse(warehouse) is None:
        codes = ", ".join(w.code for w in loaded.config.warehouses) or "none"
        fail(f"no warehouse {warehouse!r} in {loaded.path} (configured: {codes})", code=2)
    try:
        data = attention_report(
            loaded, limit=limit, warehouse=warehouse, company=app_ctx.company_code
        ).as_dict()
    except AdminError as exc:
        fail(str(exc))
    if as_json:
        print_json(data)
        return
    print_attention(
        data, more_hint="`nebridge attention --limit N` shows more", zone=display_zone(loaded)
    )


def print_attention(data: dict[str, Any], more_hint: str, zone: tzinfo | None = None) -> None:
    """Human view of an attention report (``AttentionReport.as_dict()``), times in ``zone``."""
    if not data["total"]:
        typer.echo("nothing waits for a person")
        return
    counts = ", ".join(
        f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(data["counts"].items())
    )
    typer.echo(f"{data['total']} thing(s) wait for a person: {counts}")
    for item in data["items"]:
        where = " ".join(p for p in (item["warehouse"], item["subject"]) if p)
        typer.echo(f"- {item['kind']} {where} (since {when(item['since'], zone)})")
        typer.echo(f"    reason: {item['reason']}")
        typer.echo(f"    fix: {item['fix']}")
    if data["total"] > len(data["items"]):
        typer.echo(f"(the newest {len(data['items'])} of {data['total']}; {more_hint})")
