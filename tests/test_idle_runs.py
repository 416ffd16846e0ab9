"""Idle runs are cheap and still tell the truth (issue #19), on both databases.

A fleet worker keeps ~1,000 idle companies on a 60 s schedule only if a minute with nothing
new asks little of the database: an idle intake pass reads the connector's context once, and
an idle run of a warehouse's event stages is one transaction. What people see stays the
same: ``status`` shows each stage's latest run, the metrics its latest success, and a
``crashed_stage`` item another process opened is closed by the next run that runs through.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlmodel import col
from typer.testing import CliRunner

from daemon.cli import app
from daemon.metrics import LAST_SUCCESS, read_store
from daemon.pipeline import Stage, WarehousePipeline
from daemon.runtime import Runtime, build_runtime
from daemon.store.engine import read_session
from daemon.store.models import RunRecord
from tests.conftest import ConfigFactory

EVENT_STAGES = (Stage.SHIPMENTS, Stage.RECEIPTS)
RECEIPT_HEADER = "receipt_id,warehouse,confirmed_at,product_code,quantity"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def drop(inbox: Path, name: str, header: str, rows: list[str]) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.part"
    tmp.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    tmp.rename(inbox / name)


def products(inbox: Path) -> None:
    drop(inbox, "products.csv", "product_code,link_code", ["P-A,goods-a", "P-B,goods-b"])


def cli_json(config: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--config", str(config), *args, "--json"])
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)


class Ticks:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class Trips:
    """Transactions begun and statements run on an engine while counting."""

    def __init__(self, engine: Engine) -> None:
        self.begins = 0
        self.statements: list[str] = []
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "before_cursor_execute", self._statement)

    def _begin(self, *_: Any) -> None:
        self.begins += 1

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(" ".join(statement.split()))

    def clear(self) -> None:
        self.begins, self.statements = 0, []


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return tmp_path / "wms" / "inbox"


@pytest.fixture
def config(make_config: ConfigFactory, database_url: str) -> Path:
    return make_config(database_url=database_url)


@pytest.fixture
def runtime(config: Path) -> Iterator[Runtime]:
    rt = build_runtime(config)
    try:
        yield rt
    finally:
        rt.close()


def pipeline_of(rt: Runtime, code: str, clock: Callable[[], datetime]) -> WarehousePipeline:
    return WarehousePipeline(rt.db, rt.host, rt.warehouses()[code], rt.order_importer, clock=clock)


def records(rt: Runtime, code: str) -> list[tuple[str, str, int, int, datetime]]:
    with read_session(rt.db) as session:
        rows = session.execute(
            select(
                col(RunRecord.stage),
                col(RunRecord.outcome),
                col(RunRecord.items_in),
                col(RunRecord.items_out),
                col(RunRecord.started_at),
            )
            .where(col(RunRecord.warehouse) == code)
            .order_by(col(RunRecord.stage), col(RunRecord.started_at))
        ).all()
    return [(str(s), str(o), int(i), int(x), at) for s, o, i, x, at in rows]


def test_an_idle_intake_pass_reads_the_connector_context_once(
    runtime: Runtime, inbox: Path
) -> None:
    products(inbox)
    intake = runtime.intake()
    assert intake is not None
    runtime.start_connector()
    assert intake.run_once().products_updated
    trips = Trips(runtime.engine)
    report = intake.run_once()
    assert report.accepted == report.rejected == report.failures == []
    product_reads = [s for s in trips.statements if "FROM wms_product" in s]
    assert len(product_reads) == 1, trips.statements  # was once per kind and step
    assert trips.begins == 2, trips.statements  # the context; the open not-taken items


def test_a_new_master_and_a_file_needing_it_are_taken_in_one_pass(
    runtime: Runtime, inbox: Path
) -> None:
    """The context read once is read again after the pass replaced the product master."""
    intake = runtime.intake()
    assert intake is not None
    runtime.start_connector()
    intake.run_once()  # the context of this pass knows no product yet
    products(inbox)
    drop(inbox, "receipts-1.csv", RECEIPT_HEADER, ["R-1,ITAKU,2026-11-27 10:00:00,P-B,3"])
    report = intake.run_once()
    assert report.products_updated and report.rejected == []
    assert report.accepted == ["receipts-1.csv"] and report.events == 1


def test_idle_runs_are_one_transaction_and_show_the_latest_run(
    config: Path, runtime: Runtime
) -> None:
    clock = Ticks()
    pipeline = pipeline_of(runtime, "ITAKU", clock)
    trips = Trips(runtime.engine)
    starts = []
    for _ in range(3):
        trips.clear()
        starts.append(clock.now + timedelta(seconds=1))  # the run's first clock reading
        results = pipeline.run_once(stages=EVENT_STAGES)
        assert [(r.stage, r.outcome, r.items_in) for r in results] == [
            (Stage.SHIPMENTS, "ok", 0),
            (Stage.RECEIPTS, "ok", 0),
        ]
        assert trips.begins == 1, trips.statements
    # the last run: a look, one UPDATE of both records; no crashed_stage item is open, so
    # none is closed (the look said so), and no record is added
    writes = [s.split(" SET ")[0] for s in trips.statements if s.startswith(("INSERT", "UPDATE"))]
    assert [w.split()[1].rsplit(".", 1)[-1] for w in writes] == ["run_record"], writes
    finished = clock.now
    # one record per stage, brought up to date by each idle run (not a row a minute)
    assert records(runtime, "ITAKU") == [
        ("receipts", "ok", 0, 0, starts[-1]),
        ("shipments", "ok", 0, 0, starts[-1]),
    ]
    (itaku,) = [w for w in cli_json(config, "status")["warehouses"] if w["code"] == "ITAKU"]
    for stage in ("shipments", "receipts"):
        shown = itaku["stages"][stage]
        assert datetime.fromisoformat(shown["at"]) == starts[-1]
        assert (shown["outcome"], shown["items_in"], shown["items_out"]) == ("ok", 0, 0)
    last_success = dict(read_store(runtime.db)[LAST_SUCCESS.name])
    assert last_success[("ITAKU", "shipments")] == finished.timestamp()
    assert last_success[("ITAKU", "receipts")] == finished.timestamp()


def test_a_run_that_did_something_keeps_its_own_record(runtime: Runtime, inbox: Path) -> None:
    clock = Ticks()
    pipeline = pipeline_of(runtime, "ITAKU", clock)
    pipeline.run_once(stages=EVENT_STAGES)  # idle
    products(inbox)
    drop(inbox, "receipts-1.csv", RECEIPT_HEADER, ["R-1,ITAKU,2026-11-27 10:00:00,P-A,5"])
    intake = runtime.intake()
    assert intake is not None
    runtime.start_connector()
    assert intake.run_once().events == 1
    busy = pipeline.run_once(stages=EVENT_STAGES)
    assert [(r.outcome, r.items_in, r.items_out) for r in busy] == [("ok", 0, 0), ("ok", 1, 1)]
    pipeline.run_once(stages=EVENT_STAGES)  # idle again
    pipeline.run_once(stages=EVENT_STAGES)
    kept = Counter((stage, items_in) for stage, _, items_in, _, _ in records(runtime, "ITAKU"))
    assert kept == {("shipments", 0): 1, ("receipts", 0): 2, ("receipts", 1): 1}
    latest = {stage: (n, at) for stage, _, n, _, at in records(runtime, "ITAKU")}
    assert latest["receipts"][0] == 0  # the latest receipts run is the idle one


def test_an_idle_run_closes_a_crashed_stage_item_another_process_opened(
    config: Path, runtime: Runtime
) -> None:
    other = build_runtime(config)  # e.g. `nebridge run --once` beside the daemon
    try:
        crashing = pipeline_of(other, "SHINJUKU", Ticks())

        def crash(*_: Any) -> Any:  # a bug nobody foresaw: the only way to get one on purpose
            raise RuntimeError("disk on fire")

        crashing._process_events = crash  # type: ignore[method-assign,assignment]
        results = crashing.run_once()  # every stage: the event stages look for events
        assert [r.outcome for r in results if r.stage in EVENT_STAGES] == ["crashed", "crashed"]
    finally:
        other.close()
    opened = cli_json(config, "attention", "--warehouse", "SHINJUKU")
    assert opened["counts"] == {"crashed_stage": 2}
    daemon = pipeline_of(runtime, "SHINJUKU", Ticks())
    trips = Trips(runtime.engine)
    assert [r.outcome for r in daemon.run_once(stages=EVENT_STAGES)] == ["ok", "ok"]
    assert trips.begins == 1, trips.statements
    assert cli_json(config, "attention", "--warehouse", "SHINJUKU")["total"] == 0
    outcomes = [(stage, outcome) for stage, outcome, *_ in records(runtime, "SHINJUKU")]
    assert ("shipments", "crashed") in outcomes and ("shipments", "ok") in outcomes
