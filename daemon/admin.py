"""``run --once``: one pass of the whole engine, or a dry run of it (the CLI only parses
and prints).

The read-only admin services live apart so that their commands load less:
:mod:`daemon.config_admin` (plugins, ``config check``, warehouses; no store) and
:mod:`daemon.status` (``status``, ``attention``; the store, not the engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlmodel import col, select

from daemon import attention
from daemon.attention import AttentionReport
from daemon.inbox import IntakeReport
from daemon.notify import NotifyReport
from daemon.outbox import DispatchReport
from daemon.pipeline import StageResult
from daemon.runtime import Runtime
from daemon.status import ATTENTION_LIMIT, live_attention
from daemon.stock import check as stock_check
from daemon.store.engine import Bind, read_session
from daemon.store.models import OutboxItem, OutboxState

# -- run once ---------------------------------------------------------------------------------


@dataclass
class RunOnceReport:
    """Everything one ``run --once`` pass did (or, dry, would do)."""

    intake: IntakeReport | None = None
    stages: list[StageResult] = field(default_factory=list)
    dispatch: DispatchReport | None = None
    dispatch_plan: list[str] = field(default_factory=list)
    attention: AttentionReport = field(default_factory=AttentionReport)
    problems: list[str] = field(default_factory=list)
    notify: NotifyReport | None = None

    @property
    def ok(self) -> bool:
        """Nothing failed, was paused or crashed, and nothing waits for a person."""
        return not self.problems and not self.attention.total


def run_once(
    runtime: Runtime, dry_run: bool = False, progress: Callable[[str], None] = lambda _m: None
) -> RunOnceReport:
    """Intake, every warehouse pipeline once, then drain the outbox as far as it can.

    A dry run goes through the same steps inside one database transaction that is rolled
    back, takes no file away, sends nothing to the WMS and makes no Next Engine call that
    changes anything; it reports what it would have done.
    """
    if dry_run:
        with runtime.dry() as view:
            return _run_once(view, True, progress)
    return _run_once(runtime, False, progress)


def _run_once(runtime: Runtime, dry_run: bool, progress: Callable[[str], None]) -> RunOnceReport:
    report = RunOnceReport()
    if runtime.connector is not None:
        if not dry_run:
            runtime.start_connector()
        intake = runtime.intake()
        if intake is not None:
            progress("reading WMS input")
            report.intake = intake.run_once(dry_run=dry_run)
            report.problems.extend(f"rejected {s}" for s in report.intake.rejected)
            report.problems.extend(report.intake.failures)
    for pipeline in runtime.pipelines():
        progress(f"warehouse {pipeline.warehouse.code}")
        results = pipeline.run_once(dry_run=dry_run)
        report.stages.extend(results)
        for r in results:
            report.problems.extend(f"{r.warehouse}/{r.stage.value}: {f}" for f in r.failures)
            if r.paused_reason:
                report.problems.append(f"{r.warehouse}/{r.stage.value}: paused")
    if not dry_run and report.intake is not None and report.intake.stock_snapshots:
        progress("comparing stock with Next Engine")
        try:
            stock_check(runtime, take=False)
        except Exception as exc:  # Next Engine down: the next snapshot or schedule compares
            report.problems.append(
                f"stock comparison failed: {exc}; `nebridge stock diff` runs it by hand"
            )
    if dry_run:
        report.dispatch_plan = describe_pending(runtime.db)
    else:
        progress("dispatching to Next Engine")
        report.dispatch = runtime.dispatcher().run_once()
        report.problems.extend(f"dispatcher: {e}" for e in report.dispatch.errors)
        progress("sending notifications")
        notifier = runtime.notifier()
        notifier.recover()  # this process holds the instance lock: nothing else is sending
        report.notify = notifier.run_once()
    report.attention = attention.collect(
        runtime.db, live=live_attention(runtime.host), limit=ATTENTION_LIMIT
    )
    return report


def describe_pending(engine: Bind) -> list[str]:
    """One line per pending outbox item (what a dispatch would send)."""
    with read_session(engine) as session:
        items = list(
            session.scalars(
                select(OutboxItem)
                .where(col(OutboxItem.state) == OutboxState.PENDING.value)
                .order_by(col(OutboxItem.id))
            )
        )
    return [
        f"{i.kind} {i.subject} (warehouse {i.warehouse}, from {i.plugin}): {i.payload}"
        for i in items
    ]
