"""``nebridge companies``: the companies of a fleet (``companies_dir``), who serves each, and
the vault key rotation (docs/fleet.md)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import tzinfo
from typing import Annotated, Any

import typer

from daemon.cli.common import display_zone, fail, get, info, print_json, print_table, when
from daemon.config import LoadedConfig

app = typer.Typer(
    help="Fleet mode: the companies, who serves each, the vault key.", no_args_is_help=True
)

_JSON = typer.Option("--json", help="Machine-readable output.")


def _overview(base: LoadedConfig, backlog: bool = True) -> dict[str, Any]:
    """The fleet overview, or exit 1 saying why it cannot be read."""
    if base.config.companies_dir is None:
        fail(
            f"{base.path} sets no `companies_dir`: this installation serves one company, "
            "`default`; `nebridge status` shows it (fleet mode: docs/fleet.md)"
        )
    from daemon.config import ConfigError
    from daemon.fleet.admin import fleet_overview
    from daemon.fleet.leases import FleetUnavailable

    try:
        return fleet_overview(base, backlog=backlog)
    except (ConfigError, FleetUnavailable) as exc:
        fail(str(exc))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _link(row: dict[str, Any]) -> str:
    link = row["link"]
    state = str(link.get("state", ""))
    ends = link.get("refresh_token_end")
    return f"{state} (refresh token until {ends[:10]})" if ends else state


def _served_by(row: dict[str, Any]) -> str:
    """The worker holding the company, ``(not started)`` when it holds it without serving
    it; NOBODY when none holds it."""
    if row["served_by"] is None:
        return "NOBODY"
    return f"{row['served_by']} (not started)" if row["not_started"] else row["served_by"]


def _problem(row: dict[str, Any]) -> str:
    """Why the company's tables cannot be read, and/or that its file is refused now."""
    notes = [row["error"] or ""]
    if row["file_refused"]:
        served = "still served on its last valid version" if row["served_by"] else "not served"
        notes.append(f"file refused ({served}): {row['file_refused']}")
    return "; ".join(n for n in notes if n)


@app.command("list")
def list_cmd(ctx: typer.Context, as_json: Annotated[bool, _JSON] = False) -> None:
    """List every company: its link (tokens in the vault, until when), the worker serving
    it and the seconds its lease has left, its backlog and what waits for a person; the
    workers with their last heartbeat; refused company files with their path and line (exit 1
    while any is refused); the companies that need a reconnect, with the command for each."""
    base = get(ctx).load_base()
    data = _overview(base)
    if as_json:
        print_json(data)
        raise typer.Exit(1 if data["refused"] else 0)
    print_table(
        "companies",
        ["company", "link", "served by", "lease", "inbox", "outbox", "attention", "problem"],
        [
            [
                r["code"],
                _link(r),
                _served_by(r),
                _seconds(r["lease_seconds_left"]),
                _count(r["inbox_pending"]),
                _count(r["outbox_pending"]),
                _count(r["attention"]),
                _problem(r),
            ]
            for r in data["companies"]
        ],
    )
    _print_workers(data, display_zone(base))
    _print_notes(data)
    raise typer.Exit(1 if data["refused"] else 0)


def _print_notes(data: dict[str, Any]) -> None:
    """What the operator must act on: refused files, the vault key, unserved companies, and
    last the companies to reconnect."""
    for entry in data["refused"]:
        line = f":{entry['line']}" if entry["line"] else ""
        typer.echo(f"REFUSED {entry['path']}{line}: {entry['message']}")
    if data["refused"]:
        typer.echo(
            "  fix each file (the others run); `nebridge config check` lists the "
            "problems again, and a running fleet picks the fixed file up by itself "
            "(`companies_watch_seconds`) or on SIGHUP"
        )
    unlinked = [r["code"] for r in data["companies"] if not r["tokens_stored"]]
    if unlinked:
        typer.echo(f"{len(unlinked)} company(ies) not connected to Next Engine; for each:")
        _each(f"nebridge connect --company {code}" for code in unlinked)
    if data["vault"]["problem"]:
        typer.echo(f"vault: {data['vault']['problem']}")
    rows = {r["code"]: r for r in data["companies"]}
    refused = [c for c in data["unserved"] if rows[c]["file_refused"]]
    waiting = [c for c in data["unserved"] if not rows[c]["file_refused"]]
    if refused:
        typer.echo(
            f"{len(refused)} company(ies) not served because their file is refused (REFUSED "
            "above; served once it is fixed): " + ", ".join(refused[:20])
        )
    if waiting and data["totals"]["workers_live"]:
        typer.echo(
            f"{len(waiting)} company(ies) not served right now (a worker "
            "takes them within one lease time): " + ", ".join(waiting[:20])
        )
    elif waiting:
        typer.echo("no live worker: start `nebridge run` (the same unit on each host)")
    if data["leftovers"]:
        typer.echo(
            f"{len(data['leftovers'])} company(ies) without a file still have data in the "
            "database; once their file is gone from every host, for each:"
        )
        _each(
            f"nebridge companies forget {left['code']}  ({_left(left)})"
            for left in data["leftovers"]
        )
    if data["not_started"]:
        typer.echo(
            f"{len(data['not_started'])} company(ies) held by a worker that could not start "
            "their service (not served):"
        )
        _each(f"{code}: {rows[code]['not_started']}" for code in data["not_started"])
    from daemon.nelink import NEEDS_RECONNECT

    reconnect = [r for r in data["companies"] if r["link"].get("state") == NEEDS_RECONNECT]
    if reconnect:
        typer.echo(
            f"{len(reconnect)} company(ies) need a reconnect to Next Engine (their Next "
            "Engine work is stopped until then; sign in again for each):"
        )
        for row in reconnect[:20]:
            reason = row["link"].get("reason")
            typer.echo(
                f"  nebridge connect --company {row['code']}" + (f"  ({reason})" if reason else "")
            )
        if len(reconnect) > 20:
            typer.echo(f"  … and {len(reconnect) - 20} more (`--json`: link.state)")


