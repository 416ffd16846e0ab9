"""A worker that lost a company's lease writes nothing more into the company's WMS folders
(review F9): file writes cannot join the fenced database transaction, so the lease is checked
right before each one — a file claimed before the takeover is neither rejected (no false
``rejected/…errors.txt`` for a file the new holder accepted) nor filed away, and no order file
is written. Real company runtimes on the CI PostgreSQL, real WMS folders."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.leases import LeaseKeeper, LeaseLost
from daemon.fleet.runtime import FleetDatabase, company_runtime, upgrade_company
from daemon.pipeline import Stage, StageResult
from daemon.runtime import Runtime
from daemon.testing.installation import RECEIPT_HEADER, drop_file
from hooks.connectors import ConnectorContext, InboundBatch, InstructionBatch
from hooks.records import EventKind, OrderInstruction, OrderInstructionLine
from tests.conftest import ConfigFactory
from tests.fleet.test_runtime import company_file
from tests.fleet.test_vault import credentials


@pytest.fixture
def acme(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path
) -> Iterator[tuple[Runtime, FleetDatabase]]:
    """Company acme served by worker w1 (its lease taken), with a runtime fenced by it."""
    folder = tmp_path / "companies"
    folder.mkdir()
    company_file(folder, "acme", tmp_path / "acme")
    creds = credentials(tmp_path / "creds")  # the vault key: the importer's client needs it
    loaded = load_config(
        make_config(migrate=False, database_url=fleet_url, companies_dir="companies")
    )
    companies = Companies(loaded)
    fleet = FleetDatabase(fleet_url, lease_seconds=10.0, credentials_dir=creds)
    keeper = LeaseKeeper(fleet.engine, companies.companies, lease_seconds=10.0, worker_id="w1")
    upgrade_company(fleet_url, "acme")
    keeper.tick()
    runtime = company_runtime(
        loaded, companies.companies["acme"], lease=keeper.lease("acme"), fleet=fleet
    )
    try:
        yield runtime, fleet
    finally:
        runtime.close()
        fleet.close()


def take_over(fleet: FleetDatabase) -> None:
    """Worker w2 takes acme over (as after w1 was paused past its lease)."""
    with fleet.engine.begin() as connection:
        connection.execute(
            text("UPDATE fleet_lease SET holder = 'w2', epoch = epoch + 1 WHERE company = 'acme'")
        )


def test_a_file_claimed_before_a_takeover_is_not_rejected_nor_filed_away(
    acme: tuple[Runtime, FleetDatabase], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, fleet = acme
    inbox = tmp_path / "acme" / "in"
    drop_file(inbox, "receipts-big.csv", RECEIPT_HEADER, ["R-1,MAIN,2026-11-27 10:00:00,P-1,3"])
    connector = runtime.connector
    assert connector is not None
    claimed_pending = connector.pending_batches
    moved = tmp_path / "taken-by-w2"
    moved.mkdir()

    def w2_takes_it_meanwhile(kind: EventKind, ctx: ConnectorContext) -> Iterator[InboundBatch]:
        batches = claimed_pending(kind, ctx)
        try:
            for batch in batches:
                take_over(fleet)  # w1 claimed the file, then was paused past its lease
                for path in (inbox / ".claimed").iterdir():  # w2 took it and accepted it
                    shutil.move(path, moved / path.name)
                yield batch
        finally:
            batches.close()  # type: ignore[attr-defined]

    connector.pending_batches = w2_takes_it_meanwhile  # type: ignore[method-assign]
    intake = runtime.intake()
    assert intake is not None
    with caplog.at_level(logging.WARNING):
        report = intake.run_once()
    assert report.rejected == [] and report.accepted == []
    assert not (inbox / "rejected").exists() or list((inbox / "rejected").iterdir()) == []
    assert [p.name for p in moved.iterdir()] == ["receipts-big.csv"]  # left as w2 has it
    skipped = [r for r in caplog.records if "rejecting receipts-big.csv" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in skipped] == [(logging.WARNING, None)]
    assert "no longer holds the company" in skipped[0].getMessage()
    assert "taken over" in skipped[0].getMessage()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_no_order_file_is_written_once_the_lease_is_lost(
    acme: tuple[Runtime, FleetDatabase], tmp_path: Path
) -> None:
    runtime, fleet = acme
    importer = runtime.order_importer()
    assert importer is not None
    order = OrderInstruction(
        ne_order_id="71",
        shop_order_id="S-71",
        warehouse="MAIN",
        order_date="2026-11-27 10:00:00",
        delivery_method="宅配便",
        consignee_name="山田 太郎",
        consignee_zip="100-0001",
        consignee_address="東京都千代田区1-1",
        consignee_tel="03-0000-0000",
        lines=(OrderInstructionLine(1, "P-1", "G-1", 1),),
    )
    batch = InstructionBatch("MAIN-20261127T100000-test", datetime.now(UTC), [order])
    outbox = tmp_path / "acme" / "out"
    outbox.mkdir(parents=True)  # before the fix the order file was written here
    take_over(fleet)  # the batch was recorded under the lease; the write comes after it
    with pytest.raises(LeaseLost, match="instruction batch MAIN-20261127T100000-test"):
        importer._deliver(batch, StageResult(Stage.IMPORT_ORDERS, "MAIN"))
    assert not outbox.exists() or list(outbox.iterdir()) == []
