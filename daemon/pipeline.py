"""The per-warehouse pipeline: WMS events → plugins → outbox, one event at a time.

For each pending shipment or receipt of its warehouse, the pipeline asks every enabled plugin
for its decision, each call isolated. If every plugin answered, the actions are written to
the outbox in the same transaction that marks the event processed. If any plugin failed,
the event is held with the plugin's error (none of its actions are stored, so a shipment is
never shipped without the tracking number a failing plugin would have added) and the other
events, plugins and warehouses carry on.

A shipment may only ship a Next Engine order that nebridge imported into the shipment's own
warehouse (unless the warehouse has ``ship_unimported_orders: true``): otherwise the whole
event is held with the reason, its stock actions too. If storing one event's outcome fails
(a value the database refuses), its chunk-mates are stored one by one and only that event is
held, with the reason.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from sqlalchemy import and_, bindparam, func, insert, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session, col

from daemon import attention
from daemon.fleet.leases import LeaseLost
from daemon.logsetup import log_context
from daemon.outbox import insert_ignoring_duplicates, outbox_row
from daemon.pluginmanager import PluginHost
from daemon.serialize import event_external_id, event_from_json
from daemon.shipcheck import CONFIRMED, InstructedLines, ShipmentCheck
from daemon.store.engine import Bind, DatabaseUnavailable, read_session, write_session
from daemon.store.models import (
    AttentionProblem,
    EventState,
    ImportedOrder,
    ImportState,
    InboxEvent,
    ProblemState,
    RunRecord,
    utcnow,
)
from hooks.actions import SHIP_ORDER, PlannedItem, plan_actions
from hooks.errors import StepError, StepNotReady
from hooks.records import (
    Action,
    EventKind,
    Problem,
    WarehouseInfo,
    WmsEvent,
    WmsShipment,
)

log = logging.getLogger(__name__)

#: States of an order the WMS was sent (instructed, then maybe cancelled or edited in Next
#: Engine: ``daemon.orderwatch``); a shipment of such an order is of an imported order.
SENT_TO_WMS = (ImportState.INSTRUCTED, ImportState.CANCELLED, ImportState.REINSTRUCT)
#: Errors that mean the database cannot be reached at all: no event is to blame.
_UNREACHABLE = (OperationalError, InterfaceError)


class Stage(StrEnum):
    """The ordered stages of a warehouse pipeline."""

    IMPORT_ORDERS = "import_orders"
    SHIPMENTS = "shipments"
    RECEIPTS = "receipts"


#: The WMS events each event stage decides (through ``PluginHost.event_actions``): their kind
#: and how logs and errors name one.
STAGE_EVENTS = {
    Stage.SHIPMENTS: (EventKind.SHIPMENT, "shipment"),
    Stage.RECEIPTS: (EventKind.RECEIPT, "receipt"),
}


@dataclass
class StageResult:
    """What one stage run did."""

    stage: Stage
    warehouse: str
    items_in: int = 0
    items_out: int = 0
    held: int = 0
    deferred: int = 0
    skipped_reason: str = ""
    #: Why the stage did not run although it should (an enabled plugin is not loaded).
    paused_reason: str = ""
    #: The stage raised: recorded as ``crashed`` and shown as attention until it runs again.
    crashed: bool = False
    planned: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[str]] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        """ok / held / failed / skipped / paused / crashed, as stored in the run record."""
        if self.paused_reason:
            return "paused"
        if self.crashed:
            return "crashed"
        if self.skipped_reason:
            return "skipped"
        if self.failures:
            return "failed"
        return "held" if self.held else "ok"


class OrderImporter(Protocol):
    """Imports Next Engine orders for one warehouse (provided once Next Engine is linked)."""

    def run(self, warehouse: WarehouseInfo, dry_run: bool) -> StageResult:
        """Import ready orders into ``warehouse``'s WMS."""
        ...


class _Pending(NamedTuple):
    """The columns of a pending inbox event the pipeline needs."""

    id: int
    kind: str
    external_id: str
    payload: str
    attempts: int
    last_error: str | None


