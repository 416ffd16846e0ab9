"""The WMS connector conformance suite: the contract of :mod:`hooks.connectors`, as tests.

Any connector can run it against its own sandbox or fake. Write a :class:`ConnectorHarness`
(how to build the connector, how to make the WMS confirm a shipment, a receipt or a stock
count, how to read what was written into it) and a test class that inherits the suite and
provides the harness as a fixture::

    from daemon.testing.conformance import ConnectorConformance, ConnectorHarness

    class MyHarness(ConnectorHarness):
        ...

    class TestMyConnector(ConnectorConformance):
        @pytest.fixture
        def harness(self, tmp_path: Path) -> Iterator[MyHarness]:
            yield MyHarness(tmp_path)

What it checks: inbound batches are delivered whole and once (also after a restart), a batch
the engine did not commit comes back after a crash, an invalid batch is rejected whole and not
offered again, instructions are written once for the same batch key (also after a restart), an
instructed order's shipment carries its order id, cancellations (optional part) are written
once, the product master is versioned, stock snapshots (optional part) are the WMS's counts.
The suite plays the engine's part the way the engine does (events, then commit; cursors kept
only for committed batches; ``recover`` at start).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from hooks.connectors import (
    CancellationBatch,
    CancellingConnector,
    ConnectorContext,
    InstructionBatch,
    OrderCancellation,
    StockReadingConnector,
    StockSnapshot,
    WmsConnector,
)
from hooks.errors import BatchRejected
from hooks.records import (
    EventKind,
    OrderInstruction,
    OrderInstructionLine,
    WmsEvent,
    WmsReceipt,
    WmsShipment,
)

Lines = Sequence[tuple[str, int]]
CREATED_AT = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


class ConnectorHarness(ABC):
    """How the suite drives one WMS (a sandbox, a fake, folders) and reads what it holds.

    ``warehouse`` is a warehouse code nebridge and the WMS both know (linked to Next Engine);
    ``products`` are two or more WMS product codes it holds stock of. The optional parts
    (:meth:`cancelled`, :meth:`confirm_invalid_shipment`, :meth:`count_stock`) raise
    ``NotImplementedError`` by default: their tests are skipped, saying so.
    """

    warehouse: str = "ITAKU"
    products: tuple[str, ...] = ()

    @abstractmethod
    def connector(self) -> WmsConnector:
        """A new connector on this WMS and on the state kept so far; calling it again is a
        restart of the daemon (the old instance is dropped without any goodbye)."""

    @abstractmethod
    def context(self, cursors: Mapping[str, str], imported: Collection[str]) -> ConnectorContext:
        """The context the engine would lend: the stored ``cursors``, and ``imported`` as the
        Next Engine order ids nebridge instructed."""

    @abstractmethod
    def confirm_shipment(self, lines: Lines) -> None:
        """The WMS confirms a shipment that did not come from Next Engine (wholesale)."""

    @abstractmethod
    def ship_instructed(self, ne_order_id: str) -> None:
        """The WMS ships the instructed order ``ne_order_id`` whole, as instructed."""

    @abstractmethod
    def confirm_receipt(self, lines: Lines) -> None:
        """The WMS confirms a receipt of goods at ``warehouse``."""

    @abstractmethod
    def instructions(self) -> Counter[str]:
        """How many times each Next Engine order id was written into the WMS."""

    def publish_products(self) -> None:
        """Have the WMS publish its product master with ``products`` (drop the export file);
        nothing to do for a WMS whose master is read from its API."""
        return None

    def cancelled(self) -> Counter[str]:
        """How many times the WMS was told to drop each order (for a CancellingConnector)."""
        raise NotImplementedError

    def confirm_invalid_shipment(self) -> None:
        """The WMS produces shipment input the connector must reject whole (a file with one
        good and one bad row, a malformed API record)."""
        raise NotImplementedError

    def count_stock(self) -> Mapping[str, int]:
        """Have the WMS count ``warehouse`` (drop a count file; nothing for an API that is
        read on demand) and return the on-hand quantities it must report per product."""
        raise NotImplementedError


@dataclass
class Intake:
    """The engine's side of intake: events stored, cursors of committed batches, rejections."""

    harness: ConnectorHarness
    cursors: dict[str, str] = field(default_factory=dict)
    imported: set[str] = field(default_factory=set)

    def context(self) -> ConnectorContext:
        """A context with what is stored now."""
        return self.harness.context(dict(self.cursors), frozenset(self.imported))

    def take(self, connector: WmsConnector, kind: EventKind) -> tuple[list[WmsEvent], list[str]]:
        """Take every ready batch of ``kind`` as the engine does; the events and the sources
        of the rejected batches."""
        events: list[WmsEvent] = []
        rejected: list[str] = []
        for batch in connector.pending_batches(kind, self.context()):
            try:
                found = list(batch.events())
            except BatchRejected as error:
                batch.reject(error)
                rejected.append(batch.source)
                continue
            events.extend(found)
            if batch.cursor is not None:
                self.cursors[batch.cursor[0]] = batch.cursor[1]
            batch.commit()
        return events, rejected

    def restart(self) -> WmsConnector:
        """A new connector after a crash, recovered as the engine does at start."""
        connector = self.harness.connector()
        connector.recover(self.context())
        return connector


