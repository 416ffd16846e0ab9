"""One home per Next Engine action kind: the registry in ``hooks.actions``.

Adding an action kind is one place (its ``ActionKind``) plus its executor; these tests fail
until the kind has an executor, words, keys, a merge rule and its docs. The merge rules and the
key formats of stored rows are checked on real records.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.dispatch import EXECUTORS
from daemon.runtime import build_runtime
from hooks.actions import (
    ACTION_KINDS,
    ADJUST_STOCK,
    PlannedItem,
    describe,
    plan_actions,
)
from hooks.errors import StepError
from hooks.records import (
    Action,
    AdjustStock,
    EventKind,
    Notice,
    ShipOrder,
    WriteTracking,
)
from tests.conftest import ConfigFactory

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
SHIPMENT = (EventKind.SHIPMENT, "S-1")


def test_every_kind_has_an_executor_and_every_executor_a_kind() -> None:
    assert set(EXECUTORS) == set(ACTION_KINDS)
    for name, executor in EXECUTORS.items():
        assert executor.kind == name


def test_the_runtime_runs_every_kind_with_the_configured_dispatch_settings(
    make_config: ConfigFactory,
) -> None:
    rt = build_runtime(make_config(dispatch={"retry_seconds": 7}))
    try:
        executors = rt.executors()
        assert {kind: type(e) for kind, e in executors.items()} == EXECUTORS
        assert all(
            e.settings.retry.total_seconds() == 7  # type: ignore[attr-defined]
            for e in executors.values()
        )
    finally:
        rt.close()


def test_every_kind_states_its_records_keys_merge_rule_and_words() -> None:
    for name, kind in ACTION_KINDS.items():
        assert kind.name == name
        assert kind.records, name
        assert kind.key_formats, name
        assert len(kind.merge) > 40, name
        assert kind.describe("123", {"delta": 1, "tracking_number": None})


def test_every_action_record_feeds_exactly_one_kind_except_notice() -> None:
    records = set(typing.get_args(Action)) - {Notice}
    fed = [r for kind in ACTION_KINDS.values() for r in kind.records]
    assert sorted(fed, key=str) == sorted(records, key=str)


def test_docs_name_every_kind_its_key_formats_and_records() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for kind in ACTION_KINDS.values():
        assert f"`{kind.name}`" in text
        for key in kind.key_formats:
            assert f"`{key}`" in text, key
        for record in kind.records:
            assert f"`{record.__name__}`" in text


def test_tracking_rides_on_the_ship_action_of_its_order() -> None:
    items, notices = plan_actions(
        *SHIPMENT,
        [
            ("status_update", [ShipOrder("16")]),
            ("tracking_write", [WriteTracking("16", "T-1"), WriteTracking("17", "T-2")]),
            ("another", [ShipOrder("16"), WriteTracking("16", "T-9")]),
        ],
    )
    assert items == [
        PlannedItem(
            kind="ship_order",
            key="ship:16",
            subject="16",
            plugin="status_update",
            payload={"ne_order_id": "16", "tracking_number": "T-1", "source_event": "shipment:S-1"},
        )
    ]
    assert notices == [
        "[warning] tracking_write: tracking number T-2 for order 17 not written: "
        "no shipped-status update for this order (tracking numbers are never "
        "written alone)"
    ]
    assert items[0].describe() == "ship Next Engine order 16 with tracking number T-1"


def test_stock_deltas_sum_per_plugin_and_product_and_a_net_zero_writes_nothing() -> None:
    items, notices = plan_actions(
        EventKind.RECEIPT,
        "R-9",
        [
            ("stock_plus", [AdjustStock("P-B", 2), AdjustStock("P-A", 3), AdjustStock("P-B", 1)]),
            ("extra", [AdjustStock("P-B", 4), AdjustStock("P-C", 5), AdjustStock("P-C", -5)]),
            ("notes", [Notice("looked at it", "warning")]),
        ],
    )
    assert [(i.key, i.subject, i.payload["delta"]) for i in items] == [
        ("stock:receipt:R-9:P-B:extra", "P-B", 4),
        ("stock:receipt:R-9:P-A:stock_plus", "P-A", 3),
        ("stock:receipt:R-9:P-B:stock_plus", "P-B", 3),
    ]
    assert notices == ["[warning] notes: looked at it"]
    assert items[1].describe() == "change Next Engine stock of WMS product P-A by +3"


def test_rows_are_planned_kind_by_kind_in_registry_order() -> None:
    items, _ = plan_actions(*SHIPMENT, [("p", [AdjustStock("P-A", -1), ShipOrder("16")])])
    assert [i.kind for i in items] == list(ACTION_KINDS)


def test_long_stock_keys_and_subjects_keep_their_start_and_a_hash() -> None:
    product = "P" * 300
    items, _ = plan_actions(*SHIPMENT, [("stock_minus", [AdjustStock(product, -1)])])
    assert len(items[0].key) == 200 and items[0].key.startswith("stock:shipment:S-1:PPP")
    assert len(items[0].subject) == 128 and items[0].subject.startswith("PPP")
    again, _ = plan_actions(*SHIPMENT, [("stock_minus", [AdjustStock(product, -2)])])
    assert again[0].key == items[0].key  # the same decision finds its stored row


@pytest.mark.parametrize("order_id", ["0016", "", "16a", "１６", "1" * 19])
def test_a_ship_of_something_not_an_order_number_holds_the_event(order_id: str) -> None:
    with pytest.raises(StepError, match="not a Next Engine order number"):
        plan_actions(*SHIPMENT, [("p", [ShipOrder(order_id)])])


def test_an_unknown_action_holds_the_event() -> None:
    with pytest.raises(StepError, match="unknown action"):
        plan_actions(*SHIPMENT, [("p", [datetime(2026, 1, 1, tzinfo=UTC)])])  # type: ignore[list-item]


def test_the_other_stock_keys_and_snapshot_words() -> None:
    assert ADJUST_STOCK.reversal_key("S-1", "P-A") == "stock:shipped_cancelled:S-1:P-A"
    assert ADJUST_STOCK.reconcile_key(7, "G-1") == "reconcile:7:G-1"
    assert describe("adjust_stock", "P-A", {"delta": -2, "goods": "G-1", "snapshot": 7}) == (
        "correct Next Engine stock of G-1 by -2 to the count of snapshot 7"
    )
    assert describe("retired_kind", "X", {}) == "retired_kind X"