def _left(left: dict[str, Any]) -> str:
    """What the database keeps of a company without a file, in words."""
    parts = [
        "sealed Next Engine tokens" if left["tokens"] else "",
        "a lease row" if left["lease"] else "",
        f"schema {left['schema']}; `--drop-schema` drops it too" if left["schema"] else "",
    ]
    return "; ".join(p for p in parts if p)


def _each(lines: Iterable[str], limit: int = 20) -> None:
    """One indented line each, at most ``limit`` (then how many more, and where to see
    them)."""
    shown = list(lines)
    for line in shown[:limit]:
        typer.echo(f"  {line}")
    if len(shown) > limit:
        typer.echo(f"  … and {len(shown) - limit} more (`nebridge companies list --json`)")


def print_fleet_status(base: LoadedConfig, as_json: bool) -> None:
    """``nebridge status`` in fleet mode without --company: workers, companies, totals."""
    data = _overview(base)
    if as_json:
        print_json(data)
        return
    totals = data["totals"]
    typer.echo(f"config: {data['config']} (fleet mode, companies in {data['companies_dir']})")
    typer.echo(
        f"companies: {totals['companies']} ({totals['served']} served, "
        f"{totals['not_started']} held but not started, "
        f"{totals['unserved']} unserved, {totals['not_connected']} not connected, "
        f"{totals['refused_files']} file(s) refused)"
    )
    typer.echo(
        f"backlog: {totals['inbox_pending']} inbox pending, {totals['outbox_pending']} "
        f"outbox pending; {totals['attention']} item(s) wait for a person"
        + (f"; {totals['unreadable']} company(ies) unreadable" if totals["unreadable"] else "")
    )
    _print_workers(data, display_zone(base))
    typer.echo(
        "`nebridge companies list` shows each company; `nebridge status --company CODE` one of them"
    )
    _print_notes(data)


def _print_workers(data: dict[str, Any], zone: tzinfo | None) -> None:
    """The workers with their last heartbeat (in ``zone``); the ones gone for longer than a
    worker keeps their rows in one line."""
    if data["workers"]:
        print_table(
            "workers",
            ["worker", "host", "pid", "state", "last heartbeat", "companies"],
            [
                [
                    w["worker_id"],
                    w["host"],
                    w["pid"],
                    "live" if w["live"] else "DEAD",
                    f"{when(w['heartbeat_at'], zone)} ({_ago(w['seconds_since_heartbeat'])})",
                    w["companies"],
                ]
                for w in data["workers"]
            ],
        )
    elif not data["workers_gone"]:
        typer.echo("workers: none has started on this database yet")
    gone = data["workers_gone"]
    if gone:
        last = max(w["heartbeat_at"] for w in gone)
        typer.echo(
            f"{len(gone)} worker(s) stopped more than an hour ago are not shown (the last "
            f"heartbeat {when(last, zone)}; `--json` lists them under workers_gone); the next "
            "worker to start forgets them"
        )


