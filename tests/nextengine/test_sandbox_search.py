"""NE sandbox: the search language (§2.3), paging, sort, counts, joins and the seeded world."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from daemon.sandbox import JST, RowSpec, SandboxConfig, SandboxServer
from daemon.sandbox.seed import TAG_LOOKALIKE, TAG_TARGET, TAG_UNBRACKETED
from daemon.sandbox.testing import SandboxCaller

START = datetime(2025, 3, 1, 10, 0, 0, tzinfo=JST)
BASE = "/api_v1_receiveorder_base"


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[SandboxServer, SandboxCaller, dict[str, int]]]:
    """An empty-order world with five hand-made orders (o1..o5) to test operators exactly."""
    config = SandboxConfig(seed=11, seed_size=0, clock_start=START, clock_frozen=True)
    with SandboxServer(config) as ne:
        st = ne.state
        ids = {
            "o1": st.create_order(
                [RowSpec("TSHIRT-Red-M", 1, 1000)],
                shop_id=1,
                status_id=20,
                tag=TAG_TARGET,
                fields={"receive_order_delivery_cut_form_id": "A-1"},
            ),
            "o2": st.create_order(
                [RowSpec("mug-white-01", 12, 1000)],
                shop_id=2,
                status_id=40,
                tag=TAG_LOOKALIKE,
                fields={"receive_order_delivery_cut_form_id": ""},
            ),
            "o3": st.create_order(
                [RowSpec("CAP-blk", 10, 1000)],
                shop_id=3,
                status_id=50,
                fields={"receive_order_delivery_cut_form_id": "123456789012"},
            ),
            "o4": st.create_order(
                [RowSpec("sock-23", 2, 1000), RowSpec("SOCK-25", 1, 500)],
                shop_id=1,
                status_id=2,
                cancel_type_id=1,
                tag="[ギフト]" + TAG_TARGET,
            ),
            "o5": st.create_order(
                [RowSpec("note-A5", 3, 1000)],
                shop_id=2,
                status_id=20,
                tag=TAG_UNBRACKETED,
                option={"receive_order_option_noshi": "御祝"},
            ),
        }
        caller = SandboxCaller.signed_in(ne)
        yield ne, caller, ids
        caller.close()


def _ids(rows: list[dict[str, Any]], key: str = "receive_order_id") -> list[int]:
    return [int(r[key]) for r in rows]


def _search(caller: SandboxCaller, **conditions: Any) -> list[int]:
    return _ids(caller.search(f"{BASE}/search", "receive_order_id", **conditions))


def _names(ids: dict[str, int], found: list[int]) -> set[str]:
    by_id = {v: k for k, v in ids.items()}
    return {by_id[i] for i in found}


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        ("receive_order_order_status_id-eq", "20", {"o1", "o5"}),
        ("receive_order_shop_id-neq", "1", {"o2", "o3", "o5"}),
        ("receive_order_order_status_id-gt", "20", {"o2", "o3"}),
        ("receive_order_order_status_id-gte", "20", {"o1", "o2", "o3", "o5"}),
        ("receive_order_order_status_id-lt", "20", {"o4"}),
        ("receive_order_order_status_id-lte", "2", {"o4"}),
        ("receive_order_shop_id-in", "1,3", {"o1", "o3", "o4"}),
        ("receive_order_shop_id-nin", "1, 3", {"o2", "o5"}),
        ("receive_order_gruoping_tag-like", f"%{TAG_TARGET}%", {"o1", "o4"}),
        ("receive_order_gruoping_tag-nlike", f"%{TAG_TARGET}%", {"o2", "o5"}),
        ("receive_order_gruoping_tag-nlikeornull", f"%{TAG_TARGET}%", {"o2", "o3", "o5"}),
        ("receive_order_delivery_cut_form_id-null", "", {"o4", "o5"}),
        ("receive_order_delivery_cut_form_id-nnull", "", {"o1", "o2", "o3"}),
        ("receive_order_delivery_cut_form_id-blank", "", {"o2", "o4", "o5"}),
        ("receive_order_delivery_cut_form_id-nblank", "", {"o1", "o3"}),
        ("receive_order_delivery_cut_form_id-neq", "A-1", {"o2", "o3"}),
        ("receive_order_total_amount-gt", "9000", {"o2", "o3"}),
        ("receive_order_cancel_type_id-neq", "0", {"o4"}),
        ("receive_order_gruoping_tag-like", "%ロジクラ受注取込対象", {"o5"}),
        ("receive_order_delivery_cut_form_id-like", "A-_", {"o1"}),
    ],
)
def test_each_operator(
    world: tuple[SandboxServer, SandboxCaller, dict[str, int]],
    condition: str,
    value: str,
    expected: set[str],
) -> None:
    _ne, caller, ids = world
    assert _names(ids, _search(caller, **{condition: value})) == expected


def test_conditions_are_anded_and_dates_compare(
    world: tuple[SandboxServer, SandboxCaller, dict[str, int]],
) -> None:
    ne, caller, ids = world
    found = _search(
        caller, **{"receive_order_order_status_id-eq": "20", "receive_order_shop_id-eq": "2"}
    )
    assert _names(ids, found) == {"o5"}
    assert len(_search(caller, **{"receive_order_date-gte": "2025-03-01"})) == 5
    assert _search(caller, **{"receive_order_date-gt": "2025/03/01 10:00:00"}) == []
    assert len(_search(caller, **{"receive_order_last_modified_date-lte": ne.state.now()})) == 5


def test_goods_codes_match_ignoring_case_and_keep_ne_spelling(
    world: tuple[SandboxServer, SandboxCaller, dict[str, int]],
) -> None:
    _ne, caller, _ = world
    rows = caller.search(
        "/api_v1_master_goods/search", "goods_id,stock_quantity", **{"goods_id-eq": "tshirt-red-m"}
    )
    assert [r["goods_id"] for r in rows] == ["TSHIRT-Red-M"]
    like = caller.search(
        "/api_v1_master_goods/search", "goods_id", **{"goods_id-like": "tshirt-red-%"}
    )
    assert {r["goods_id"] for r in like} == {"TSHIRT-Red-S", "TSHIRT-Red-M", "TSHIRT-Red-L"}
    stock = caller.search(
        "/api_v1_master_stock/search",
        "stock_goods_id,stock_quantity,stock_allocation_quantity,stock_free_quantity",
        **{"stock_goods_id-in": "SOCK-23,sock-25"},
    )
    assert {r["stock_goods_id"] for r in stock} == {"sock-23", "sock-25"}
    for row in stock:
        assert int(row["stock_free_quantity"]) == (
            int(row["stock_quantity"]) - int(row["stock_allocation_quantity"])
        )


def test_case_sensitive_codes_when_option_off() -> None:
    config = SandboxConfig(seed_size=0, case_insensitive_goods_codes=False)
    with SandboxServer(config) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            assert (
                caller.search(
                    "/api_v1_master_goods/search", "goods_id", **{"goods_id-eq": "tshirt-red-m"}
                )
                == []
            )
            order_id = ne.state.create_order([("TSHIRT-RED-M", 1)])
            assert (
                ne.state.order_snapshot(order_id)["rows"][0][
                    "receive_order_row_stock_allocation_quantity"
                ]
                == "0"
            )
        finally:
            caller.close()


def test_paging_sort_and_counts(world: tuple[SandboxServer, SandboxCaller, dict[str, int]]) -> None:
    _ne, caller, ids = world
    all_ids = sorted(ids.values())
    assert _search(caller) == all_ids
    page = caller.call(f"{BASE}/search", fields="receive_order_id", offset="1", limit="2")
    assert page["count"] == "2"
    assert _ids(page["data"]) == all_ids[1:3]
    last = caller.call(f"{BASE}/search", fields="receive_order_id", offset="4", limit="2")
    assert last["count"] == "1"
    total = caller.call(f"{BASE}/count", **{"receive_order_shop_id-in": "1,2"})
    assert total["count"] == "4" and "data" not in total
    rows = caller.search(
        f"{BASE}/search",
        "receive_order_id,receive_order_shop_id",
        sort="receive_order_shop_id-desc,receive_order_id-asc",
    )
    assert [(int(r["receive_order_shop_id"]), int(r["receive_order_id"])) for r in rows] == sorted(
        ((int(r["receive_order_shop_id"]), int(r["receive_order_id"])) for r in rows),
        key=lambda pair: (-pair[0], pair[1]),
    )
    numeric = caller.search(
        f"{BASE}/search", "receive_order_total_amount", sort="receive_order_total_amount-asc"
    )
    amounts = [int(r["receive_order_total_amount"]) for r in numeric]
    assert amounts == sorted(amounts)
    nulls_first = caller.search(
        f"{BASE}/search",
        "receive_order_delivery_cut_form_id",
        sort="receive_order_delivery_cut_form_id-asc",
    )
    assert [r["receive_order_delivery_cut_form_id"] for r in nulls_first][:2] == [None, None]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "004001"),
        ({"fields": " , "}, "004001"),
        ({"fields": "receive_order_id,no_such_field"}, "004002"),
        ({"fields": "receive_order_id", "no_such_field-eq": "1"}, "004002"),
        ({"fields": "receive_order_id", "receive_order_id-equals": "1"}, "004003"),
        ({"fields": "receive_order_id", "receive_order_id-eq": "abc"}, "004004"),
        ({"fields": "receive_order_id", "receive_order_date-gte": "yesterday"}, "004004"),
        ({"fields": "receive_order_id", "limit": "10001"}, "004005"),
        ({"fields": "receive_order_id", "limit": "0"}, "004004"),
        ({"fields": "receive_order_id", "offset": "-1"}, "004004"),
        ({"fields": "receive_order_id", "sort": "receive_order_id-up"}, "004004"),
        ({"fields": "receive_order_id", "sort": "nope-asc"}, "004002"),
        (
            {
                "fields": "receive_order_id",
                "receive_order_id-in": ",".join(str(i) for i in range(1001)),
            },
            "004006",
        ),
    ],
)
def test_search_parameter_errors(
    world: tuple[SandboxServer, SandboxCaller, dict[str, int]], params: dict[str, str], code: str
) -> None:
    _ne, caller, _ = world
    body = caller.call(f"{BASE}/search", **params)
    assert (body["result"], body["code"]) == ("error", code)
    assert body["access_token"] == caller.access_token


def test_fields_tolerate_spaces_and_in_accepts_1000(
    world: tuple[SandboxServer, SandboxCaller, dict[str, int]],
) -> None:
    _ne, caller, _ = world
    rows = caller.search(
        f"{BASE}/search",
        "receive_order_id, receive_order_shop_id",
        **{"receive_order_id-in": ",".join(str(i) for i in range(1, 1001))},
    )
    assert len(rows) == 5 and set(rows[0]) == {"receive_order_id", "receive_order_shop_id"}


def test_limit_clamp_option() -> None:
    config = SandboxConfig(seed_size=30, limit_max=10, limit_over_max="clamp", in_max=3)
    with SandboxServer(config) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            clamped = caller.call(f"{BASE}/search", fields="receive_order_id", limit="50")
            assert clamped["count"] == "10"
            default = caller.call(f"{BASE}/search", fields="receive_order_id")
            assert default["count"] == "10"
            too_many = caller.call(
                f"{BASE}/search", fields="receive_order_id", **{"receive_order_id-in": "1,2,3,4"}
            )
            assert too_many["code"] == "004006"
        finally:
            caller.close()


def test_row_search_joins_base_fields(
    world: tuple[SandboxServer, SandboxCaller, dict[str, int]],
) -> None:
    _ne, caller, ids = world
    rows = caller.search(
        "/api_v1_receiveorder_row/search",
        "receive_order_row_receive_order_id,receive_order_row_no,receive_order_row_goods_id,"
        "receive_order_row_quantity,receive_order_row_stock_allocation_quantity,"
        "receive_order_order_status_id,receive_order_gruoping_tag",
        **{
            "receive_order_order_status_id-eq": "20",
            "receive_order_cancel_type_id-eq": "0",
            "receive_order_row_cancel_flag-eq": "0",
        },
    )
    assert {int(r["receive_order_row_receive_order_id"]) for r in rows} == {ids["o1"], ids["o5"]}
    assert all(r["receive_order_order_status_id"] == "20" for r in rows)
    count = caller.call(
        "/api_v1_receiveorder_row/count",
        **{"receive_order_row_receive_order_id-eq": str(ids["o4"])},
    )
    assert count["count"] == "2"
    by_base_id = caller.search(
        "/api_v1_receiveorder_row/search",
        "receive_order_row_no",
        **{"receive_order_id-eq": str(ids["o4"])},
    )
    assert [r["receive_order_row_no"] for r in by_base_id] == ["1", "2"]


def test_option_tag_and_info_endpoints(
    world: tuple[SandboxServer, SandboxCaller, dict[str, int]],
) -> None:
    _ne, caller, ids = world
    options = caller.search(
        "/api_v1_receiveorder_option/search",
        "receive_order_option_receive_order_id,receive_order_option_noshi",
        **{"receive_order_option_noshi-nnull": ""},
    )
    assert options == [
        {
            "receive_order_option_receive_order_id": str(ids["o5"]),
            "receive_order_option_noshi": "御祝",
        }
    ]
    tags = caller.search(
        "/api_v1_receiveorder_groupingtag/search", "grouping_tag_id,grouping_tag_name"
    )
    assert "ロジクラ受注取込対象" in {t["grouping_tag_name"] for t in tags}
    cancel = caller.call("/api_v1_system_canceltype/info")
    assert {
        "cancel_type_id": "0",
        "cancel_type_name": "有効な受注です。",
        "cancel_type_deleted_flag": "0",
    } in cancel["data"]
    statuses = caller.call("/api_v1_system_orderstatus/info")
    assert {d["order_status_id"] for d in statuses["data"]} == {
        "0",
        "1",
        "2",
        "20",
        "30",
        "40",
        "50",
    }


def test_unknown_plain_params_ignored_unless_configured(
    world: tuple[SandboxServer, SandboxCaller, dict[str, int]],
) -> None:
    _ne, caller, _ = world
    assert (
        caller.call(f"{BASE}/search", fields="receive_order_id", something="x", wait_flag="1")[
            "result"
        ]
        == "success"
    )
    with SandboxServer(SandboxConfig(seed_size=1, reject_unknown_params=True)) as ne:
        strict = SandboxCaller.signed_in(ne)
        try:
            body = strict.call(f"{BASE}/search", fields="receive_order_id", something="x")
            assert body["code"] == "004004"
        finally:
            strict.close()


def _dump(ne: SandboxServer) -> list[dict[str, Any]]:
    return [ne.state.order_snapshot(i) for i in sorted(ne.state.orders)] + [
        ne.state.goods_snapshot(g.code) for g in ne.state.goods.values()
    ]


def test_seed_is_deterministic() -> None:
    def build(seed: int) -> SandboxServer:
        return SandboxServer(
            SandboxConfig(seed=seed, seed_size=80, clock_start=START, clock_frozen=True)
        )

    first, second, other = build(3), build(3), build(4)
    assert _dump(first) == _dump(second)
    assert first.state.company == second.state.company
    assert first.state.user == second.state.user
    assert _dump(first) != _dump(other)


def test_seeded_world_has_the_documented_variety() -> None:
    ne = SandboxServer(SandboxConfig(seed=1, seed_size=200, clock_start=START, clock_frozen=True))
    orders = list(ne.state.orders.values())
    assert len(orders) == 200 and len(ne.state.goods) >= 40
    codes = [g.code for g in ne.state.goods.values()]
    assert any(c != c.lower() and c != c.upper() for c in codes)
    assert len({o.shop_id for o in orders}) >= 3
    assert {2, 20, 40, 50} <= {o.status_id for o in orders}
    tags = {o.extra.get("receive_order_gruoping_tag") for o in orders}
    assert {TAG_TARGET, TAG_LOOKALIKE, TAG_UNBRACKETED} <= tags
    assert any(t and TAG_TARGET in t and t != TAG_TARGET for t in tags)
    assert any(o.cancel_type_id != 0 for o in orders)
    now = ne.state.now()
    assert any(
        o.status_id == 20
        and (o.extra.get("receive_order_statement_delivery_instruct_printing_date") or "") > now
        for o in orders
    )
    assert any(r.cancel_flag for o in orders for r in o.rows)
    assert any(o.extra.get("receive_order_send_date") for o in orders if o.status_id == 50)
    for goods in ne.state.goods.values():
        assert 0 <= goods.allocation <= goods.quantity
    case_variants = [
        r
        for o in orders
        for r in o.rows
        if ne.state.find_goods(r.goods_id) and r.goods_id not in codes
    ]
    assert case_variants


def test_shuffle_unsorted_results_option() -> None:
    config = SandboxConfig(seed_size=40, shuffle_unsorted_results=True)
    with SandboxServer(config) as ne:
        caller = SandboxCaller.signed_in(ne)
        try:
            ids = _search(caller)
            assert sorted(ids) == list(range(1, 41)) and ids != sorted(ids)
            assert _search(caller, sort="receive_order_id-asc") == sorted(ids)
        finally:
            caller.close()


def test_large_world_builds_fast_and_pages_over_http() -> None:
    started = time.perf_counter()
    with SandboxServer(SandboxConfig(seed=2, seed_size=100_000)) as ne:
        built = time.perf_counter() - started
        assert built < 10, f"100k world took {built:.1f}s"
        caller = SandboxCaller.signed_in(ne)
        try:
            conditions = {
                "receive_order_order_status_id-eq": "20",
                "receive_order_cancel_type_id-eq": "0",
            }
            total = int(caller.call(f"{BASE}/count", **conditions)["count"])
            seen: list[int] = []
            offset = 0
            while True:
                page = caller.call(
                    f"{BASE}/search",
                    fields="receive_order_id,receive_order_last_modified_date",
                    offset=str(offset),
                    limit="10000",
                    sort="receive_order_id-asc",
                    **conditions,
                )
                seen.extend(_ids(page["data"]))
                offset += int(page["count"])
                if int(page["count"]) < 10_000:
                    break
            assert len(seen) == total == len(set(seen)) and total > 30_000
            assert seen == sorted(seen)
            lookup = time.perf_counter()
            for order_id in seen[:50]:
                assert _search(caller, **{"receive_order_id-eq": str(order_id)}) == [order_id]
            assert time.perf_counter() - lookup < 2
        finally:
            caller.close()
