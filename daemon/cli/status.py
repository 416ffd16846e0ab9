"""``nebridge status``: is stock and shipment data flowing, and what needs attention."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.cli.attention import print_attention
from daemon.cli.common import (
    display_zone,
    fail,
    get,
    print_json,
    print_table,
    times_in_zone,
    when,
)
from daemon.linkinfo import LinkInfo, describe
from daemon.pluginload import load_plugins
from daemon.status import collect_status, wms_link
from daemon.store.reads import StoreUnreadable, open_reader


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show plugins, last runs per warehouse and stage, backlog, and what waits for a person.

    In fleet mode without --company: the fleet overview (workers, companies, unserved ones,
    totals); with --company CODE: that company.
    """
    app_ctx = get(ctx)
    if app_ctx.fleet and app_ctx.company is None:
        from daemon.cli.companies import print_fleet_status

        print_fleet_status(app_ctx.load_base(), as_json)
        return
    loaded = app_ctx.load()
    host, _issues, connector, _error = load_plugins(loaded)
    fleet = app_ctx.fleet_database()
    try:
        with open_reader(loaded.config.resolved_database_url) as reader:
            data = collect_status(
                loaded, reader, host, store=app_ctx.token_store(fleet), company=app_ctx.company_code
            )
    except StoreUnreadable as exc:
        fail(str(exc))
    finally:
        if fleet is not None:
            fleet.close()
    wms = wms_link(loaded, connector)
    if wms is not None:
        data["wms"] = wms
    if as_json:
        print_json(data)
        if data.get("problems"):
            raise typer.Exit(1)  # as on a missing SQLite file: a script sees it is not ready
        return
    db = data["database"]
    typer.echo(f"config: {data['config']}")
    behind = "" if db["up_to_date"] else f" — needs {db['latest']}: run `nebridge db upgrade`"
    typer.echo(f"database: migration {db['revision'] or '(empty)'}{behind}")
    zone = display_zone(loaded)
    if "nextengine" in data:
        typer.echo(
            describe(
                LinkInfo(
                    **{
                        k: v
                        for k, v in data["nextengine"].items()
                        if k in ("state", "company_id", "company_name", "reason", "fix")
                    }
                )
            )
        )
        ends = data["nextengine"]
        if ends.get("warning"):
            typer.echo(f"  WARNING: {times_in_zone(ends['warning'], zone)}")
        if ends["refresh_token_end"]:
            typer.echo(
                f"  access token until {when(ends['access_token_end'], zone)}, "
                f"refresh token until {when(ends['refresh_token_end'], zone)}"
            )
    if "wms" in data:
        wms_state = data["wms"]
        detail = times_in_zone(wms_state["detail"], zone)
        typer.echo(f"WMS ({wms_state['connector']}): {wms_state['state']} — {detail}")
    typer.echo(f"plugins loaded: {', '.join(data['plugins']['loaded']) or 'none'}")
    for bad in data["plugins"]["needs_attention"]:
        typer.echo(f"plugin {bad['name']} {bad['state']}: {bad['error']}")
    rows = []
    for wh in data["warehouses"]:
        for stage, run in wh["stages"].items():
            rows.append(
                [
                    wh["code"],
                    "yes" if wh["ne_linked"] else "no",
                    stage,
                    when(run["at"], zone) if run else "never",
                    run["outcome"] if run else "",
                    f"{run['items_in']}/{run['items_out']}" if run else "",
                    (run["detail"] or "")[:60] if run else "",
                ]
            )
    if rows:
        print_table(
            "last runs",
            ["warehouse", "ne_linked", "stage", "at", "outcome", "in/out", "detail"],
            rows,
        )
    for kind, states in data["inbox"].items():
        typer.echo(f"inbox {kind}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    if data["outbox"]:
        typer.echo("outbox: " + ", ".join(f"{n} {s}" for s, n in sorted(data["outbox"].items())))
    notify = data.get("notify")
    if notify is not None:
        waiting = ", ".join(
            f"{n} waiting for {sink}" for sink, n in sorted(notify["waiting"].items())
        )
        typer.echo(
            f"notifications: {', '.join(notify['sinks']) or 'no sink enabled'}"
            + (f" ({waiting})" if waiting else "")
        )
    for code, kinds in sorted(data.get("order_watch", {}).items()):
        typer.echo(
            f"order watch {code}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        )
    for stage, reason in data["paused_stages"].items():
        typer.echo(f"PAUSED {stage}: {reason}")
    if data.get("problems"):  # nothing was read from the store: "nothing waits" would mislead
        fail(
            "the database is not migrated (or is empty): "
            "create its tables with `nebridge db upgrade`"
        )
    print_attention(
        data["attention"],
        more_hint="`nebridge attention` lists them all",
        zone=zone,
    )
