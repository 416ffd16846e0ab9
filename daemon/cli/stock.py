"""``nebridge stock``: compare Next Engine stock with the warehouses, correct on request.

``diff`` reads Next Engine's stock master and the newest stock snapshot of every linked
warehouse and lists each goods whose stock differs, with what is in flight and why it
differs. ``reconcile --apply`` turns drifts into stock actions sent by the dispatcher, once.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Annotated

import typer

from daemon.cli.common import (
    display_zone,
    fail,
    get,
    info,
    print_json,
    print_table,
    times_in_zone,
    when,
)
from daemon.config import ConfigError
from daemon.nextengine.errors import NextEngineError
from daemon.runtime import Runtime
from daemon.stock import StockDiff, StockError, diff_now, link_key_of, reconcile, take_snapshots
from daemon.store.engine import DatabaseNotMigrated

app = typer.Typer(
    help="Stock drift: compare Next Engine with the warehouses, correct it.", no_args_is_help=True
)

_WAREHOUSE = typer.Option(
    "--warehouse", metavar="CODE", help="Only goods this warehouse holds or links."
)
_JSON = typer.Option("--json", help="Machine-readable output.")


def _runtime(ctx: typer.Context) -> Runtime:
    app_ctx = get(ctx)
    loaded = app_ctx.load()
    try:
        return app_ctx.runtime(loaded)
    except (ConfigError, DatabaseNotMigrated) as exc:
        fail(str(exc))


def _diff(runtime: Runtime, take: bool) -> StockDiff:
    try:
        return diff_now(runtime, take=take)
    except StockError as exc:
        fail(str(exc))
    except OSError as exc:  # the counts the WMS dropped first (a missing inbox): the reason
        fail(f"the WMS's stock counts could not be read: {exc}")
    except NextEngineError as exc:
        fail(
            f"Next Engine stock could not be read: {exc}; `nebridge doctor` shows the link, "
            "then run the command again"
        )


@app.command("take")
def take_cmd(ctx: typer.Context, as_json: Annotated[bool, _JSON] = False) -> None:
    """Take the stock counts the WMS has ready now (stock-*.csv files; an API WMS is read)."""
    runtime = _runtime(ctx)
    try:
        if runtime.connector is None:
            fail(runtime.connector_error or "no WMS connector; `nebridge config check` says why")
        try:
            report = take_snapshots(
                runtime.db, runtime.connector, runtime.connector_context(), take=True
            )
        except OSError as exc:  # a folder the WMS cannot be read from: the reason says why
            fail(f"the WMS's stock counts could not be read: {exc}")
    finally:
        runtime.close()
    if as_json:
        print_json(
            {"snapshots": report.stored, "accepted": report.accepted, "rejected": report.rejected}
        )
    else:
        info(
            f"{len(report.stored)} snapshot(s) stored from {len(report.accepted)} batch(es); "
            f"{len(report.rejected)} rejected"
            + (
                " (`nebridge inbox list` shows why; fix the file, then `nebridge inbox retry NAME`)"
                if report.rejected
                else ""
            )
        )
    if report.rejected:
        raise typer.Exit(1)


@app.command("diff")
def diff_cmd(
    ctx: typer.Context,
    warehouse: Annotated[str | None, _WAREHOUSE] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """List goods whose Next Engine stock differs from the linked warehouses' counts.

    Exit 0 when every difference is explained (or there is none), 1 otherwise.
    """
    runtime = _runtime(ctx)
    try:
        if warehouse is not None and warehouse not in runtime.warehouses():
            fail(f"unknown warehouse {warehouse!r}; `nebridge warehouses list` shows them", code=2)
        diff = _diff(runtime, take=False)
    finally:
        runtime.close()
    if show_diff(diff, warehouse, as_json, display_zone(runtime.loaded)):
        raise typer.Exit(1)


def show_diff(
    diff: StockDiff,
    warehouse: str | None = None,
    as_json: bool = False,
    zone: tzinfo | None = None,
) -> int:
    """Print a comparison (a table and notes, or JSON); return how many goods drift without
    a known cause (``nebridge demo`` shows its comparisons the same way). Times are shown in
    ``zone`` (``daemon.yaml``'s ``timezone``)."""
    rows = [r for r in diff.drifts if warehouse is None or r.warehouses.get(warehouse)]
    unexplained = [r for r in rows if r.unexplained]
    if as_json:
        data = diff.as_dict()
        data["drifts"] = [r.as_dict() for r in rows]
        data["unexplained"] = len(unexplained)
        print_json(data)
    elif not rows:
        typer.echo(f"no drift ({diff.compared} goods compared)")
    else:
        codes = sorted(diff.snapshots)
        print_table(
            f"stock drift ({diff.compared} goods compared)",
            ["goods", "Next Engine", *codes, "warehouses", "in flight", "drift", "explanation"],
            [
                [
                    r.goods,
                    r.ne,
                    *(r.warehouses.get(c, 0) for c in codes),
                    r.wms,
                    f"{r.in_flight:+d}",
                    f"{r.drift:+d}",
                    times_in_zone(r.explanation(), zone),  # NE's record time, in JST
                ]
                for r in rows
            ],
        )
    if not as_json:
        for code, (ident, moment) in sorted(diff.snapshots.items()):
            info(f"{code}: snapshot {ident} counted at {when(moment, zone)}")
        if diff.not_in_wms:
            info(
                f"{len(diff.not_in_wms)} Next Engine goods with stock are not in the WMS "
                "(no product links to them; never drift): `--json` lists them"
            )
        if diff.not_linked:
            info(
                f"{len(diff.not_linked)} WMS products with stock are not linked to Next "
                "Engine goods (never drift): `--json` lists them"
            )
        if unexplained:
            info(
                f"{len(unexplained)} goods drift without a known cause; correct them with "
                "`nebridge stock reconcile --apply` (or fix them in Next Engine)"
            )
        elif rows:
            info("no unexplained drift")
    return len(unexplained)


@app.command("reconcile")
def reconcile_cmd(
    ctx: typer.Context,
    apply: Annotated[
        bool, typer.Option("--apply", help="Queue the corrections (without it: only show them).")
    ] = False,
    goods: Annotated[
        list[str] | None,
        typer.Option(
            "--goods", metavar="CODE", help="Only this Next Engine goods code (repeatable)."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before queueing.")] = False,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Set Next Engine stock to the warehouses' counts: one stock action per drifting goods,
    keyed reconcile:<snapshot id>:<goods>, sent once by the dispatcher."""
    runtime = _runtime(ctx)
    try:
        diff = _diff(runtime, take=False)
        wanted = {link_key_of(runtime)(g) for g in goods or []}
        rows = [r for r in diff.drifts if not wanted or link_key_of(runtime)(r.goods) in wanted]
        if not apply:
            plan = [
                {
                    "goods": r.goods,
                    "delta": r.drift,
                    "waits": r.waits,
                    "explanation": r.explanation(),
                }
                for r in rows
            ]
            if as_json:
                print_json({"applied": False, "corrections": plan})
            elif not plan:
                typer.echo("no corrections: nothing drifts")
            else:
                print_table(
                    "corrections (not queued: add --apply)",
                    ["goods", "change", "waits", "explanation"],
                    [
                        [
                            p["goods"],
                            f"{p['delta']:+d}",
                            "yes" if p["waits"] else "no",
                            times_in_zone(str(p["explanation"]), display_zone(runtime.loaded)),
                        ]
                        for p in plan
                    ],
                )
            return
        if rows and not yes and as_json:
            fail("--apply --json asks nothing: add --yes to queue the corrections", code=2)
        if (
            rows
            and not yes
            and not typer.confirm(f"Queue {len(rows)} Next Engine stock correction(s)?")
        ):
            fail("nothing queued; run it again and answer y, or add --yes", code=1)
        done = reconcile(runtime.db, diff, goods or [], link_key=link_key_of(runtime))
    finally:
        runtime.close()
    if as_json:
        print_json({"applied": True, "corrections": [c.as_dict() for c in done]})
    elif not done:
        typer.echo("no corrections: nothing drifts")
    else:
        print_table(
            "corrections",
            ["goods", "change", "state", "key", "detail"],
            [[c.goods, f"{c.delta:+d}", c.state, c.key, c.detail] for c in done],
        )
        queued = sum(c.state == "queued" for c in done)
        info(
            f"{queued} correction(s) queued; the dispatcher sends them (now: `nebridge run "
            "--once`); `nebridge history --goods CODE` shows each"
        )
    if any(c.state == "waits" for c in done):
        raise typer.Exit(1)
