"""``nebridge run``: the foreground daemon (systemd's ExecStart), or one pass with ``--once``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import tzinfo
from pathlib import Path
from typing import Annotated

import typer

from daemon.admin import RunOnceReport, run_once
from daemon.cli.attention import print_attention
from daemon.cli.common import (
    AppContext,
    display_zone,
    err_console,
    fail,
    get,
    info,
    print_json,
    times_in_zone,
)
from daemon.config import ConfigError, LoadedConfig
from daemon.fleet.daemon import FleetDaemon
from daemon.fleet.hold import LeaseHeld
from daemon.instancelock import AlreadyRunning, instance_lock
from daemon.nelink import secret_file_problems, token_files
from daemon.runtime import Runtime, build_runtime
from daemon.statedir import StateFolderMismatch
from daemon.store.engine import DatabaseNotMigrated
from daemon.supervisor import Supervisor


def run(
    ctx: typer.Context,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Run every pipeline once, drain the outbox as far as possible, then exit.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="With --once: print what would be done and change nothing anywhere."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --once: report as JSON.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar="NEBRIDGE_METRICS_PORT",
            min=0,
            help="Serve /metrics on this port instead of daemon.yaml's metrics.port (0: off), "
            "so several fleet workers on one host share one daemon.yaml.",
        ),
    ] = None,
) -> None:
    """Run the daemon in the foreground (no fork, no pidfile), or one pass with --once.

    --once exits 0 when nothing failed, crashed or was paused and nothing waits for a person
    (held orders or events, failed or in-doubt actions, rejected files: `nebridge
    attention`), else 1.
    """
    if dry_run and not once:
        fail("--dry-run needs --once (`nebridge run --once --dry-run`)", code=2)
    app_ctx = get(ctx)
    if app_ctx.fleet and not (once and app_ctx.company is not None):
        run_fleet(
            app_ctx.load_base(),
            app_ctx.config_path,
            once=once,
            company=app_ctx.company,
            metrics_port=metrics_port,
        )
    loaded = app_ctx.load()
    insecure = secret_file_problems(loaded.config, token_files(loaded))
    if insecure:
        fail("refusing to start: " + "; ".join(insecure))
    if not once:
        supervisor = Supervisor(app_ctx.config_path, metrics_port=metrics_port)
        supervisor.install_signal_handlers()
        raise typer.Exit(supervisor.run())
    try:
        with held_runtime(app_ctx, dry_run=dry_run) as runtime:
            if err_console().is_terminal and not as_json:
                with err_console().status("starting …") as spinner:
                    report = run_once(
                        runtime, dry_run=dry_run, progress=lambda m: spinner.update(f"{m} …")
                    )
            else:
                report = run_once(runtime, dry_run=dry_run, progress=lambda m: info(f"… {m}"))
    except (AlreadyRunning, LeaseHeld, StateFolderMismatch) as exc:
        fail(str(exc))
    if as_json:
        print_json(report_dict(report, dry_run))
    else:
        print_report(report, dry_run, display_zone(loaded))
    raise typer.Exit(0 if report.ok else 1)


@contextmanager
def held_runtime(app_ctx: AppContext, *, dry_run: bool = False) -> Iterator[Runtime]:
    """The runtime of one pass, held against the daemon for the block and closed after: a
    single-company installation's instance lock (:class:`AlreadyRunning`), or in fleet mode
    the company's lease, which fences its commits and Next Engine calls (:class:`LeaseHeld`
    naming the worker that serves it)."""
    if app_ctx.resolved is None:
        try:
            runtime = build_runtime(app_ctx.config_path)
        except (ConfigError, DatabaseNotMigrated) as exc:
            fail(str(exc))
        try:
            with instance_lock(runtime.config, runtime.engine):
                yield runtime
        finally:
            runtime.close()
        return
    from daemon.fleet.hold import hold_company
    from daemon.fleet.runtime import CompanyNotMigrated, company_runtime

    base, company = app_ctx.load_base(), app_ctx.resolved
    fleet = app_ctx.fleet_database()
    assert fleet is not None  # a resolved company is fleet mode
    try:
        with hold_company(
            fleet.control,
            company.code,
            lease_seconds=base.config.fleet_lease_seconds,
            what=f"`nebridge run --once{' --dry-run' if dry_run else ''} --company {company.code}`",
        ) as lease:
            try:
                runtime = company_runtime(base, company, lease=lease, fleet=fleet)
            except (ConfigError, CompanyNotMigrated) as exc:
                fail(str(exc))
            try:
                yield runtime
            finally:
                runtime.close()
    finally:
        fleet.close()


def run_fleet(
    base: LoadedConfig,
    config_path: Path,
    *,
    once: bool,
    company: str | None,
    metrics_port: int | None = None,
) -> None:
    """Fleet mode (``companies_dir``): serve the companies this worker's leases give it,
    ``/metrics`` on ``metrics_port`` when given (one per worker of a host), else daemon.yaml's."""
    if company is not None:
        fail(
            f"`nebridge run` in fleet mode serves every company its leases give it; drop "
            f"--company {company} (and NEBRIDGE_COMPANY)",
            code=2,
        )
    if once:
        fail(
            "`run --once` in fleet mode (`companies_dir` is set in "
            f"{base.path}) runs one company's pass: pass --company CODE (it holds the "
            "company's lease meanwhile, so it is refused while a worker serves it); each "
            "company is otherwise served by the `nebridge run` worker holding its lease — "
            "`nebridge companies list` shows who serves what",
            code=2,
        )
    insecure = secret_file_problems(base.config, token_files(base))
    if insecure:
        fail("refusing to start: " + "; ".join(insecure))
    fleet = FleetDaemon(config_path, metrics_port=metrics_port)
    fleet.install_signal_handlers()
    raise typer.Exit(fleet.run())


