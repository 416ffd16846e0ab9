"""Regression tests for the bugs the reliability campaign (``python -m tests.reliability``) found.

Each test reproduces one failure the campaign met, against the sandbox over HTTP, and checks
the fix: nothing lost, nothing doubled, no dead token pair sent twice, no spinning.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from sqlmodel import col, select

from daemon.admin import run_once
from daemon.config import DispatchConfig, load_config
from daemon.dispatch import StockExecutor
from daemon.nelink import LinkError, connect, make_client
from daemon.nextengine.errors import NeBadAnswer, NeOutcomeUnknown, NeTokenStale
from daemon.runtime import Runtime
from daemon.store.engine import read_session, write_session
from daemon.store.models import OutboxItem, OutboxState
from hooks.connectors import InstructionBatch
from hooks.records import OrderInstruction, OrderInstructionLine
from plugins.wms_csv.outbox import write_orders
from tests.conftest import ConfigFactory
from tests.ne_world import AT, RECEIPT_HEADER, SHIP_HEADER, World, make_world
from tests.reliability.badne import BadAnswer, NeProxy

SEARCH = "/api_v1_receiveorder_base/search"
SHIPPED = "/api_v1_receiveorder_base/shipped"
UPLOAD = "/api_v1_master_goods/upload"
QUE_SEARCH = "/api_v1_system_que/search"
FAST_DISPATCH = {
    "queue_poll_seconds": 0.05,
    "queue_timeout_seconds": 20,
    "retry_seconds": 0.01,
    "upload_settle_seconds": 0,
}


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config, tmp_path, dispatch=FAST_DISPATCH)


def edit_config(path: Path, section: str, **values: Any) -> None:
    """Change keys of one top-level section of daemon.yaml."""
    yaml = YAML()
    data = yaml.load(path.read_text(encoding="utf-8"))
    data.setdefault(section, {}).update(values)
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)


def items(rt: Runtime, kind: str | None = None) -> list[OutboxItem]:
    with read_session(rt.engine) as session:
        stmt = select(OutboxItem).order_by(col(OutboxItem.id))
        if kind:
            stmt = stmt.where(col(OutboxItem.kind) == kind)
        return list(session.scalars(stmt))


def prepare(world: World, orders: int = 1, receipts: int = 0) -> list[int]:
    """Orders imported and confirmed by the WMS, receipts accepted; nothing dispatched yet."""
    st = world.sandbox.state
    st.create_goods("A-1", quantity=500)
    ids = [st.create_order([("A-1", 1)], shop_id=1) for _ in range(orders)]
    world.products([("P-A", "A-1")])
    rt = world.runtime()
    try:
        run_once(rt)
        if ids:
            world.drop(
                "shipments-1.csv", SHIP_HEADER, [f"S-{o},ITAKU,{o},TRK-{o},{AT},P-A,1" for o in ids]
            )
        if receipts:
            world.drop(
                "receipts-1.csv",
                RECEIPT_HEADER,
                [f"R-{i},ITAKU,{AT},P-A,{i + 1}" for i in range(receipts)],
            )
        intake = rt.intake()
        assert intake is not None
        intake.run_once()
        for pipeline in rt.pipelines():
            pipeline.run_once()
    finally:
        rt.close()
    return ids


def dispatch(world: World) -> None:
    rt = world.runtime()
    try:
        rt.dispatcher().run_once()
    finally:
        rt.close()


def test_dispatcher_does_not_spin_when_next_engine_pauses_in_the_middle_of_a_pass(
    make_config: ConfigFactory,
    tmp_path: Path,
) -> None:
    """A maintenance answer while reconciling paused Next Engine work; the ship executor then
    returned without touching its full batch, and the dispatcher asked for it forever."""
    for world in make_world(make_config, tmp_path, dispatch={**FAST_DISPATCH, "batch_size": 2}):
        prepare(world, orders=3)
        rt = world.runtime()
        try:
            with write_session(rt.engine) as session:  # one left in flight by a crash
                first = session.scalars(select(OutboxItem)).first()
                assert first is not None
                first.state = OutboxState.IN_FLIGHT.value
                session.add(first)
            world.sandbox.faults.fail_next("003004")
            stop = threading.Event()
            worker = threading.Thread(target=rt.dispatcher().run_once, args=(stop.is_set,))
            worker.start()
            worker.join(10)
            spinning = worker.is_alive()
            stop.set()
            worker.join()
        finally:
            rt.close()
        assert not spinning, "the dispatcher kept asking for the same due items"


def accept(world: World, name: str, rows: list[str]) -> None:
    """Drop a receipts file and run the intake and the pipelines (no dispatch)."""
    world.drop(name, RECEIPT_HEADER, rows)
    rt = world.runtime()
    try:
        intake = rt.intake()
        assert intake is not None
        intake.run_once()
        for pipeline in rt.pipelines():
            pipeline.run_once()
    finally:
        rt.close()


def test_a_lost_rotation_sends_the_dead_pair_once_then_asks_for_reconnect(world: World) -> None:
    """The answer carrying a rotated pair was lost; the client used to send the dead pair twice
    per call (a reload-and-retry of the same pair) and again on every later call."""
    config = load_config(world.config).config
    client = make_client(config)
    try:
        world.sandbox.state.expire_access_token()
        world.sandbox.faults.drop_next(when="after")
        with pytest.raises(NeOutcomeUnknown):
            client.company_info()  # NE rotated the pair in this lost answer
        for _ in range(3):
            with pytest.raises(NeTokenStale):
                client.company_info()
    finally:
        client.close()
    assert len(world.sandbox.state.traffic.dead_pair_uses()) == 1


def test_a_search_answer_without_data_is_never_read_as_no_orders(world: World) -> None:
    """A search answer lacking ``data`` was read as "no rows": an order in flight was then
    settled as "cancelled or gone" and a lost upload as "never reached Next Engine"."""
    ids = prepare(world)
    with NeProxy(world.sandbox.base_url) as proxy:
        edit_config(world.config, "nextengine", api_base=proxy.base_url)
        proxy.arm(SHIPPED, BadAnswer("truncated", body=b'{"result":"success"', forward=True))
        no_data = BadAnswer("no data", body=b'{"result":"success","count":"0"}')
        proxy.arm(SEARCH, no_data, skip=2, count=2)  # the read-back, then the reconcile
        dispatch(world)  # shipped in NE; both answers are garbage: the item stays in flight
        rt = world.runtime()
        try:
            assert [i.state for i in items(rt, "ship_order")] == [OutboxState.IN_FLIGHT.value]
        finally:
            rt.close()
        dispatch(world)  # reconcile reads garbage again: still in flight, never "gone"
        rt = world.runtime()
        try:
            [item] = items(rt, "ship_order")
            assert item.state == OutboxState.IN_FLIGHT.value
        finally:
            rt.close()
        dispatch(world)
    rt = world.runtime()
    try:
        [item] = items(rt, "ship_order")
        assert (item.state, item.result) == (
            OutboxState.DONE.value,
            "shipped (confirmed by reading the order)",
        )
    finally:
        rt.close()
    assert world.sandbox.ledger.shipped_order_ids() == ids


def test_malformed_search_answers_raise_a_clear_error(world: World) -> None:
    config = load_config(world.config).config
    with NeProxy(world.sandbox.base_url) as proxy:
        client = make_client(
            config.model_copy(
                update={
                    "nextengine": config.nextengine.model_copy(update={"api_base": proxy.base_url})
                }
            )
        )
        try:
            cases = [
                (b'{"result":"success","count":"1"}', "no 'data' list"),
                (
                    b'{"result":"success","data":[{"receive_order_id":"1"}]}',
                    "lacks field(s) receive_order_order_status_id",
                ),
                (b'{"result":"success","data":[7]}', "row 0 of the search answer is not"),
            ]
            for body, reason in cases:
                proxy.arm(SEARCH, BadAnswer("bad", body=body))
                with pytest.raises(NeBadAnswer, match=re.escape(reason)) as info:
                    list(
                        client.search_orders(("receive_order_id", "receive_order_order_status_id"))
                    )
                assert SEARCH in str(info.value)
            proxy.arm(
                SEARCH,
                BadAnswer("html", status=503, content_type="text/html", body=b"<html>busy</html>"),
            )
            with pytest.raises(NeBadAnswer, match=r"HTTP 503 instead of 200 \(text/html, 17 "):
                list(client.search_orders(("receive_order_id",)))
        finally:
            client.close()


def test_an_unknown_ship_outcome_that_cannot_be_read_back_stays_in_flight(world: World) -> None:
    """Reading back a ``shipped`` whose answer was lost failed too; the item went back to
    pending and was later "skipped: already shipped" although nebridge had shipped it."""
    ids = prepare(world)
    world.sandbox.faults.drop_next(when="after", path=SHIPPED)
    with NeProxy(world.sandbox.base_url) as proxy:
        edit_config(world.config, "nextengine", api_base=proxy.base_url)
        proxy.arm(SEARCH, BadAnswer("busy", status=502, content_type="text/html"), skip=2)
        dispatch(world)
        rt = world.runtime()
        try:
            [item] = items(rt, "ship_order")
            assert item.state == OutboxState.IN_FLIGHT.value
            assert "could not be read back" in (item.last_error or "")
        finally:
            rt.close()
        dispatch(world)
    rt = world.runtime()
    try:
        [item] = items(rt, "ship_order")
        assert (item.state, item.result) == (
            OutboxState.DONE.value,
            "shipped (confirmed by reading the order)",
        )
    finally:
        rt.close()
    assert world.sandbox.ledger.shipped_order_ids() == ids


def test_a_lost_upload_is_not_taken_for_absent_before_it_settles(
    make_config: ConfigFactory,
    tmp_path: Path,
) -> None:
    """An upload NE applies late (its answer timed out, or the sender was killed) was searched
    for at once, not found, and sent again: applied twice. Now the queue is searched again
    until ``upload_settle_seconds`` passed, and no other upload goes out meanwhile."""
    for world in make_world(
        make_config, tmp_path, dispatch={**FAST_DISPATCH, "upload_settle_seconds": 3600}
    ):
        prepare(world, orders=0, receipts=1)
        world.sandbox.faults.drop_next(when="before", path=UPLOAD)
        dispatch(world)
        accept(world, "receipts-2.csv", [f"R-9,ITAKU,{AT},P-A,100"])
        dispatch(world)
        rt = world.runtime()
        try:
            states = [i.state for i in items(rt, "adjust_stock")]
            assert states == [OutboxState.IN_FLIGHT.value, OutboxState.PENDING.value]
            assert not world.sandbox.state.ques  # nothing sent while the first is unsettled
            later = StockExecutor(
                rt.db,
                rt.ne_client(),
                rt.gate,
                DispatchConfig(queue_poll_seconds=0.05),
                clock=lambda: datetime(2100, 1, 1, tzinfo=UTC),
            )
            later.reconcile(items(rt, "adjust_stock")[:1])  # settled: absent, so sent again
        finally:
            rt.close()
        dispatch(world)
        world.sandbox.state.process_ques()
        assert world.uploaded("A-1") == 1 + 100
        assert len(world.sandbox.state.ques) == 1


def test_a_second_upload_waits_while_the_first_is_not_found_yet(
    make_config: ConfigFactory,
    tmp_path: Path,
) -> None:
    """With two uploads of unknown outcome, the second adopted the first one's queue row: its
    own deltas were lost and the first one's were sent twice."""
    for world in make_world(make_config, tmp_path, dispatch=FAST_DISPATCH):
        prepare(world, orders=0, receipts=1)  # +1
        world.sandbox.faults.drop_next(when="after", path=UPLOAD)  # applied, answer lost
        world.sandbox.faults.fail_next("999999", count=2, path=QUE_SEARCH)  # cannot look yet
        with NeProxy(world.sandbox.base_url) as proxy:
            edit_config(world.config, "nextengine", api_base=proxy.base_url)
            proxy.arm(UPLOAD, BadAnswer("gateway", status=502), skip=1)  # never reaches NE
            dispatch(world)
            accept(world, "receipts-2.csv", [f"R-9,ITAKU,{AT},P-A,2"])  # +2
            for _ in range(4):
                dispatch(world)
        world.sandbox.state.process_ques()
        assert world.uploaded("A-1") == 1 + 2
        rt = world.runtime()
        try:
            assert {i.state for i in items(rt)} == {OutboxState.DONE.value}
        finally:
            rt.close()