def _lines(event: WmsEvent) -> Counter[tuple[str, int]]:
    """An event's lines as a multiset of (product code, quantity)."""
    return Counter((line.product_code, line.quantity) for line in event.lines)


def _instruction(harness: ConnectorHarness, ne_order_id: str, lines: Lines) -> OrderInstruction:
    """An instruction as the importer makes it (goods code = product code)."""
    return OrderInstruction(
        ne_order_id=ne_order_id,
        shop_order_id=f"SHOP-{ne_order_id}",
        warehouse=harness.warehouse,
        order_date="2026-11-27 10:00:00",
        delivery_method="ヤマト運輸(宅急便)",
        consignee_name="山田 太郎",
        consignee_zip="1600023",
        consignee_address="東京都新宿区西新宿1-1-1",
        consignee_tel="0312345678",
        lines=tuple(
            OrderInstructionLine(n, code, code, qty) for n, (code, qty) in enumerate(lines, start=1)
        ),
    )


class ConnectorConformance:
    """The suite: inherit it in a ``Test…`` class that provides a ``harness`` fixture."""

    def test_is_a_wms_connector(self, harness: ConnectorHarness) -> None:
        assert isinstance(harness.connector(), WmsConnector)
        assert len(harness.products) >= 2, "the harness names two or more products"

    def test_shipment_is_delivered_whole_and_once(self, harness: ConnectorHarness) -> None:
        intake = Intake(harness)
        connector = intake.restart()
        lines = [(harness.products[0], 1), (harness.products[1], 2)]
        harness.confirm_shipment(lines)
        events, rejected = intake.take(connector, EventKind.SHIPMENT)
        assert rejected == []
        assert len(events) == 1, f"one shipment confirmed, {len(events)} delivered"
        (event,) = events
        assert isinstance(event, WmsShipment) and not event.from_next_engine
        assert event.warehouse == harness.warehouse and _lines(event) == Counter(lines)
        assert event.confirmed_at.tzinfo is not None, "confirmed_at must be timezone-aware"
        assert intake.take(connector, EventKind.SHIPMENT) == ([], []), "delivered twice"
        assert intake.take(intake.restart(), EventKind.SHIPMENT) == ([], []), (
            "delivered again after a restart"
        )

    def test_receipt_is_delivered_whole_and_once(self, harness: ConnectorHarness) -> None:
        intake = Intake(harness)
        connector = intake.restart()
        lines = [(harness.products[0], 3), (harness.products[1], 4)]
        harness.confirm_receipt(lines)
        events, rejected = intake.take(connector, EventKind.RECEIPT)
        assert rejected == [] and len(events) == 1
        (event,) = events
        assert isinstance(event, WmsReceipt) and event.warehouse == harness.warehouse
        assert _lines(event) == Counter(lines)
        assert intake.take(connector, EventKind.RECEIPT) == ([], [])
        assert intake.take(intake.restart(), EventKind.RECEIPT) == ([], [])

    def test_batch_not_committed_comes_back_after_a_crash(self, harness: ConnectorHarness) -> None:
        intake = Intake(harness)
        connector = intake.restart()
        harness.confirm_shipment([(harness.products[0], 1)])
        batches = connector.pending_batches(EventKind.SHIPMENT, intake.context())
        first = next(batches)
        read = list(first.events())
        assert len(read) == 1
        # the engine stored the events and the process died before commit(): no cleanup
        # ran, so `batches` stays suspended (not closed) until the end of the test
        events, _ = intake.take(intake.restart(), EventKind.SHIPMENT)
        assert events == read, (
            "a batch the engine never committed must be delivered again, the same events"
        )
        assert intake.take(intake.restart(), EventKind.SHIPMENT) == ([], [])
        del batches

    def test_invalid_batch_is_rejected_whole_and_once(self, harness: ConnectorHarness) -> None:
        try:
            harness.confirm_invalid_shipment()
        except NotImplementedError:
            pytest.skip("the harness cannot make the WMS produce invalid input")
        intake = Intake(harness)
        connector = intake.restart()
        events, rejected = intake.take(connector, EventKind.SHIPMENT)
        assert events == [], "nothing of a rejected batch may be delivered"
        assert len(rejected) == 1
        assert intake.take(connector, EventKind.SHIPMENT) == ([], []), "rejected twice"
        assert intake.take(intake.restart(), EventKind.SHIPMENT) == ([], [])

    def test_instructions_are_written_once_per_batch_key(self, harness: ConnectorHarness) -> None:
        intake = Intake(harness)
        connector = intake.restart()
        batch = InstructionBatch(
            "conformance-1",
            CREATED_AT,
            (
                _instruction(harness, "9001", [(harness.products[0], 1)]),
                _instruction(harness, "9002", [(harness.products[1], 2)]),
            ),
        )
        connector.push_orders(batch, intake.context())
        assert harness.instructions() == Counter({"9001": 1, "9002": 1})
        connector.push_orders(batch, intake.context())  # a retry: the answer was lost
        intake.restart().push_orders(batch, intake.context())  # a retry after a crash
        assert harness.instructions() == Counter({"9001": 1, "9002": 1})

    def test_instructed_order_ships_with_its_order_id(self, harness: ConnectorHarness) -> None:
        intake = Intake(harness, imported={"9101"})
        connector = intake.restart()
        lines = [(harness.products[0], 1), (harness.products[1], 1)]
        connector.push_orders(
            InstructionBatch("conformance-2", CREATED_AT, (_instruction(harness, "9101", lines),)),
            intake.context(),
        )
        harness.ship_instructed("9101")
        events, rejected = intake.take(connector, EventKind.SHIPMENT)
        assert rejected == [] and len(events) == 1
        (event,) = events
        assert isinstance(event, WmsShipment) and event.ne_order_id == "9101"
        assert _lines(event) == Counter(lines)

    def test_cancellations_are_written_once_per_batch_key(self, harness: ConnectorHarness) -> None:
        intake = Intake(harness, imported={"9201", "9202"})
        connector = intake.restart()
        if not isinstance(connector, CancellingConnector):
            pytest.skip("the connector does not take orders back (CancellingConnector)")
        connector.push_orders(
            InstructionBatch(
                "conformance-3",
                CREATED_AT,
                (
                    _instruction(harness, "9201", [(harness.products[0], 1)]),
                    _instruction(harness, "9202", [(harness.products[0], 1)]),
                ),
            ),
            intake.context(),
        )
        batch = CancellationBatch(
            "conformance-cancel",
            CREATED_AT,
            (OrderCancellation("9201", harness.warehouse, "cancelled", CREATED_AT),),
        )
        connector.push_cancellations(batch, intake.context())
        connector.push_cancellations(batch, intake.context())
        restarted = intake.restart()
        assert isinstance(restarted, CancellingConnector)
        restarted.push_cancellations(batch, intake.context())
        assert harness.cancelled() == Counter({"9201": 1})
        assert harness.instructions()["9202"] == 1, "only the cancelled order is taken back"

    def test_product_master_is_versioned(self, harness: ConnectorHarness) -> None:
        intake = Intake(harness)
        connector = intake.restart()
        harness.publish_products()
        snapshot = connector.product_snapshot(intake.context(), None)
        assert snapshot is not None and snapshot.version
        assert set(harness.products) <= {p.product_code for p in snapshot.products}
        assert connector.product_snapshot(intake.context(), snapshot.version) is None, (
            "an unchanged master is not delivered again"
        )

    def test_stock_snapshot_is_the_wms_count(self, harness: ConnectorHarness) -> None:
        intake = Intake(harness)
        connector = intake.restart()
        if not isinstance(connector, StockReadingConnector):
            pytest.skip("the connector does not count stock (StockReadingConnector)")
        try:
            expected = harness.count_stock()
        except NotImplementedError:
            pytest.skip("the harness cannot make the WMS count stock")
        snapshots: list[StockSnapshot] = []
        for batch in connector.stock_batches(intake.context(), True):
            snapshots.extend(batch.snapshots())
            batch.commit()
        ours = [s for s in snapshots if s.warehouse == harness.warehouse]
        assert len(ours) == 1, f"one snapshot of {harness.warehouse}, got {len(ours)}"
        assert ours[0].counted_at.tzinfo is not None
        assert {code: ours[0].quantities.get(code, 0) for code in expected} == dict(expected)
        later = [s for b in connector.stock_batches(intake.context(), False) for s in b.snapshots()]
        assert later == [], "a committed count is not delivered again"