_EVENTS = InboxEvent.__table__  # type: ignore[attr-defined]
_PENDING = (
    sa_select(
        _EVENTS.c.id,
        _EVENTS.c.kind,
        _EVENTS.c.external_id,
        _EVENTS.c.payload,
        _EVENTS.c.attempts,
        _EVENTS.c.last_error,
    )
    .where(_EVENTS.c.state == EventState.PENDING.value)
    .order_by(_EVENTS.c.id)
)


def _set_event(*columns: str) -> Any:
    """An executemany UPDATE of ``columns`` of inbox events by id (``b_<column>`` values)."""
    return (
        update(_EVENTS)
        .where(_EVENTS.c.id == bindparam("b_id"))
        .values({c: bindparam(f"b_{c}") for c in columns})
    )


_RUNS = RunRecord.__table__  # type: ignore[attr-defined]
_PROBLEMS = AttentionProblem.__table__  # type: ignore[attr-defined]
#: Outcomes of a stage run that did nothing: the run record of the stage's latest run, if it
#: is the same (outcome, detail, nothing in or out), is brought up to date instead of adding
#: one row a minute for ever (nothing prunes run records; ``status`` shows the latest run,
#: the metrics the latest success, and neither changes).
_QUIET_OUTCOMES = ("ok", "skipped", "paused")


class _NotIdle(Exception):
    """Ends (rolls back) the idle run's transaction: some stage has events to decide."""


def _is_quiet(result: StageResult) -> bool:
    """Whether ``result`` is a run that did nothing (its record may refresh the last one)."""
    return result.outcome in _QUIET_OUTCOMES and not (result.items_in or result.items_out)


def _detail(result: StageResult) -> str | None:
    """The run record's detail of ``result``."""
    return "\n".join(result.failures[:20]) or result.paused_reason or result.skipped_reason or None


_NOTED = _set_event("state", "attempts", "last_error", "processed_at")
_HELD = _set_event("state", "attempts", "last_error", "processed_at")
_DEFERRED = _set_event("attempts", "last_error")
_TOGETHER = _set_event("state", "last_error", "processed_at")


@dataclass
class _ChunkWrites:
    """Everything a chunk of events decided, written in one transaction.

    The actions go to the outbox in the same transaction that marks their events processed:
    one multi-row insert, one UPDATE per attempts value for the events processed without
    notices (nearly all of them), one executemany UPDATE per other outcome.
    """

    now: datetime
    actions: list[dict[str, Any]] = field(default_factory=list)
    processed: dict[int, list[int]] = field(default_factory=dict)  # new attempts -> ids
    noted: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[dict[str, Any]] = field(default_factory=list)
    #: Held partial shipments another event ships together with (marked processed).
    together: list[dict[str, Any]] = field(default_factory=list)
    failures: list[RunRecord] = field(default_factory=list)

    def absorb(self, other: _ChunkWrites) -> None:
        """Add ``other``'s outcomes (one event's) to these."""
        self.actions.extend(other.actions)
        for attempts, ids in other.processed.items():
            self.processed.setdefault(attempts, []).extend(ids)
        self.noted.extend(other.noted)
        self.held.extend(other.held)
        self.deferred.extend(other.deferred)
        self.together.extend(other.together)
        self.failures.extend(other.failures)

    def store(self, session: Session) -> None:
        """Write the chunk's outcomes inside ``session``'s transaction."""
        session.add_all(self.failures)
        insert_ignoring_duplicates(session, self.actions)
        for attempts, ids in self.processed.items():
            session.execute(
                update(_EVENTS)
                .where(_EVENTS.c.id.in_(ids))
                .values(
                    state=EventState.PROCESSED.value,
                    attempts=attempts,
                    last_error=None,
                    processed_at=self.now,
                )
            )
        for statement, params in (
            (_NOTED, self.noted),
            # when it was held: `history` and attention show the decision's time
            (_HELD, [{**p, "b_processed_at": self.now} for p in self.held]),
            (_DEFERRED, self.deferred),
            (_TOGETHER, self.together),
        ):
            if params:
                session.execute(statement, params)