def test_a_read_timeout_keeps_the_company_lock_so_calls_never_overlap(world: World) -> None:
    """After a read timeout the next call went out while NE still worked on the abandoned
    one: two requests in flight for one company."""
    config = load_config(world.config).config
    ne = config.nextengine.model_copy(
        update={"read_timeout_seconds": 0.2, "timeout_grace_seconds": 0.6}
    )
    client = make_client(config.model_copy(update={"nextengine": ne}))
    try:
        world.sandbox.faults.update(overload_wait_ms=500)
        world.sandbox.faults.fail_next("003002")  # NE waits 0.5 s, then answers
        with pytest.raises(NeOutcomeUnknown):
            client.company_info()
        assert client.company_info()
    finally:
        client.close()
    company = world.sandbox.state.company_id
    assert world.sandbox.state.traffic.max_in_flight(company) == 1


def test_a_non_numeric_order_id_fails_alone(world: World) -> None:
    """``sorted(ids, key=int)`` raised on one bad id and no order of the batch was shipped."""
    ids = prepare(world)
    rt = world.runtime()
    try:
        with write_session(rt.engine) as session:
            session.add(
                OutboxItem(
                    idempotency_key="ship:ABC",
                    kind="ship_order",
                    warehouse="ITAKU",
                    plugin="status_update",
                    subject="ABC",
                    payload='{"ne_order_id": "ABC", "tracking_number": null}',
                )
            )
        rt.dispatcher().run_once()
        by_subject = {i.subject: i for i in items(rt, "ship_order")}
    finally:
        rt.close()
    assert by_subject["ABC"].state == OutboxState.FAILED.value
    assert "not a Next Engine order number" in (by_subject["ABC"].last_error or "")
    assert by_subject[str(ids[0])].state == OutboxState.DONE.value
    assert world.sandbox.ledger.shipped_order_ids() == ids


