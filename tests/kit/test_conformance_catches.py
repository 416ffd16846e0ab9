"""The conformance suite fails connectors that break the contract (so passing it means
something): run its tests against deliberately broken variants of the ``csv`` connector."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from daemon.testing.conformance import ConnectorConformance
from hooks.connectors import ConnectorContext, InboundBatch, InstructionBatch, WmsConnector
from hooks.records import EventKind
from plugins.wms_csv import CsvConnector
from tests.wms_csv.test_conformance import CsvHarness


class WritesTwice(CsvConnector):
    """Forgets the batch key: every retry writes the orders again."""

    retries = 0

    def push_orders(self, batch: InstructionBatch, ctx: ConnectorContext) -> None:
        WritesTwice.retries += 1
        super().push_orders(replace(batch, key=f"{batch.key}-{self.retries}"), ctx)


class NeverRecovers(CsvConnector):
    """Leaves what a crash left claimed where it is: an uncommitted batch is lost."""

    def recover(self, ctx: ConnectorContext) -> None:
        return None


class ForgetsCommits(CsvConnector):
    """Never files a delivered batch away, so it is offered again."""

    def pending_batches(self, kind: EventKind, ctx: ConnectorContext) -> Iterator[InboundBatch]:
        for batch in super().pending_batches(kind, ctx):
            yield _Uncommitted(batch)


class _Uncommitted:
    """A batch whose commit() does nothing (the file is not filed away)."""

    def __init__(self, batch: InboundBatch) -> None:
        self.batch = batch
        self.source, self.kind, self.cursor = batch.source, batch.kind, batch.cursor

    def events(self) -> Iterator[object]:
        return iter(self.batch.events())

    def commit(self) -> None:
        return None

    def reject(self, error: object) -> None:
        self.batch.reject(error)  # type: ignore[arg-type]


class BrokenHarness(CsvHarness):
    def __init__(self, root: Path, http: requests.Session, kind: type[CsvConnector]) -> None:
        super().__init__(root, http)
        self.kind = kind

    def connector(self) -> WmsConnector:
        return self.kind(self.config)


@pytest.mark.parametrize(
    ("broken", "test", "message"),
    [
        (WritesTwice, "test_instructions_are_written_once_per_batch_key", "9001"),
        (NeverRecovers, "test_batch_not_committed_comes_back_after_a_crash", "delivered again"),
        (ForgetsCommits, "test_shipment_is_delivered_whole_and_once", "delivered twice"),
    ],
)
def test_suite_fails_a_broken_connector(
    broken: type[CsvConnector], test: str, message: str, tmp_path: Path
) -> None:
    with requests.Session() as http:
        harness = BrokenHarness(tmp_path, http, broken)
        with pytest.raises(AssertionError, match=message):
            getattr(ConnectorConformance(), test)(harness)


def test_the_same_tests_pass_the_real_connector(tmp_path: Path) -> None:
    with requests.Session() as http:
        harness = BrokenHarness(tmp_path, http, CsvConnector)
        suite = ConnectorConformance()
        suite.test_instructions_are_written_once_per_batch_key(harness)
        suite.test_batch_not_committed_comes_back_after_a_crash(harness)
        suite.test_shipment_is_delivered_whole_and_once(harness)