def report_dict(report: RunOnceReport, dry_run: bool) -> dict[str, object]:
    """JSON view of a run-once report."""
    intake = report.intake
    return {
        "dry_run": dry_run,
        "ok": report.ok,
        "intake": None
        if intake is None
        else {
            "accepted": intake.accepted,
            "rejected": intake.rejected,
            "events": intake.events,
            "duplicates": intake.duplicates,
            "products_updated": intake.products_updated,
            "planned": intake.planned,
        },
        "stages": [
            {
                "warehouse": r.warehouse,
                "stage": r.stage.value,
                "outcome": r.outcome,
                "items_in": r.items_in,
                "items_out": r.items_out,
                "held": r.held,
                "deferred": r.deferred,
                "skipped_reason": r.skipped_reason,
                "paused_reason": r.paused_reason,
                "planned": r.planned,
                "notices": r.notices,
                "failures": r.failures,
                "counts": r.counts,
            }
            for r in report.stages
        ],
        "dispatch": None
        if report.dispatch is None
        else {
            "executed": report.dispatch.executed,
            "reconciled": report.dispatch.reconciled,
            "waiting": report.dispatch.waiting,
            "blocked": report.dispatch.blocked,
            "errors": report.dispatch.errors,
        },
        "would_dispatch": report.dispatch_plan,
        "notify": None
        if report.notify is None
        else {
            "created": report.notify.created,
            "sent": report.notify.sent,
            "failed": report.notify.failed,
            "deferred": report.notify.deferred,
            "errors": report.notify.errors,
        },
        "attention": report.attention.as_dict(),
        "problems": report.problems,
    }


#: Stage counts the summary line already shows (not repeated from ``counts``).
SUMMED = frozenset({"in", "out", "held", "deferred"})


def print_report(report: RunOnceReport, dry_run: bool, zone: tzinfo | None = None) -> None:
    """Human view of a run-once report, times in ``zone`` (as every other listing)."""
    prefix = "would " if dry_run else ""
    if report.intake is not None:
        for line in report.intake.planned:
            typer.echo(line)
        for source in report.intake.accepted:
            typer.echo(f"accepted {source}")
        for source in report.intake.rejected:
            typer.echo(f"rejected {source} (see `nebridge inbox list`)")
    for r in report.stages:
        if r.paused_reason:
            reason = times_in_zone(r.paused_reason, zone)
            typer.echo(f"{r.warehouse}/{r.stage.value}: PAUSED ({reason})")
            continue
        if r.skipped_reason:
            typer.echo(f"{r.warehouse}/{r.stage.value}: skipped ({r.skipped_reason})")
            continue
        counts = "".join(
            f", {n} {k.replace('_', ' ')}" for k, n in r.counts.items() if k not in SUMMED
        )
        out = f"{r.items_out} would go out" if dry_run else f"{r.items_out} out"
        typer.echo(
            f"{r.warehouse}/{r.stage.value}: {r.items_in} in, {out}, {r.held} held, "
            f"{r.deferred} deferred{counts}"
        )
        for line in r.planned:
            typer.echo(f"  {prefix}queue: {line}")
        for line in r.notices:
            typer.echo(f"  note: {times_in_zone(line, zone)}")
        for line in r.failures:
            typer.echo(f"  HELD: {times_in_zone(line, zone)}")
    for line in report.dispatch_plan:
        typer.echo(f"would send to Next Engine: {line}")
    if report.dispatch is not None:
        for kind, n in report.dispatch.executed.items():
            typer.echo(f"dispatched {n} {kind} action(s)")
        for kind, n in report.dispatch.waiting.items():
            typer.echo(f"{n} {kind} action(s) wait: {report.dispatch.blocked}")
    if report.attention.total:
        print_attention(
            report.attention.as_dict(), more_hint="`nebridge attention` lists them all", zone=zone
        )
    typer.echo("ok" if report.ok else "finished with problems (exit 1)")