def test_an_unreadable_secret_credential_is_named_and_only_stops_connect(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "nextengine-client-secret").write_bytes(b"\xff\xfe\x00garbage")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load_config(world.config).config
    client = make_client(config)
    try:
        assert client.company_info()  # API calls need no client secret
    finally:
        client.close()
    assert "nextengine-client-secret is not UTF-8 text" in caplog.text
    rt = world.runtime()
    try:
        with pytest.raises(LinkError, match="nextengine-client-secret is not UTF-8 text"):
            connect(config, rt.engine, *world.sandbox.state.issue_login())
    finally:
        rt.close()


def test_order_file_cells_that_spreadsheets_run_as_formulas_are_neutralised(
    tmp_path: Path,
) -> None:
    order = OrderInstruction(
        ne_order_id="1001",
        shop_order_id="+81-3",
        warehouse="W1",
        order_date="2026-11-27",
        delivery_method="@SUM(1)",
        consignee_name="=cmd|' /C calc'!A0",
        consignee_zip="-1",
        consignee_address="\tTab",
        consignee_tel="\rCR",
        lines=(OrderInstructionLine(1, "P-1", '=HYPERLINK("x")', 1),),
    )
    batch = InstructionBatch("k", datetime(2026, 11, 27, tzinfo=UTC), [order])
    path = write_orders(tmp_path, batch, "utf-8")
    assert path is not None
    [row] = list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))
    assert row["consignee_name"] == "'=cmd|' /C calc'!A0"
    assert (row["shop_order_id"], row["delivery_method"], row["consignee_zip"]) == (
        "'+81-3",
        "'@SUM(1)",
        "'-1",
    )
    assert (row["consignee_address"], row["consignee_tel"]) == ("'\tTab", "'\rCR")
    assert row["ne_goods_code"] == '\'=HYPERLINK("x")'
    assert (row["ne_order_id"], row["quantity"]) == ("1001", "1")
