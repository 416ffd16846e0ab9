"""NE sandbox: order writes — update, bulkupdate, receipted, shipped, labelprinted (§4)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from daemon.sandbox import JST, RowSpec, SandboxConfig, SandboxServer
from daemon.sandbox.testing import SandboxCaller

START = datetime(2025, 3, 1, 10, 0, 0, tzinfo=JST)
BASE = "/api_v1_receiveorder_base"


def _server(**options: Any) -> SandboxServer:
    config = SandboxConfig(seed=9, seed_size=0, clock_start=START, clock_frozen=True, **options)
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


def _lm(ne: SandboxServer, order_id: int) -> str:
    value = ne.state.order_snapshot(order_id)["receive_order_last_modified_date"]
    assert isinstance(value, str)
    return value


def _order(ne: SandboxServer, order_id: int) -> dict[str, Any]:
    return ne.state.order_snapshot(order_id)


def _stock(ne: SandboxServer, code: str) -> tuple[int, int]:
    goods = ne.state.goods_snapshot(code)
    return int(goods["stock_quantity"]), int(goods["stock_allocation_quantity"])


def _xml(
    base: dict[str, str] | None = None,
    option: dict[str, str] | None = None,
    rows: dict[int, dict[str, str]] | None = None,
) -> str:
    parts = ['<?xml version="1.0" encoding="utf-8"?><root>']
    if base:
        parts.append("<receiveorder_base>")
        parts.extend(f"<{k}>{v}</{k}>" for k, v in base.items())
        parts.append("</receiveorder_base>")
    if option:
        parts.append("<receiveorder_option>")
        parts.extend(f"<{k}>{v}</{k}>" for k, v in option.items())
        parts.append("</receiveorder_option>")
    if rows:
        parts.append("<receiveorder_row>")
        for row_no, values in rows.items():
            inner = "".join(f"<{k}>{v}</{k}>" for k, v in values.items())
            parts.append(f'<receive_order_row_no value="{row_no}">{inner}</receive_order_row_no>')
        parts.append("</receiveorder_row>")
    parts.append("</root>")
    return "".join(parts)


def _update(
    caller: SandboxCaller,
    ne: SandboxServer,
    order_id: int,
    data: str,
    lm: str | None = None,
    **flags: str,
) -> dict[str, Any]:
    return caller.call(
        f"{BASE}/update",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=lm or _lm(ne, order_id),
        data=data,
        **flags,
    )


# ---------------------------------------------------------------- update
def test_update_base_option_and_rows(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([RowSpec("Widget-A", 2), RowSpec("widget-b", 1)])
    before = _lm(ne, order_id)
    body = _update(
        caller,
        ne,
        order_id,
        _xml(
            base={
                "receive_order_delivery_cut_form_id": "123456789012",
                "receive_order_gruoping_tag": "[A][B]",
                "receive_order_worker_text": "x &amp; y",
            },
            option={"receive_order_option_message": "ありがとう"},
            rows={2: {"receive_order_row_goods_option": "ラッピング"}},
        ),
    )
    assert body["result"] == "success" and "data" not in body
    order = _order(ne, order_id)
    assert order["receive_order_delivery_cut_form_id"] == "123456789012"
    assert order["receive_order_gruoping_tag"] == "[A][B]"
    assert order["receive_order_worker_text"] == "x & y"
    assert order["option"]["receive_order_option_message"] == "ありがとう"
    assert order["rows"][1]["receive_order_row_goods_option"] == "ラッピング"
    assert order["receive_order_last_modified_date"] > before
    entry = ne.ledger.entries(kind="order.update", order_id=order_id)[-1]
    assert entry.before["receive_order_delivery_cut_form_id"] is None
    assert entry.after["receive_order_delivery_cut_form_id"] == "123456789012"
    assert entry.call_no is not None


def test_tag_update_overwrites_whole_string(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], tag="[ロジクラ受注取込対象][ギフト]")
    _update(caller, ne, order_id, _xml(base={"receive_order_gruoping_tag": "[済]"}))
    assert _order(ne, order_id)["receive_order_gruoping_tag"] == "[済]"
    _update(caller, ne, order_id, _xml(base={"receive_order_gruoping_tag": ""}))
    assert _order(ne, order_id)["receive_order_gruoping_tag"] is None


def test_tags_must_exist_option() -> None:
    with _server(tags_must_exist=True) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            order_id = ne.state.create_order([("TSHIRT-Red-M", 1)])
            bad = _update(caller, ne, order_id, _xml(base={"receive_order_gruoping_tag": "[謎]"}))
            assert bad["code"] == "020015"
            ok = _update(
                caller, ne, order_id, _xml(base={"receive_order_gruoping_tag": "[ギフト][要確認]"})
            )
            assert ok["result"] == "success"
        finally:
            caller.close()


def test_update_with_stale_last_modified_is_020006(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)])
    stale = _lm(ne, order_id)
    assert _update(caller, ne, order_id, _xml(base={"receive_order_note": "1"}))["result"] == (
        "success"
    )
    body = _update(caller, ne, order_id, _xml(base={"receive_order_note": "2"}), lm=stale)
    assert (body["result"], body["code"]) == ("error", "020006")
    assert body["access_token"] == caller.access_token
    assert _order(ne, order_id)["receive_order_note"] == "1"


def test_last_modified_strictly_increases_within_one_second(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)])
    stamps = [_lm(ne, order_id)]
    for i in range(3):
        _update(caller, ne, order_id, _xml(base={"receive_order_note": str(i)}))
        stamps.append(_lm(ne, order_id))
    assert stamps == [
        "2025-03-01 10:00:00",
        "2025-03-01 10:00:01",
        "2025-03-01 10:00:02",
        "2025-03-01 10:00:03",
    ]


def test_same_second_writes_keep_stamp_when_option_off() -> None:
    with _server(strictly_increasing_last_modified=False) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            order_id = ne.state.create_order([("TSHIRT-Red-M", 1)])
            stale = _lm(ne, order_id)
            _update(caller, ne, order_id, _xml(base={"receive_order_note": "a"}))
            again = _update(caller, ne, order_id, _xml(base={"receive_order_note": "b"}), lm=stale)
            assert again["result"] == "success"  # NE's lock cannot see same-second edits
        finally:
            caller.close()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("<root><receiveorder_base>", "020002"),
        ("<other/>", "020002"),
        (_xml(base={"no_such_field": "1"}), "020003"),
        (_xml(base={"receive_order_order_status_id": "50"}), "020003"),
        (_xml(base={"receive_order_send_date": "2025-01-01 00:00:00"}), "020003"),
        (_xml(base={"receive_order_delivery_cut_form_id": "9" * 51}), "020015"),
        (_xml(base={"receive_order_hope_delivery_date": "someday"}), "020015"),
        (_xml(base={"receive_order_total_amount": "1,000"}), "020015"),
        (_xml(base={"receive_order_cancel_type_id": "77"}), "020015"),
        (_xml(rows={9: {"receive_order_row_quantity": "1"}}), "020016"),
        (_xml(rows={1: {"receive_order_row_stock_allocation_quantity": "1"}}), "020003"),
        (_xml(rows={1: {"receive_order_row_quantity": "-1"}}), "020015"),
    ],
)
def test_update_rejections(ne: SandboxServer, caller: SandboxCaller, data: str, code: str) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)])
    before = _order(ne, order_id)
    body = _update(caller, ne, order_id, data)
    assert (body["result"], body["code"]) == ("error", code)
    assert _order(ne, order_id) == before


def test_update_param_errors(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)])
    missing = caller.call(f"{BASE}/update", data=_xml(base={"receive_order_note": "x"}))
    assert missing["code"] == "004007"
    unknown = caller.call(
        f"{BASE}/update",
        receive_order_id="999999",
        receive_order_last_modified_date=_lm(ne, order_id),
        data=_xml(base={"receive_order_note": "x"}),
    )
    assert unknown["code"] == "020001"
    no_lm = caller.call(
        f"{BASE}/update",
        receive_order_id=str(order_id),
        data=_xml(base={"receive_order_note": "x"}),
    )
    assert no_lm["code"] == "004007"
    no_data = caller.call(
        f"{BASE}/update",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=_lm(ne, order_id),
    )
    assert no_data["code"] == "004007"


def test_status_50_needs_shipped_update_flag(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], status_id=50)
    data = _xml(base={"receive_order_delivery_cut_form_id": "555"})
    refused = _update(caller, ne, order_id, data)
    assert refused["code"] == "020004"
    allowed = _update(caller, ne, order_id, data, receive_order_shipped_update_flag="1")
    assert allowed["result"] == "success"
    assert _order(ne, order_id)["receive_order_delivery_cut_form_id"] == "555"


def test_status_1_allows_only_cancel_type_and_worker_text(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], status_id=1)
    tagged = _update(caller, ne, order_id, _xml(base={"receive_order_gruoping_tag": "[x]"}))
    assert tagged["code"] == "020009"
    ok = _update(
        caller,
        ne,
        order_id,
        _xml(base={"receive_order_worker_text": "memo", "receive_order_cancel_type_id": "1"}),
    )
    assert ok["result"] == "success"


def test_allocation_follows_row_and_cancel_changes(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    assert _stock(ne, "Widget-A") == (10, 0)
    first = ne.state.create_order([("widget-a", 7)])  # row spelled differently: still allocates
    second = ne.state.create_order([("Widget-A", 5)])
    assert _stock(ne, "Widget-A") == (10, 10)
    assert _order(ne, second)["rows"][0]["receive_order_row_stock_allocation_quantity"] == "3"
    _update(caller, ne, first, _xml(rows={1: {"receive_order_row_quantity": "4"}}))
    assert _order(ne, first)["rows"][0]["receive_order_row_stock_allocation_quantity"] == "4"
    assert _stock(ne, "Widget-A") == (10, 7)
    _update(caller, ne, first, _xml(base={"receive_order_cancel_type_id": "1"}))
    cancelled = _order(ne, first)
    assert cancelled["receive_order_cancel_type_id"] == "1"
    assert cancelled["receive_order_cancel_date"] == "2025-03-01 10:00:00"
    assert cancelled["rows"][0]["receive_order_row_stock_allocation_quantity"] == "0"
    assert _stock(ne, "Widget-A") == (10, 3)
    _update(caller, ne, first, _xml(base={"receive_order_cancel_type_id": "0"}))
    assert _stock(ne, "Widget-A") == (10, 7)
    _update(caller, ne, second, _xml(rows={1: {"receive_order_row_cancel_flag": "1"}}))
    assert _stock(ne, "Widget-A") == (10, 4)
    kinds = [e.kind for e in ne.ledger.entries(goods_code="widget-a")]
    assert "stock.release" in kinds and "stock.allocate" in kinds
    assert ne.ledger.count("order.cancel", order_id=first) == 1
    assert ne.ledger.net_stock_change("WIDGET-A") == 0  # allocation never moves quantity


def test_no_reallocation_option_still_gives_stock_back() -> None:
    with _server(reallocate_on_change=False) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            ne.state.create_goods("Gadget", 4)
            ne.state.create_goods("Other", 4)
            order_id = ne.state.create_order([("Gadget", 3)])
            _update(caller, ne, order_id, _xml(rows={1: {"receive_order_row_quantity": "4"}}))
            assert _stock(ne, "Gadget") == (4, 3)  # no extra allocation
            _update(caller, ne, order_id, _xml(rows={1: {"receive_order_row_quantity": "1"}}))
            assert _stock(ne, "Gadget") == (4, 1)  # the excess goes back
            _update(caller, ne, order_id, _xml(rows={1: {"receive_order_row_goods_id": "Other"}}))
            assert _stock(ne, "Gadget") == (4, 0)
            assert _stock(ne, "Other") == (4, 0)
        finally:
            caller.close()


def test_row_cancel_update_flag_re_enables_rows(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([RowSpec("Widget-A", 1, cancel_flag=1)], cancel_type_id=2)
    _update(
        caller,
        ne,
        order_id,
        _xml(base={"receive_order_cancel_type_id": "0"}),
        receive_order_row_cancel_update_flag="1",
    )
    order = _order(ne, order_id)
    assert order["rows"][0]["receive_order_row_cancel_flag"] == "0"
    assert order["rows"][0]["receive_order_row_stock_allocation_quantity"] == "1"


# ---------------------------------------------------------------- bulkupdate
def _bulk_xml(items: list[tuple[int | str, str, str]]) -> str:
    body = "".join(
        f'<receiveorder receive_order_id="{oid}" receive_order_last_modified_date="{lm}">'
        f"<receiveorder_base>{inner}</receiveorder_base></receiveorder>"
        for oid, lm, inner in items
    )
    return f'<?xml version="1.0" encoding="utf-8"?><root>{body}</root>'


def test_bulkupdate_partial_failure_applies_the_rest(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    good = ne.state.create_order([("Widget-A", 1)])
    stale = ne.state.create_order([("Widget-A", 1)])
    stale_lm = _lm(ne, stale)
    ne.state.human_edit(stale)
    data = _bulk_xml(
        [
            (good, _lm(ne, good), "<receive_order_worker_text>ok</receive_order_worker_text>"),
            (stale, stale_lm, "<receive_order_worker_text>no</receive_order_worker_text>"),
            (424242, "2025-03-01 10:00:00", "<receive_order_note>x</receive_order_note>"),
        ]
    )
    body = caller.call(f"{BASE}/bulkupdate", data_type="xml", data=data)
    assert (body["result"], body["code"]) == ("error", "020500")
    assert [(m["receive_order_id"], m["code"]) for m in body["message"]] == [
        (str(stale), "020006"),
        ("424242", "020001"),
    ]
    assert all(isinstance(m["message"], str) for m in body["message"])
    assert _order(ne, good)["receive_order_worker_text"] == "ok"
    assert _order(ne, stale)["receive_order_worker_text"] is None
    assert body["access_token"] == caller.access_token


def test_bulkupdate_gz_all_ok(ne: SandboxServer, caller: SandboxCaller) -> None:
    ids = [ne.state.create_order([("Widget-A", 1)]) for _ in range(3)]
    tag = "<receive_order_gruoping_tag>[済]</receive_order_gruoping_tag>"
    data = _bulk_xml([(i, _lm(ne, i), tag) for i in ids])
    body = caller.call(
        f"{BASE}/bulkupdate", data_type="gz", data=gzip.compress(data.encode("utf-8"))
    )
    assert body["result"] == "success" and body["message"] == ""
    assert all(_order(ne, i)["receive_order_gruoping_tag"] == "[済]" for i in ids)
    not_gzip = caller.call(f"{BASE}/bulkupdate", data_type="gz", data=data)
    assert not_gzip["code"] == "004009"
    bad_type = caller.call(f"{BASE}/bulkupdate", data_type="json", data=data)
    assert bad_type["code"] == "004008"


def test_bulk_max_orders_option() -> None:
    with _server(bulk_max_orders=2) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            ids = [ne.state.create_order([("TSHIRT-Red-M", 1)]) for _ in range(3)]
            data = _bulk_xml([(i, _lm(ne, i), "") for i in ids])
            body = caller.call(f"{BASE}/bulkupdate", data_type="xml", data=data)
            assert body["code"] == "020017" and isinstance(body["message"], str)
        finally:
            caller.close()


# ---------------------------------------------------------------- receipted
def test_receipted_moves_20_to_40(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], status_id=20)
    body = caller.call(
        f"{BASE}/receipted",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=_lm(ne, order_id),
        receive_order_label_print_flag="1",
    )
    assert body["result"] == "success"
    order = _order(ne, order_id)
    assert order["receive_order_order_status_id"] == "40"
    assert order["receive_order_order_status_name"] == "納品書印刷済"
    assert order["receive_order_statement_delivery_printing_date"] == "2025-03-01 10:00:00"
    assert order["receive_order_label_print_flag"] == "1"
    again = caller.call(
        f"{BASE}/receipted",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=_lm(ne, order_id),
    )
    assert again["code"] == "020013"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"status_id": 20, "instruct_date": "2025-03-02 00:00:00"}, "020012"),
        ({"status_id": 20, "cancel_type_id": 1}, "020011"),
        ({"status_id": 2}, "020010"),
        ({"status_id": 50}, "020013"),
    ],
)
def test_receipted_rejections(
    ne: SandboxServer, caller: SandboxCaller, kwargs: dict[str, Any], code: str
) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], **kwargs)
    body = caller.call(
        f"{BASE}/receipted",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=_lm(ne, order_id),
    )
    assert (body["result"], body["code"]) == ("error", code)


def test_print_instruct_date_defaults_to_zero_date(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    plain = ne.state.create_order([("Widget-A", 1)])
    later = ne.state.create_order([("Widget-A", 1)], instruct_date="2025-03-05")
    assert (
        _order(ne, plain)["receive_order_statement_delivery_instruct_printing_date"]
        == "0000-00-00 00:00:00"
    )
    ready = caller.search(
        f"{BASE}/search",
        "receive_order_id",
        **{"receive_order_statement_delivery_instruct_printing_date-lte": ne.state.now()},
    )
    assert [int(r["receive_order_id"]) for r in ready] == [plain]
    waiting = caller.search(
        f"{BASE}/search",
        "receive_order_id",
        **{"receive_order_statement_delivery_instruct_printing_date-gt": "2025-03-01"},
    )
    assert [int(r["receive_order_id"]) for r in waiting] == [later]


def test_receipted_allowed_once_instruct_date_is_reached(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], instruct_date="2025/03/02")
    ne.clock.advance(86_400)
    body = caller.call(
        f"{BASE}/receipted",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=_lm(ne, order_id),
    )
    assert body["result"] == "success"


def test_bulkupdatereceipted_partial(ne: SandboxServer, caller: SandboxCaller) -> None:
    ok = ne.state.create_order([("Widget-A", 1)])
    future = ne.state.create_order([("Widget-A", 1)], instruct_date="2025-04-01 00:00:00")
    cancelled = ne.state.create_order([("Widget-A", 1)], cancel_type_id=3)
    items = "".join(
        f'<receiveorder receive_order_id="{i}" receive_order_last_modified_date="{_lm(ne, i)}">'
        "<receive_order_label_print_flag>0</receive_order_label_print_flag></receiveorder>"
        for i in (ok, future, cancelled)
    )
    body = caller.call(f"{BASE}/bulkupdatereceipted", data_type="xml", data=f"<root>{items}</root>")
    assert body["code"] == "020500"
    assert [(m["receive_order_id"], m["code"]) for m in body["message"]] == [
        (str(future), "020012"),
        (str(cancelled), "020011"),
    ]
    assert _order(ne, ok)["receive_order_order_status_id"] == "40"
    assert _order(ne, future)["receive_order_order_status_id"] == "20"


# ---------------------------------------------------------------- shipped
def _ship(caller: SandboxCaller, ne: SandboxServer, order_id: int) -> dict[str, Any]:
    return caller.call(
        f"{BASE}/shipped",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=_lm(ne, order_id),
    )


def test_shipped_from_40_consumes_allocated_stock(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 3), ("widget-b", 9)], status_id=40)
    assert _stock(ne, "Widget-A") == (10, 3)
    assert _stock(ne, "widget-b") == (5, 5)
    body = _ship(caller, ne, order_id)
    assert body["result"] == "success"
    order = _order(ne, order_id)
    assert order["receive_order_order_status_id"] == "50"
    assert order["receive_order_send_date"] == "2025-03-01 10:00:00"
    assert _stock(ne, "Widget-A") == (7, 0)
    assert _stock(ne, "widget-b") == (0, 0)  # only the 5 allocated of 9 left the warehouse
    assert ne.ledger.shipped_order_ids() == [order_id]
    assert ne.ledger.net_stock_change("widget-a") == -3
    again = _ship(caller, ne, order_id)
    assert again["code"] == "020014"
    # cancelling a shipped order never puts stock back
    _update(
        caller,
        ne,
        order_id,
        _xml(base={"receive_order_cancel_type_id": "1"}),
        receive_order_shipped_update_flag="1",
    )
    assert _stock(ne, "Widget-A") == (7, 0)
    assert ne.ledger.shipped_order_ids() == [order_id]


def test_shipped_from_20_is_an_option(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], status_id=20)
    assert _ship(caller, ne, order_id)["result"] == "success"
    with _server(shipped_allowed_from_20=False) as strict:
        c = SandboxCaller.signed_in(strict)
        try:
            other = strict.state.create_order([("TSHIRT-Red-M", 1)], status_id=20)
            assert _ship(c, strict, other)["code"] == "020010"
        finally:
            c.close()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"status_id": 2}, "020010"),
        ({"status_id": 1}, "020010"),
        ({"status_id": 40, "cancel_type_id": 1}, "020011"),
        ({"status_id": 50}, "020014"),
    ],
)
def test_shipped_rejections(
    ne: SandboxServer, caller: SandboxCaller, kwargs: dict[str, Any], code: str
) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], **kwargs)
    before = _stock(ne, "Widget-A")
    assert _ship(caller, ne, order_id)["code"] == code
    assert _stock(ne, "Widget-A") == before


def test_shipped_with_stale_last_modified(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], status_id=40)
    stale = _lm(ne, order_id)
    ne.state.human_edit(order_id, {"receive_order_worker_text": "人が編集"})
    body = caller.call(
        f"{BASE}/shipped", receive_order_id=str(order_id), receive_order_last_modified_date=stale
    )
    assert body["code"] == "020006"
    assert _order(ne, order_id)["receive_order_order_status_id"] == "40"


def test_shipped_stock_effect_quantity() -> None:
    with _server(shipped_stock_effect="quantity") as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            ne.state.create_goods("Tiny", 2)
            order_id = ne.state.create_order([("Tiny", 5)], status_id=40)
            assert _ship(caller, ne, order_id)["result"] == "success"
            assert _stock(ne, "Tiny") == (-3, 0)
        finally:
            caller.close()


# ---------------------------------------------------------------- labelprinted
def test_labelprinted(ne: SandboxServer, caller: SandboxCaller) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)])
    body = caller.call(
        f"{BASE}/labelprinted",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=_lm(ne, order_id),
    )
    assert body["result"] == "success"
    order = _order(ne, order_id)
    assert order["receive_order_label_print_flag"] == "2"
    assert order["receive_order_label_print_date"] == "2025-03-01 10:00:00"
    bad = caller.call(
        f"{BASE}/labelprinted",
        receive_order_id=str(order_id),
        receive_order_last_modified_date=_lm(ne, order_id),
        receive_order_label_print_flag="7",
    )
    assert bad["code"] == "020015"
    cancelled = ne.state.create_order([("Widget-A", 1)], cancel_type_id=1)
    refused = caller.call(
        f"{BASE}/labelprinted",
        receive_order_id=str(cancelled),
        receive_order_last_modified_date=_lm(ne, cancelled),
        receive_order_label_print_flag="1",
    )
    assert refused["code"] == "020011"


# ---------------------------------------------------------------- control API on orders
def test_human_edit_and_order_state_via_control_api(
    ne: SandboxServer, caller: SandboxCaller
) -> None:
    order_id = ne.state.create_order([("Widget-A", 1)], status_id=40)
    read = caller.control("GET", f"/state/orders/{order_id}")
    stale = read["receive_order_last_modified_date"]
    edited = caller.control(
        "POST",
        "/human_edit",
        {"receive_order_id": order_id, "fields": {"receive_order_order_status_id": "20"}},
    )
    assert edited["receive_order_last_modified_date"] > stale
    after = caller.control("GET", f"/state/orders/{order_id}")
    assert after["receive_order_order_status_id"] == "20"
    assert after["receive_order_last_modified_by_name"] != ne.state.user["pic_name"]
    assert (
        _update(caller, ne, order_id, _xml(base={"receive_order_note": "x"}), lm=stale)["code"]
        == "020006"
    )
    assert caller.control("GET", "/state/orders/999999")["code"] == "020001"
    created = caller.control(
        "POST", "/state/orders", {"rows": [["widget-b", 2]], "status_id": 20, "tag": "[T]"}
    )
    assert created["receive_order_gruoping_tag"] == "[T]"
    assert created["rows"][0]["receive_order_row_stock_allocation_quantity"] == "2"
    assert caller.control("GET", "/state/goods/WIDGET-B")["stock_allocation_quantity"] == "2"
    entries = caller.control("GET", f"/ledger?kind=order.human_edit&order_id={order_id}")
    assert len(entries) == 1 and entries[0]["source"] == "human"