def _ago(seconds: float | None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


@app.command("forget")
def forget_cmd(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="The company's code (its file is gone).")],
    drop_schema: Annotated[
        bool,
        typer.Option("--drop-schema", help="Also drop its schema: every table and row of it."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Remove what the database keeps of a company whose file was removed: its sealed Next
    Engine tokens and its lease row (with --drop-schema, its schema too), and say what
    remains. Refused while its file exists here or a worker serves it."""
    base = get(ctx).load_base()
    if base.config.companies_dir is None:
        fail(f"{base.path} sets no `companies_dir`: there are no fleet companies to forget")
    from daemon.fleet.admin import ForgetRefused, forget_company
    from daemon.fleet.leases import FleetUnavailable

    what = "its sealed Next Engine tokens and its lease row" + (
        ", and its schema with every table and row" if drop_schema else ""
    )
    if (
        not yes
        and not as_json
        and not typer.confirm(f"Forget company {code}: delete {what}?", default=False, err=True)
    ):
        fail("nothing was changed (`--yes` skips the question)")
    try:
        result = forget_company(base, code, drop_schema=drop_schema)
    except (ForgetRefused, FleetUnavailable) as exc:
        fail(str(exc))
    if as_json:
        print_json(result)
        return
    done = [
        "its sealed tokens" if result["tokens_deleted"] else "",
        "its lease row" if result["lease_deleted"] else "",
        f"schema {result['schema']}" if result["schema_dropped"] else "",
    ]
    typer.echo(
        f"company {code}: deleted {', '.join(d for d in done if d) or 'nothing (none left)'}"
    )
    if result["schema_left"]:
        typer.echo(
            f"kept: schema {result['schema']} (its history and any unfinished work); "
            f"`nebridge companies forget {code} --drop-schema` drops it"
        )
    typer.echo(
        f"left on each host: its state folder {result['state_dir']} (remove it there when done)"
    )


@app.command("rotate-key")
def rotate_key_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, _JSON] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Rotate even while a live worker seals with another key (it would seal "
            "the pairs it refreshes with that key again).",
        ),
    ] = False,
) -> None:
    """Seal every company's token pair again with the current vault key (the credential
    nebridge-vault-key; the old one as nebridge-vault-key-previous), with progress; refused
    (exit 1, naming them) while a live worker does not seal with that key."""
    base = get(ctx).load_base()
    if base.config.companies_dir is None:
        fail(
            f"{base.path} sets no `companies_dir`: a single-company installation keeps its "
            "tokens in a token file, not in the vault; there is no key to rotate"
        )
    from daemon.fleet.admin import WorkersLackKey, rotate_key
    from daemon.fleet.leases import FleetUnavailable
    from daemon.fleet.vault import VaultError

    def progress(code: str, done: int, total: int) -> None:
        info(f"[{done}/{total}] {code}: sealed with the current key")

    try:
        result = rotate_key(base, progress=progress, force=force)
    except WorkersLackKey as exc:
        fail(str(exc))
    except (FleetUnavailable, VaultError) as exc:
        fail(
            f"{exc}\nNothing more was changed; rows already rotated stay readable with the "
            "current key. Fix this and run `nebridge companies rotate-key` again."
        )
    if as_json:
        print_json(result)
    else:
        if result["workers_without_current_key"]:
            typer.echo(
                "--force: rotated although live worker(s) seal with another key: "
                + ", ".join(result["workers_without_current_key"])
                + "; restart them with the new key and run the command again"
            )
        typer.echo(
            f"{result['rotated']} token pair(s) sealed again with key "
            f"{result['current_key_id']}; pairs per key now: "
            + (", ".join(f"{k} {n}" for k, n in sorted(result["after"].items())) or "none stored")
        )
        if result["left_on_old_keys"]:
            typer.echo(
                f"{result['left_on_old_keys']} pair(s) are still on an old key: run "
                "the command again"
            )
        else:
            typer.echo(_rotation_done(base, result))
    raise typer.Exit(1 if result["left_on_old_keys"] else 0)


def _rotation_done(base: LoadedConfig, result: dict[str, Any]) -> str:
    """What to do once no pair is on an old key, following the keys found: a previous key
    that sealed nothing may be step 1's new key (keep it: the swap is next), not the old one."""
    from daemon.fleet.vault import PREVIOUS_KEY_CREDENTIAL, load_keys

    previous = ", ".join(k.key_id for k in load_keys(base.config.credentials_dir).previous)
    current = result["current_key_id"]
    if not previous:
        return (
            f"every pair is sealed with the current key {current} and no "
            f"{PREVIOUS_KEY_CREDENTIAL} is loaded: there is nothing to rotate"
        )
    remove = (
        f"remove {PREVIOUS_KEY_CREDENTIAL} ({previous}) from every host, generate the unit "
        "again and restart the workers one by one"
    )
    if result["rotated"]:
        return f"no pair is sealed with an old key any more: {remove}"
    return (
        f"the previous key {previous} seals no pair. If you are at step 1 of a rotation "
        f"(installing the new key as {PREVIOUS_KEY_CREDENTIAL} everywhere), it is the new "
        "key: keep it — step 2, the swap, is next. If the keys were swapped already (the "
        f"current key {current} is the new one), the rotation is done: {remove} "
        '(docs/fleet.md, "Rotating the key")'
    )