class WarehousePipeline:
    """Runs the stages of one warehouse in order, each isolated from the others."""

    def __init__(
        self,
        engine: Bind,
        host: PluginHost,
        warehouse: WarehouseInfo,
        order_importer: Callable[[], OrderImporter | None] = lambda: None,
        chunk_size: int = 500,
        clock: Callable[[], datetime] = utcnow,
        ship_unimported_orders: bool = False,
    ) -> None:
        self.engine = engine
        self.host = host
        self.warehouse = warehouse
        self.ship_unimported_orders = ship_unimported_orders
        self.order_importer = order_importer
        self.chunk_size = chunk_size
        self.clock = clock
        self._instructed = InstructedLines(engine)

    def run_once(
        self,
        dry_run: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
        stages: Sequence[Stage] = tuple(Stage),
    ) -> list[StageResult]:
        """Run each of ``stages`` (default: all) once, in order; a stage that crashes is
        recorded and the next one runs. The daemon runs the import apart from the event
        stages, so a long import never holds back shipments and receipts."""
        run_id = str(uuid.uuid4())
        with log_context(warehouse=self.warehouse.code, run=run_id[:8]):
            return self._run_stages(run_id, dry_run, should_stop, stages)

    def _run_stages(
        self,
        run_id: str,
        dry_run: bool,
        should_stop: Callable[[], bool],
        stages: Sequence[Stage],
    ) -> list[StageResult]:
        if not dry_run:
            idle = self._run_idle(run_id, stages, should_stop)
            if idle is not None:
                return idle
        results = []
        for stage in stages:
            if should_stop():
                break
            started = self.clock()
            try:
                result = self._run_stage(stage, dry_run, should_stop, run_id)
            except (DatabaseUnavailable, LeaseLost):
                raise  # not this stage's fault: the scheduler holds the work back
            except Exception as exc:
                log.exception("warehouse=%s stage=%s crashed", self.warehouse.code, stage.value)
                result = StageResult(
                    stage,
                    self.warehouse.code,
                    crashed=True,
                    failures=[f"{type(exc).__name__}: {exc}"],
                )
            results.append(result)
            if not dry_run:
                self._record(run_id, result, started)
        return results

    def _run_stage(
        self, stage: Stage, dry_run: bool, should_stop: Callable[[], bool], run_id: str
    ) -> StageResult:
        if stage is Stage.IMPORT_ORDERS and not self.warehouse.import_orders:
            return StageResult(
                stage, self.warehouse.code, skipped_reason="import_orders is off for this warehouse"
            )
        paused = self.host.paused_stages().get(stage.value)
        if paused:  # fail closed: never run a stage without a plugin that takes part in it
            log.error("warehouse=%s stage=%s paused: %s", self.warehouse.code, stage.value, paused)
            return StageResult(stage, self.warehouse.code, paused_reason=paused)
        if stage is Stage.IMPORT_ORDERS:
            importer = self.order_importer()
            if importer is None:
                return StageResult(
                    stage, self.warehouse.code, skipped_reason="Next Engine is not connected"
                )
            return importer.run(self.warehouse, dry_run)
        return self._process_events(stage, dry_run, should_stop, run_id)

    def _run_idle(
        self, run_id: str, stages: Sequence[Stage], should_stop: Callable[[], bool]
    ) -> list[StageResult] | None:
        """Run event ``stages`` that have nothing to do in one transaction, or return None.

        The run every minute of a warehouse with nothing new: one transaction looks for a
        pending event of any of the stages' kinds and, finding none, records each stage's
        run (``ok``, nothing in or out) and closes its ``crashed_stage`` item if one is open,
        exactly as running the stages one by one would have — in one transaction instead of
        four. Otherwise (an event waits, a stage is paused or is no event stage, or the look
        fails) it writes nothing and the stages run one by one as usual.
        """
        if not stages or any(s not in STAGE_EVENTS for s in stages) or should_stop():
            return None
        paused = self.host.paused_stages()
        if any(paused.get(s.value) for s in stages):
            return None
        code = self.warehouse.code
        kinds = sorted({STAGE_EVENTS[s][0].value for s in stages})
        pending = (
            sa_select(_EVENTS.c.id)
            .where(_EVENTS.c.state == EventState.PENDING.value)
            .where(_EVENTS.c.warehouse == code)
            .where(_EVENTS.c.kind.in_(kinds))
            .exists()
        )
        crashed = (
            sa_select(_PROBLEMS.c.key)
            .where(_PROBLEMS.c.key.in_([self._crashed_key(s.value) for s in stages]))
            .where(_PROBLEMS.c.state == ProblemState.OPEN.value)
            .exists()
        )
        results = [StageResult(stage, code) for stage in stages]
        started = self.clock()
        try:
            with write_session(self.engine) as session:
                # one look: is an event waiting, is a crashed_stage item open (whoever
                # opened it: this process, `nebridge run --once`, the previous worker)
                waiting, open_item = session.execute(sa_select(pending, crashed)).one()
                if waiting:
                    raise _NotIdle
                finished = self.clock()
                self._store_runs(session, run_id, results, started, finished, bool(open_item))
        except _NotIdle:
            return None
        except (DatabaseUnavailable, LeaseLost):
            raise  # not a stage's fault: the scheduler holds the work back
        except Exception as exc:  # the stages run one by one, and report it as they do
            log.debug("warehouse=%s idle run not recorded at once: %s", code, _one_line(exc))
            return None
        return results

    # -- events -----------------------------------------------------------------------------

    def _process_events(
        self, stage: Stage, dry_run: bool, should_stop: Callable[[], bool], run_id: str
    ) -> StageResult:
        kind, label = STAGE_EVENTS[stage]
        result = StageResult(stage, self.warehouse.code)
        last_id = 0
        while not should_stop():
            with read_session(self.engine) as session:
                rows = [
                    _Pending(*r)
                    for r in session.execute(
                        _PENDING.where(_EVENTS.c.warehouse == self.warehouse.code)
                        .where(_EVENTS.c.kind == kind.value)
                        .where(_EVENTS.c.id > last_id)
                        .limit(self.chunk_size)
                    )
                ]
            if not rows:
                break
            last_id = rows[-1].id
            self._process_chunk(rows, kind, label, run_id, result)
            if len(rows) < self.chunk_size:
                break
        return result

    def _process_chunk(
        self,
        rows: Sequence[_Pending],
        kind: EventKind,
        label: str,
        run_id: str,
        result: StageResult,
    ) -> None:
        """Decide every event of the chunk, then store all outcomes in one transaction.

        If that transaction fails for a reason other than an unreachable database, the
        events' outcomes are stored one by one, and an event whose own outcome still fails
        is held alone with the reason.
        """
        now = self.clock()
        events = [(row, event_from_json(row.kind, row.payload)) for row in rows]
        orders = {e.ne_order_id for _, e in events if isinstance(e, WmsShipment) and e.ne_order_id}
        imported = (
            None
            if self.ship_unimported_orders
            else _ImportedOrders(self.engine, self.warehouse.code, orders)
        )
        checks = (
            ShipmentCheck(self.engine, self.warehouse.code, orders, self._instructed)
            if kind is EventKind.SHIPMENT
            else None
        )
        parts: list[tuple[_Pending, _ChunkWrites]] = []
        for row, event in events:
            result.items_in += 1
            part = _ChunkWrites(now)
            self._process_event(row, event, kind, label, run_id, result, part, imported, checks)
            parts.append((row, part))
        shipped_together = {t["b_id"] for _, part in parts for t in part.together}
        writes = _ChunkWrites(now)
        for row, part in parts:
            if row.id in shipped_together and part.held:  # a partial of this chunk: not held
                result.held -= 1
                reason = part.held[0]["b_last_error"]
                if reason in result.failures:
                    result.failures.remove(reason)
                part.held = []
            writes.absorb(part)
        try:
            with write_session(self.engine) as session:
                writes.store(session)
        except _UNREACHABLE:
            raise
        except Exception as exc:
            log.warning(
                "warehouse=%s storing %d %s outcomes together failed (%s); storing them one by one",
                self.warehouse.code,
                len(parts),
                label,
                _one_line(exc),
            )
            for row, part in parts:
                self._store_alone(row, part, label, result)

    def _store_alone(
        self, row: _Pending, part: _ChunkWrites, label: str, result: StageResult
    ) -> None:
        """Store one event's outcome; if the database refuses it, hold the event instead."""
        try:
            with write_session(self.engine) as session:
                part.store(session)
            return
        except _UNREACHABLE:
            raise
        except Exception as exc:
            reason = (
                f"{label} {row.external_id}: its outcome could not be stored "
                f"({_one_line(exc)}); nothing of it was applied"
            )
        held = _ChunkWrites(
            part.now,
            held=[
                {
                    "b_id": row.id,
                    "b_state": EventState.HELD.value,
                    "b_attempts": row.attempts + 1,
                    "b_last_error": reason,
                }
            ],
        )
        with write_session(self.engine) as session:
            held.store(session)
        result.items_out -= len(part.actions)
        result.held += 1
        result.failures.append(reason)
        log.error(
            "warehouse=%s %s held: %s", self.warehouse.code, f"{label} {row.external_id}", reason
        )

    def _process_event(
        self,
        row: _Pending,
        event: WmsEvent,
        kind: EventKind,
        label: str,
        run_id: str,
        result: StageResult,
        writes: _ChunkWrites,
        imported: _ImportedOrders | None,
        checks: ShipmentCheck | None = None,
    ) -> None:
        item = f"{label} {row.external_id}"
        outcomes = self.host.event_actions(event, self.warehouse)
        decisions: list[tuple[str, list[Action]]] = []
        errors: list[str] = []
        not_ready: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome.error, StepNotReady):
                not_ready.append(f"{outcome.plugin}: {outcome.error}")
            elif outcome.error is not None:
                errors.append(
                    f"plugin {outcome.plugin} failed on {item}: "
                    f"{type(outcome.error).__name__}: {outcome.error}"
                )
                writes.failures.append(
                    self._failure_record(run_id, outcome.plugin, item, errors[-1])
                )
            else:  # a list (or None): the host read it inside the plugin's call
                decisions.append((outcome.plugin, list(outcome.result or ())))
        planned: list[PlannedItem] = []
        notices: list[str] = []
        if not errors:
            try:
                planned, notices = plan_actions(kind, event_external_id(event), decisions)
            except StepError as exc:
                errors.append(str(exc))
        if not errors and imported is not None:
            errors.extend(
                self._not_imported(p.subject)
                for p in planned
                if p.kind == SHIP_ORDER.name and p.subject not in imported
            )
        confirmed = (row.last_error or "").startswith(CONFIRMED)
        together: list[tuple[int, str]] = []
        if not errors and checks is not None and isinstance(event, WmsShipment):
            for p in [p for p in planned if p.kind == SHIP_ORDER.name]:
                verdict = checks.check(row.id, event, p.subject, confirmed)
                if verdict.hold:
                    errors.append(verdict.hold)
                if verdict.leave:
                    planned.remove(p)
                if verdict.notice:
                    notices.append(f"[info] nebridge: {verdict.notice}")
                together.extend(verdict.together)
        attempts = row.attempts + 1
        if not_ready and not errors:
            writes.deferred.append(
                {
                    "b_id": row.id,
                    "b_attempts": attempts,
                    "b_last_error": (CONFIRMED if confirmed else "") + "; ".join(not_ready),
                }
            )
            result.deferred += 1
            return
        if errors:
            last_error = "\n".join(errors)
            writes.held.append(
                {
                    "b_id": row.id,
                    "b_state": EventState.HELD.value,
                    "b_attempts": attempts,
                    "b_last_error": last_error,
                }
            )
            result.held += 1
            result.failures.extend(errors)
            log.error("warehouse=%s %s held: %s", self.warehouse.code, item, last_error)
            return
        now = writes.now
        writes.together.extend(
            {
                "b_id": event_id,
                "b_state": EventState.PROCESSED.value,
                "b_processed_at": now,
                "b_last_error": f"shipped together with {item} (Next Engine order "
                f"{event.ne_order_id if isinstance(event, WmsShipment) else ''})",
            }
            for event_id, _ in together
        )
        writes.actions.extend(outbox_row(p, self.warehouse.code, row.id, now) for p in planned)
        if notices:
            writes.noted.append(
                {
                    "b_id": row.id,
                    "b_state": EventState.PROCESSED.value,
                    "b_attempts": attempts,
                    "b_last_error": "\n".join(notices),
                    "b_processed_at": now,
                }
            )
        else:
            writes.processed.setdefault(attempts, []).append(row.id)
        result.items_out += len(planned)
        result.notices.extend(f"{item}: {n}" for n in notices)
        result.planned.extend(f"{item}: {p.describe()}" for p in planned)

    def _not_imported(self, order_id: str) -> str:
        """Why a shipment naming an order nebridge did not import here is held."""
        code = self.warehouse.code
        return (
            f"order {order_id} was not imported by nebridge into {code}, so it is not "
            f"shipped: check the shipment's ne_order_id (if {code} really ships orders "
            f"nebridge did not send it, set `ship_unimported_orders: true` for {code} in "
            "daemon.yaml)"
        )

    # -- records ----------------------------------------------------------------------------

    def _failure_record(self, run_id: str, plugin: str, item: str, detail: str) -> RunRecord:
        now = self.clock()
        return RunRecord(
            run_id=run_id,
            warehouse=self.warehouse.code,
            stage="plugin",
            plugin=plugin,
            item=item[:200],
            outcome="failed",
            detail=detail,
            started_at=now,
            finished_at=now,
        )

    def _record(self, run_id: str, result: StageResult, started: datetime) -> None:
        """Store the run; a crash opens a ``crashed_stage`` attention item that stays open
        until the stage next runs through (paused and skipped runs leave it as it is)."""
        try:
            with write_session(self.engine) as session:
                self._store_runs(session, run_id, [result], started, self.clock())
        except (DatabaseUnavailable, LeaseLost):
            # the database away (a paused worker's session ended) or another worker serving
            # the company now: the job ends here and its runner says so once
            raise
        except Exception:
            log.exception(
                "could not record the run of %s/%s", self.warehouse.code, result.stage.value
            )

    def _store_runs(
        self,
        session: Session,
        run_id: str,
        results: Sequence[StageResult],
        started: datetime,
        finished: datetime,
        close: bool = True,
    ) -> None:
        """Record the runs of ``results`` in ``session``'s transaction and open or close
        each stage's ``crashed_stage`` item.

        A run that did nothing brings its stage's latest record up to date if that record
        says the same (see :data:`_QUIET_OUTCOMES`); any other run adds a record. Closing
        the items is one UPDATE of the open ones (left out with ``close=False``: the caller
        looked in this transaction and none is open). An item may have been opened by
        another process (``nebridge run --once``, the company's previous worker), so it is
        always looked for in the database, never assumed closed.
        """
        code = self.warehouse.code
        quiet = [r for r in results if _is_quiet(r)]
        refreshed = self._refresh_quiet(session, run_id, quiet, started, finished)
        rows = [
            {
                "run_id": run_id,
                "warehouse": code,
                "stage": result.stage.value,
                "plugin": "",
                "item": "",
                "outcome": result.outcome,
                "items_in": result.items_in,
                "items_out": result.items_out,
                "detail": _detail(result),
                "started_at": started,
                "finished_at": finished,
            }
            for result in results
            if result.stage.value not in refreshed
        ]
        if rows:
            session.execute(insert(_RUNS), rows)
        closing = []
        for result in results:
            stage = result.stage.value
            key = self._crashed_key(stage)
            if result.crashed:
                attention.report_in(
                    session,
                    Problem(
                        key=key,
                        kind=attention.AttentionKind.CRASHED_STAGE,
                        reason=f"stage {stage} of warehouse {code} crashed: {_detail(result)}",
                        fix=(
                            "the log has the traceback (`journalctl -u nebridge`); the stage "
                            "is tried again at every run — if it keeps crashing, report the "
                            "traceback"
                        ),
                        warehouse=code,
                        subject=stage,
                    ),
                    source="pipeline",
                )
            elif close and not (result.paused_reason or result.skipped_reason):
                closing.append(key)
        if closing:
            session.execute(
                update(_PROBLEMS)
                .where(_PROBLEMS.c.key.in_(closing))
                .where(_PROBLEMS.c.state == ProblemState.OPEN.value)
                .values(state=ProblemState.RESOLVED.value, resolved_at=finished)
            )

    def _crashed_key(self, stage: str) -> str:
        """The key of the ``crashed_stage`` item of ``stage`` of this warehouse."""
        return f"{attention.AttentionKind.CRASHED_STAGE}:{self.warehouse.code}:{stage}"

    def _refresh_quiet(
        self,
        session: Session,
        run_id: str,
        quiet: Sequence[StageResult],
        started: datetime,
        finished: datetime,
    ) -> set[str]:
        """Bring the latest record of each stage in ``quiet`` up to date if it tells the
        same (one UPDATE for all); the stages whose record was, by name."""
        if not quiet or not session.get_bind().dialect.update_returning:
            return set()
        code = self.warehouse.code
        same = []
        for result in quiet:
            stage, detail = result.stage.value, _detail(result)
            latest = (
                sa_select(func.max(_RUNS.c.started_at))
                .where(_RUNS.c.warehouse == code)
                .where(_RUNS.c.stage == stage)
                .scalar_subquery()
            )
            same.append(
                and_(
                    _RUNS.c.stage == stage,
                    _RUNS.c.started_at == latest,
                    _RUNS.c.outcome == result.outcome,
                    _RUNS.c.detail.is_(None) if detail is None else _RUNS.c.detail == detail,
                )
            )
        statement = (
            update(_RUNS)
            .where(_RUNS.c.warehouse == code)
            .where(_RUNS.c.plugin == "")
            .where(_RUNS.c.items_in == 0)
            .where(_RUNS.c.items_out == 0)
            .where(or_(*same))
            .values(run_id=run_id, started_at=started, finished_at=finished)
            .returning(_RUNS.c.stage)
        )
        return {str(stage) for stage in session.execute(statement).scalars()}


class _ImportedOrders:
    """Which Next Engine orders nebridge instructed into one warehouse, looked up per chunk.

    The orders the chunk's shipments name are read at once; another one a plugin ships is
    read when asked.
    """

    def __init__(self, engine: Bind, warehouse: str, candidates: set[str]) -> None:
        self._engine = engine
        self._warehouse = warehouse
        self._asked = set(candidates)
        self._known = self._lookup(candidates)

    def __contains__(self, order_id: str) -> bool:
        if order_id not in self._asked:
            self._asked.add(order_id)
            self._known |= self._lookup({order_id})
        return order_id in self._known

    def _lookup(self, ids: set[str]) -> set[str]:
        if not ids:
            return set()
        with read_session(self._engine) as session:
            return set(
                session.scalars(
                    sa_select(col(ImportedOrder.ne_order_id))
                    .where(col(ImportedOrder.ne_order_id).in_(sorted(ids)))
                    .where(col(ImportedOrder.warehouse) == self._warehouse)
                    .where(col(ImportedOrder.state).in_(SENT_TO_WMS))
                )
            )


def _one_line(exc: BaseException) -> str:
    """An exception in one short line (a database error's first line, without its SQL)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__
