"""NE sandbox: goods upload deltas, the upload queue, stock search (§5, gaps §5–§8)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from daemon.sandbox import JST, SandboxConfig, SandboxServer
from daemon.sandbox.testing import SandboxCaller

START = datetime(2025, 3, 1, 10, 0, 0, tzinfo=JST)
QUE_FIELDS = (
    "que_id,que_method_name,que_upload_name,que_client_file_name,que_file_name,"
    "que_status_id,que_message,que_creation_date,que_last_modified_date"
)


def _server(**options: Any) -> SandboxServer:
    config = SandboxConfig(seed=4, seed_size=0, clock_start=START, clock_frozen=True, **options)
    return SandboxServer(config)


@pytest.fixture
def ne() -> Iterator[SandboxServer]:
    with _server() as server:
        server.state.create_goods("Widget-A", 10)
        server.state.create_goods("widget-b", 5)
        yield server


@pytest.fixture
def caller(ne: SandboxServer) -> Iterator[SandboxCaller]:
    c = SandboxCaller.signed_in(ne)
    yield c
    c.close()


def _stock(ne: SandboxServer, code: str) -> tuple[int, int]:
    goods = ne.state.goods_snapshot(code)
    return int(goods["stock_quantity"]), int(goods["stock_allocation_quantity"])


def _que(caller: SandboxCaller, que_id: str) -> dict[str, Any]:
    rows = caller.search("/api_v1_system_que/search", QUE_FIELDS, **{"que_id-eq": que_id})
    assert len(rows) == 1
    return rows[0]


def _finish(ne: SandboxServer) -> None:
    ne.clock.advance(ne.config.que_processing_delay_s)


def test_upload_is_a_delta_applied_through_the_queue(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    body = caller.upload_goods("syohin_code,zaiko_su\nWidget-A,5\nwidget-b,-2\n")
    assert body["result"] == "success"
    que_id = body["que_id"]
    assert isinstance(que_id, str) and que_id.isdigit()
    assert body["access_token"] == caller.access_token
    first = _que(caller, que_id)
    assert first["que_status_id"] == "0"
    assert first["que_method_name"] == "SYOHIN_KIHON_CSV"
    assert first["que_upload_name"] == "NE_API"
    assert first["que_client_file_name"] is None
    assert first["que_file_name"]
    assert first["que_creation_date"] == "2025-03-01 10:00:00"
    assert _stock(ne, "Widget-A") == (10, 0)  # nothing applied yet
    ne.clock.advance(0.5)
    assert _que(caller, que_id)["que_status_id"] == "1"
    ne.clock.advance(0.5)
    done = _que(caller, que_id)
    assert (done["que_status_id"], done["que_message"]) == ("2", None)
    assert _stock(ne, "Widget-A") == (15, 0)
    assert _stock(ne, "widget-b") == (3, 0)
    uploads = ne.ledger.entries(kind="stock.upload")
    assert [(e.goods_code, e.delta, e.que_id) for e in uploads] == [
        ("Widget-A", 5, int(que_id)),
        ("widget-b", -2, int(que_id)),
    ]
    assert ne.ledger.net_stock_change("WIDGET-a") == 5
    assert [e.kind for e in ne.ledger.entries(kind="que.*")] == [
        "que.create",
        "que.processing",
        "que.done",
    ]


def test_reupload_adds_again(ne: SandboxServer, caller: SandboxCaller) -> None:
    for _ in range(2):
        caller.upload_goods("syohin_code,zaiko_su\nWidget-A,3\n")
        _finish(ne)
    assert _stock(ne, "Widget-A") == (16, 0)


def test_cannot_subtract_below_free_stock(ne: SandboxServer, caller: SandboxCaller) -> None:
    ne.state.create_order([("Widget-A", 8)])
    assert _stock(ne, "Widget-A") == (10, 8)
    refused = caller.upload_goods("syohin_code,zaiko_su\nWidget-A,-3\nwidget-b,1\n")
    _finish(ne)
    que = _que(caller, refused["que_id"])
    assert que["que_status_id"] == "2"  # row-level: the bad row is skipped, the que succeeds
    assert _stock(ne, "Widget-A") == (10, 8)
    assert _stock(ne, "widget-b") == (6, 0)
    errors = ne.state.que_snapshot(int(refused["que_id"]))["row_errors"]
    assert [e["line"] for e in errors] == [2]
    allowed = caller.upload_goods("syohin_code,zaiko_su\nWidget-A,-2\n")
    _finish(ne)
    assert _que(caller, allowed["que_id"])["que_status_id"] == "2"
    assert _stock(ne, "Widget-A") == (8, 8)


def test_rows_of_one_file_apply_in_order(ne: SandboxServer, caller: SandboxCaller) -> None:
    body = caller.upload_goods("syohin_code,zaiko_su\nwidget-b,-3\nwidget-b,-3\nwidget-b,\n")
    _finish(ne)
    assert _stock(ne, "widget-b") == (2, 0)
    errors = ne.state.que_snapshot(int(body["que_id"]))["row_errors"]
    assert [e["line"] for e in errors] == [3]


def test_all_or_nothing_mode_fails_the_whole_file() -> None:
    with _server(upload_row_error_mode="all_or_nothing") as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            ne.state.create_goods("Widget-A", 1)
            body = caller.upload_goods("syohin_code,zaiko_su\nTSHIRT-Red-M,1\nWidget-A,-5\n")
            _finish(ne)
            que = _que(caller, body["que_id"])
            assert que["que_status_id"] == "-1"
            assert "Widget-A" in que["que_message"]
            assert ne.ledger.entries(kind="stock.upload") == []
            assert ne.ledger.count("que.failed") == 1
        finally:
            caller.close()


def test_gzip_upload_is_raw_gzip_bytes(ne: SandboxServer, caller: SandboxCaller) -> None:
    body = caller.upload_goods("syohin_code,zaiko_su\r\nwidget-b,4\r\n", gz=True)
    assert body["result"] == "success"
    _finish(ne)
    assert _stock(ne, "widget-b") == (9, 0)
    import base64

    b64 = caller.call(
        "/api_v1_master_goods/upload",
        data_type="gz",
        data=base64.b64encode(gzip.compress(b"syohin_code,zaiko_su\n")),
    )
    assert b64["code"] == "004009"


def test_shift_jis_upload_can_create_goods(ne: SandboxServer, caller: SandboxCaller) -> None:
    csv_text = (
        "syohin_code,syohin_name,sire_code,genka_tnk,baika_tnk,zaiko_su\n"
        "New-Item-01,新しい商品,1,100,250,7\n"
    )
    body = caller.upload_goods(csv_text, encoding="shift_jis")
    _finish(ne)
    assert _que(caller, body["que_id"])["que_status_id"] == "2"
    rows = caller.search(
        "/api_v1_master_goods/search",
        "goods_id,goods_name,goods_selling_price,stock_quantity",
        **{"goods_id-eq": "new-item-01"},
    )
    assert rows == [
        {
            "goods_id": "New-Item-01",
            "goods_name": "新しい商品",
            "goods_selling_price": "250",
            "stock_quantity": "7",
        }
    ]
    assert ne.ledger.net_stock_change("New-Item-01") == 7


def test_unknown_code_without_create_columns_is_a_row_error(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    body = caller.upload_goods("syohin_code,zaiko_su\nNOPE-1,5\nWidget-A,x\n")
    _finish(ne)
    que = ne.state.que_snapshot(int(body["que_id"]))
    assert que["que_status_id"] == "2"
    assert [e["line"] for e in que["row_errors"]] == [2, 3]
    assert ne.state.find_goods("NOPE-1") is None


def test_upload_rewrites_code_case(ne: SandboxServer, caller: SandboxCaller) -> None:
    caller.upload_goods("syohin_code,zaiko_su\nWIDGET-A,1\n")
    _finish(ne)
    assert ne.state.goods_snapshot("widget-a")["goods_id"] == "WIDGET-A"
    assert ne.ledger.count("goods.recase") == 1
    with _server(upload_recases_goods_code=False) as keep:
        c = SandboxCaller.signed_in(keep)
        try:
            keep.state.create_goods("Widget-A", 1)
            c.upload_goods("syohin_code,zaiko_su\nWIDGET-A,1\n")
            _finish(keep)
            assert keep.state.goods_snapshot("widget-a")["goods_id"] == "Widget-A"
            assert _stock(keep, "Widget-A") == (2, 0)
        finally:
            c.close()


@pytest.mark.parametrize(
    "payload",
    [b"code,zaiko_su\nWidget-A,1\n", b"\xff\xfe\xfd\xfc", b"\n\n"],
)
def test_bad_files_fail_the_queue(ne: SandboxServer, caller: SandboxCaller, payload: bytes) -> None:
    body = caller.call("/api_v1_master_goods/upload", data_type="csv", data=payload)
    assert body["result"] == "success"
    _finish(ne)
    que = _que(caller, body["que_id"])
    assert que["que_status_id"] == "-1" and que["que_message"]
    assert _stock(ne, "Widget-A") == (10, 0)


def test_upload_parameter_errors(caller: SandboxCaller) -> None:
    assert caller.call("/api_v1_master_goods/upload", data_type="csv")["code"] == "004007"
    assert (
        caller.call("/api_v1_master_goods/upload", data_type="xlsx", data="a")["code"] == "004008"
    )
    assert (
        caller.call("/api_v1_master_goods/upload", data_type="gz", data="not gzip")["code"]
        == "004009"
    )


def test_a_gzip_bomb_is_refused_before_it_inflates(caller: SandboxCaller) -> None:
    """A ~70 kB upload that would inflate past the cap is refused (it took 2.9 GB before)."""
    from daemon.sandbox.payloads import MAX_INFLATED_BYTES

    bomb = gzip.compress(b"0" * (MAX_INFLATED_BYTES + 1), compresslevel=9)
    assert len(bomb) < 1024 * 1024
    answer = caller.call("/api_v1_master_goods/upload", data_type="gz", data=bomb)
    assert answer["code"] == "004009" and "inflates" in json.dumps(answer, ensure_ascii=False)
    truncated = gzip.compress(b"syohin_code,zaiko_su\nWidget-A,1\n")[:-6]
    answer = caller.call("/api_v1_master_goods/upload", data_type="gz", data=truncated)
    assert answer["code"] == "004009"
    assert (
        caller.upload_goods("syohin_code,zaiko_su\r\nWidget-A,4\r\n", gz=True)["result"]
        == "success"
    )


def test_clock_control_refuses_values_that_would_break_the_clock(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    before = caller.control("GET", "/clock")["now"]
    for value in ("NaN", "inf", 1e300, "soon"):
        answer = caller.session.post(
            f"{ne.base_url}/_sandbox/clock", json={"advance_seconds": value}, timeout=10
        )
        assert answer.status_code == 400, (value, answer.text)
    assert caller.control("GET", "/clock")["now"] == before  # still answers, unchanged
    assert caller.control("POST", "/clock", {"advance_seconds": 60})["now"] != before


def test_que_search_by_time_window_and_method(ne: SandboxServer, caller: SandboxCaller) -> None:
    early = caller.upload_goods("syohin_code,zaiko_su\nWidget-A,1\n")["que_id"]
    ne.clock.advance(600)
    late = caller.upload_goods("syohin_code,zaiko_su\nWidget-A,1\n")["que_id"]
    window = caller.search(
        "/api_v1_system_que/search",
        "que_id,que_status_id",
        **{
            "que_creation_date-gte": "2025-03-01 10:05:00",
            "que_creation_date-lte": "2025-03-01 10:15:00",
            "que_method_name-eq": "SYOHIN_KIHON_CSV",
        },
    )
    assert [r["que_id"] for r in window] == [late]
    assert (
        caller.call("/api_v1_system_que/count", **{"que_upload_name-eq": "NE_API"})["count"] == "2"
    )
    assert _que(caller, early)["que_status_id"] == "2"
    assert _que(caller, late)["que_status_id"] == "0"


def test_que_options_and_immediate_processing() -> None:
    with _server(
        que_processing_delay_s=0, que_client_file_name="api.csv", que_upload_name="SYOHIN_KIHON_QUE"
    ) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            body = caller.upload_goods("syohin_code,zaiko_su\nTSHIRT-Red-M,2\n")
            que = _que(caller, body["que_id"])
            assert (que["que_status_id"], que["que_client_file_name"], que["que_upload_name"]) == (
                "2",
                "api.csv",
                "SYOHIN_KIHON_QUE",
            )
        finally:
            caller.close()


def test_goods_count_and_stock_count(ne: SandboxServer, caller: SandboxCaller) -> None:
    total = int(caller.call("/api_v1_master_goods/count")["count"])
    assert total == len(ne.state.goods) >= 42
    zero = caller.call("/api_v1_master_stock/count", **{"stock_quantity-eq": "0"})
    assert int(zero["count"]) == sum(1 for g in ne.state.goods.values() if g.quantity == 0)
    goods = caller.control("POST", "/state/goods", {"code": "Ctl-1", "quantity": 3})
    assert goods["stock_free_quantity"] == "3"
