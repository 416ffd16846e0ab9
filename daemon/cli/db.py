"""``nebridge db``: database migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.cli.common import fail, get, info, print_json
from daemon.config import ConfigError, LoadedConfig
from daemon.instancelock import AlreadyRunning, instance_lock
from daemon.store import reads
from daemon.store.engine import (
    DatabaseUnavailable,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from daemon.store.reads import StoreUnreadable, open_reader

app = typer.Typer(help="Database migrations.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_cmd(ctx: typer.Context) -> None:
    """Apply every pending migration (safe to run repeatedly).

    Migrating takes the instance lock, so a schema never changes under a working nebridge
    (e.g. when a standby host starts while the other host runs); with nothing to migrate it
    only reads, and succeeds next to a running daemon.
    In fleet mode the shared tables are migrated, then every company's own schema (created
    for a new company), or only the schema of ``--company``.
    """
    app_ctx = get(ctx)
    loaded = app_ctx.load_base() if app_ctx.fleet else app_ctx.load()
    engine = make_engine(loaded.config.resolved_database_url)
    try:
        before = after = current_revision(engine)
        if before != head_revision(engine):
            with instance_lock(loaded.config, engine):
                upgrade(engine)
            after = current_revision(engine)
    except AlreadyRunning as exc:
        fail(f"not migrating now: {exc}")
    except DatabaseUnavailable:
        raise  # one line naming the database and what to do (see CliGroup)
    except Exception as exc:
        fail(f"migration failed: {exc}; check `database_url` and that the database is reachable")
    finally:
        engine.dispose()
    if before == after:
        info(f"database already at the latest migration ({after})")
    else:
        info(f"database migrated from {before or '(empty)'} to {after}")
    if loaded.config.companies_dir is not None:
        upgrade_companies(loaded, app_ctx.company)


def upgrade_companies(loaded: LoadedConfig, only: str | None = None) -> None:
    """Fleet mode: create and migrate every company's own schema, or ``only`` that one's."""
    from daemon.fleet.companies import Companies
    from daemon.fleet.runtime import upgrade_company

    try:
        companies = Companies(loaded)
    except ConfigError as exc:
        fail(str(exc))
    for refusal in companies.refused:
        info(f"skipped (refused, fix it and run `nebridge db upgrade` again): {refusal}")
    codes = list(companies.companies)
    if only is not None:
        if only not in companies.companies:
            fail(
                f"no company {only!r} to migrate (companies: {', '.join(codes) or 'none'}); "
                "check --company, or the file's refusal with `nebridge companies list`"
            )
        codes = [only]
    for code in codes:
        try:
            before, after = upgrade_company(loaded.config.resolved_database_url, code)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            fail(
                f"company {code}: migration failed: {exc}; the companies before it are "
                "migrated — fix the cause and run `nebridge db upgrade` again"
            )
        if before != after:
            info(f"company {code}: migrated from {before or '(new schema)'} to {after}")
    info(f"{len(codes)} company schema(s) at the latest migration")


@app.command("current")
def current_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the database's migration and the latest one this nebridge ships.

    Only reads: a SQLite file that does not exist yet is not created (run as root, that
    would leave a root-owned database in the service user's state folder).
    """
    loaded = get(ctx).load()
    try:
        with open_reader(loaded.config.resolved_database_url) as reader:
            current, head = reads.current_revision(reader), reads.head_revision(reader)
    except StoreUnreadable as exc:
        fail(f"{exc} (or start the daemon, whose unit runs it)")
    if as_json:
        print_json({"current": current, "latest": head, "up_to_date": current == head})
    else:
        typer.echo(f"current: {current or '(empty)'}  latest: {head}")
    if current != head:
        raise typer.Exit(1)
