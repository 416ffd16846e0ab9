"""Pure unit tests of the NE client's building blocks (no HTTP)."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from daemon.nextengine.client import BulkResult, QueueResult, stock_delta_csv
from daemon.nextengine.dates import JST, format_ne_datetime, parse_ne_datetime
from daemon.nextengine.errors import (
    NeLockConflict,
    NeMaintenance,
    NeOverloaded,
    NeReauthRequired,
    NeSuspended,
    NeSystemError,
    NeTokenStale,
    NeTransient,
    NeValidationError,
    NextEngineError,
    error_from_response,
)
from daemon.nextengine.search import Where, asc, count_rows, desc, iter_search
from daemon.nextengine.tokens import (
    FileTokenStore,
    TokenFileError,
    TokenSet,
    company_lock,
    redact,
    redact_params,
    store_lock_key,
)
from daemon.nextengine.xmlbuild import (
    XML_HEADER,
    OrderRef,
    OrderUpdate,
    build_bulk_receipted_xml,
    build_bulk_update_xml,
    build_update_xml,
    clean_text,
)

ACCESS = "ACCESS-secret-0123456789abcdef"
REFRESH = "REFRESH-secret-0123456789abcdef"


def _tokens(**kw: Any) -> TokenSet:
    base: dict[str, Any] = {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "access_token_end_date": datetime(2025, 1, 2, 3, 4, 5, tzinfo=JST),
        "refresh_token_end_date": datetime(2025, 1, 4, 3, 4, 5, tzinfo=JST),
        "company_id": "NE123",
        "company_name": "テスト商店",
    }
    base.update(kw)
    return TokenSet(**base)


# -- XML -------------------------------------------------------------------------------------


def test_update_xml_escapes_values_and_strips_control_characters() -> None:
    xml = build_update_xml(
        {
            "receive_order_delivery_cut_form_id": "A&B<1>\"'",
            "receive_order_worker_text": "x\x00\x01\x08\x0b\x0c\x0e\x1fy\tz\n\r",
            "receive_order_cancel_type_id": 0,
            "receive_order_total_amount": Decimal("1800.00"),
            "receive_order_note": None,
        }
    )
    assert xml == (
        f"{XML_HEADER}<root><receiveorder_base>"
        "<receive_order_delivery_cut_form_id>A&amp;B&lt;1&gt;&quot;&apos;"
        "</receive_order_delivery_cut_form_id>"
        "<receive_order_worker_text>xy\tz\n\r</receive_order_worker_text>"
        "<receive_order_cancel_type_id>0</receive_order_cancel_type_id>"
        "<receive_order_total_amount>1800.00</receive_order_total_amount>"
        "<receive_order_note></receive_order_note>"
        "</receiveorder_base></root>"
    )
    assert xml.startswith('<?xml version="1.0" encoding="utf-8"?><root><receiveorder_base>')


def test_xml_dates_are_jst_and_bad_names_or_types_are_refused() -> None:
    when = datetime(2025, 3, 1, 0, 30, tzinfo=UTC)
    xml = build_update_xml({"receive_order_send_plan_date": when})
    assert "<receive_order_send_plan_date>2025-03-01 09:30:00</" in xml
    with pytest.raises(ValueError, match="field name"):
        build_update_xml({"a><b": "x"})
    with pytest.raises(TypeError):
        build_update_xml({"receive_order_gift_flag": True})
    with pytest.raises(ValueError):
        build_update_xml({})
    with pytest.raises(ValueError, match="naive"):
        build_update_xml({"receive_order_send_plan_date": datetime(2025, 1, 1)})


def test_bulk_update_xml_has_one_receiveorder_per_order() -> None:
    xml = build_bulk_update_xml(
        [
            OrderUpdate(1, "2025-01-01 10:00:00", {"receive_order_gruoping_tag": "[A][B&C]"}),
            OrderUpdate(
                "2",
                datetime(2025, 1, 1, 1, 0, tzinfo=UTC),
                {"receive_order_delivery_cut_form_id": "123"},
            ),
        ]
    )
    assert xml == (
        f"{XML_HEADER}<root>"
        '<receiveorder receive_order_id="1" receive_order_last_modified_date="2025-01-01 10:00:00">'
        "<receiveorder_base><receive_order_gruoping_tag>[A][B&amp;C]</receive_order_gruoping_tag>"
        "</receiveorder_base></receiveorder>"
        '<receiveorder receive_order_id="2" receive_order_last_modified_date="2025-01-01 10:00:00">'
        "<receiveorder_base><receive_order_delivery_cut_form_id>123"
        "</receive_order_delivery_cut_form_id></receiveorder_base></receiveorder>"
        "</root>"
    )


def test_bulk_receipted_xml_with_and_without_label_flag() -> None:
    refs = [OrderRef(5, "2025-01-01 10:00:00")]
    assert build_bulk_receipted_xml(refs, None) == (
        f'{XML_HEADER}<root><receiveorder receive_order_id="5" '
        'receive_order_last_modified_date="2025-01-01 10:00:00"></receiveorder></root>'
    )
    assert "<receive_order_label_print_flag>1</receive_order_label_print_flag>" in (
        build_bulk_receipted_xml(refs, 1)
    )
    assert clean_text('"x"') == "&quot;x&quot;"


# -- conditions and paging -------------------------------------------------------------------


def test_where_covers_every_operator() -> None:
    when = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
    where = (
        Where()
        .eq("a", 1)
        .neq("b", "x")
        .gt("c", 2)
        .gte("d", when)
        .lt("e", Decimal("1.5"))
        .lte("f", 9)
        .in_("g", [1, 2, 2, 3])
        .nin("h", ["p", "q"])
        .like("i", "%red")
        .nlike("j", "%blue")
        .nlikeornull("k", "%[済]%")
        .blank("l")
        .nblank("m")
        .null("n")
        .nnull("o")
    )
    params = {c.key: c.text() for c in where.conditions}
    assert params == {
        "a-eq": "1",
        "b-neq": "x",
        "c-gt": "2",
        "d-gte": "2025-01-01 09:00:00",
        "e-lt": "1.5",
        "f-lte": "9",
        "g-in": "1,2,3",
        "h-nin": "p,q",
        "i-like": "%red",
        "j-nlike": "%blue",
        "k-nlikeornull": "%[済]%",
        "l-blank": "",
        "m-nblank": "",
        "n-null": "",
        "o-nnull": "",
    }
    assert asc("receive_order_id") == "receive_order_id-asc"
    assert desc("x") == "x-desc"


def test_where_refuses_duplicates_commas_and_bad_names() -> None:
    with pytest.raises(ValueError, match="twice"):
        Where().eq("a", 1).eq("a", 2)
    with pytest.raises(ValueError, match="comma"):
        Where().in_("a", ["x,y"])
    with pytest.raises(ValueError, match="field name"):
        Where().eq("a-eq", 1)
    with pytest.raises(TypeError):
        Where().eq("a", True)
    assert Where().eq("a", 1) == Where().eq("a", 1)


class FakeNE:
    """A tiny in-memory search endpoint for paging and chunking logic (no HTTP)."""

    def __init__(self, rows: list[dict[str, str | None]]) -> None:
        self.rows = rows
        self.calls: list[tuple[str, dict[str, str]]] = []

    def post(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        self.calls.append((path, dict(params)))
        rows = self.rows
        for key, value in params.items():
            field, _, op = key.rpartition("-")
            if op == "in":
                rows = [r for r in rows if r[field] in value.split(",")]
            elif op == "nin":
                rows = [r for r in rows if r[field] not in value.split(",")]
            elif op == "eq":
                rows = [r for r in rows if r[field] == value]
        if "sort" in params:
            name, _, direction = params["sort"].rpartition("-")
            rows = sorted(rows, key=lambda r: int(r[name] or 0), reverse=direction == "desc")
        if path.endswith("/count"):
            return {"result": "success", "count": str(len(rows))}
        fields = params["fields"].split(",")
        offset, limit = int(params["offset"]), int(params["limit"])
        page = [{f: r[f] for f in fields} for r in rows[offset : offset + limit]]
        return {"result": "success", "count": str(len(page)), "data": page}


def _rows(n: int) -> list[dict[str, str | None]]:
    return [{"id": str(i), "kind": "odd" if i % 2 else "even", "x": None} for i in range(1, n + 1)]


def test_paging_loops_while_pages_are_full() -> None:
    ne = FakeNE(_rows(7))
    got = list(iter_search(ne.post, "receiveorder_base", ["id"], page_size=3))
    assert [r["id"] for r in got] == [str(i) for i in range(1, 8)]
    assert [c[1]["offset"] for c in ne.calls] == ["0", "3", "6"]
    assert all(c[0] == "/api_v1_receiveorder_base/search" for c in ne.calls)
    assert ne.calls[0][1]["fields"] == "id" and ne.calls[0][1]["limit"] == "3"

    ne = FakeNE(_rows(6))
    assert len(list(iter_search(ne.post, "receiveorder_base", "id, kind", page_size=3))) == 6
    assert [c[1]["offset"] for c in ne.calls] == ["0", "3", "6"]  # last page is empty


def test_in_list_is_chunked_and_merged_in_sort_order() -> None:
    ne = FakeNE(_rows(20))
    where = Where().in_("id", [str(i) for i in (9, 2, 15, 4, 11)])
    got = list(iter_search(ne.post, "r", ["kind"], where=where, sort="id-desc", in_max=2))
    assert len(ne.calls) == 3
    assert [c[1]["id-in"] for c in ne.calls] == ["9,2", "15,4", "11"]
    assert ne.calls[0][1]["fields"] == "kind,id"  # sort field added for merging...
    assert got == [{"kind": k} for k in ("odd", "odd", "odd", "even", "even")]  # ...and removed
    ne.calls.clear()
    got = list(iter_search(ne.post, "r", ["id"], where=where, sort="id-asc", in_max=2))
    assert [r["id"] for r in got] == ["2", "4", "9", "11", "15"]
    assert count_rows(ne.post, "r", where=where, in_max=2) == 5


def test_nin_list_is_chunked_and_intersected() -> None:
    ne = FakeNE(_rows(10))
    where = Where().eq("kind", "even").nin("id", ["2", "4", "6", "7"])
    got = list(iter_search(ne.post, "r", ["id", "kind"], where=where, in_max=3))
    assert [r["id"] for r in got] == ["8", "10"]
    assert len(ne.calls) == 2
    with pytest.raises(ValueError, match="nin"):
        count_rows(ne.post, "r", where=where, in_max=3)


def test_empty_in_sends_nothing_and_invalid_plans_are_refused() -> None:
    ne = FakeNE(_rows(3))
    assert list(iter_search(ne.post, "r", ["id"], where=Where().in_("id", []))) == []
    assert count_rows(ne.post, "r", where=Where().in_("id", [])) == 0
    assert ne.calls == []
    assert len(list(iter_search(ne.post, "r", ["id"], where=Where().nin("id", [])))) == 3
    too_long = Where().in_("id", ["1", "2", "3"]).nin("kind", ["a", "b", "c"])
    with pytest.raises(ValueError, match="only one"):
        list(iter_search(ne.post, "r", ["id"], where=too_long, in_max=2))
    with pytest.raises(ValueError, match="sort"):
        list(iter_search(ne.post, "r", ["id"], sort="id"))
    with pytest.raises(ValueError, match="field"):
        list(iter_search(ne.post, "r", []))


# -- tokens, redaction, locks ----------------------------------------------------------------


def test_token_repr_and_redaction_hide_secrets() -> None:
    tokens = _tokens()
    for text in (repr(tokens), str(tokens), f"{tokens}"):
        assert ACCESS not in text and REFRESH not in text
        assert "NE123" in text
    assert redact(f"a {ACCESS} b {REFRESH}", tokens.secrets()) == "a *** b ***"
    shown = redact_params(
        {"access_token": ACCESS, "client_secret": "s", "uid": "u", "data": b"\x1f\x8b..", "x": "1"}
    )
    assert shown == {
        "access_token": "***",
        "client_secret": "***",
        "uid": "***",
        "data": "<4 bytes>",
        "x": "1",
    }


def test_token_set_from_response_keeps_company() -> None:
    body = {
        "access_token": "new-a",
        "refresh_token": "new-r",
        "access_token_end_date": "2025-02-01 10:00:00",
        "refresh_token_end_date": "2025-02-03 10:00:00",
    }
    new = TokenSet.from_response(body, _tokens())
    assert new is not None
    assert (new.access_token, new.company_id) == ("new-a", "NE123")
    assert new.access_token_end_date == datetime(2025, 2, 1, 10, tzinfo=JST)
    assert TokenSet.from_response({"result": "error"}, _tokens()) is None


def test_file_store_round_trip_mode_0600_despite_umask(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "state" / "tokens.json")
    assert store.load() is None
    old = os.umask(0)
    try:
        store.save(_tokens())
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load() == _tokens()
    assert ACCESS in store.path.read_text()  # the file itself holds the secret...
    assert repr(store) == f"FileTokenStore({str(store.path)!r})"  # ...its repr does not
    store.save(_tokens(access_token="second"))
    loaded = store.load()
    assert loaded is not None and loaded.access_token == "second"
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["tokens.json"]


def test_file_store_replace_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    store.save(_tokens())
    seen: list[str] = []

    def failing_replace(src: str, dst: str) -> None:
        seen.append(str(src))
        assert stat.S_IMODE(os.stat(src).st_mode) == 0o600
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save(_tokens(access_token="lost"))
    monkeypatch.undo()
    assert Path(seen[0]).parent == tmp_path  # temp file in the same directory
    assert store.load() == _tokens()  # the old pair survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]  # no temp left behind


def test_unreadable_token_file_asks_for_reconnect(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    with pytest.raises(TokenFileError) as info:
        FileTokenStore(path).load()
    assert isinstance(info.value, NeReauthRequired)
    assert "run `nebridge connect` to sign in to Next Engine again" in str(info.value)


def test_company_lock_serialises_threads_sharing_a_token_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    stores = [FileTokenStore(path), FileTokenStore(tmp_path / "." / "tokens.json")]
    assert store_lock_key(stores[0]) == store_lock_key(stores[1])
    active, peak = 0, 0
    guard = threading.Lock()

    def work(i: int) -> None:
        nonlocal active, peak
        for _ in range(5):
            with company_lock(stores[i % 2]):
                with guard:
                    active += 1
                    peak = max(peak, active)
                time.sleep(0.002)
                with guard:
                    active -= 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1
    assert stat.S_IMODE((tmp_path / "tokens.json.lock").stat().st_mode) == 0o600


def test_company_lock_does_not_block_other_companies(tmp_path: Path) -> None:
    barrier = threading.Barrier(2, timeout=5)

    def work(name: str) -> None:
        with company_lock(FileTokenStore(tmp_path / name)):
            barrier.wait()  # both must be inside at once, or this times out

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a.json", "b.json")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not barrier.broken


def test_company_lock_excludes_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    script = textwrap.dedent(
        f"""
        import sys
        from daemon.nextengine.tokens import FileTokenStore, company_lock
        with company_lock(FileTokenStore({str(path)!r})):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        assert child.stdout.readline().strip() == "locked"
        acquired = threading.Event()

        def take() -> None:
            with company_lock(FileTokenStore(path)):
                acquired.set()

        taker = threading.Thread(target=take)
        taker.start()
        assert not acquired.wait(0.3)  # blocked by the other process
        child.stdin.write("\n")
        child.stdin.flush()
        assert acquired.wait(5)
        taker.join()
    finally:
        child.kill()
        child.wait()


# -- dates, CSV, errors, results -------------------------------------------------------------


def test_ne_dates_round_trip_in_jst() -> None:
    parsed = parse_ne_datetime("2025-01-02 03:04:05")
    assert parsed == datetime(2025, 1, 2, 3, 4, 5, tzinfo=JST)
    assert parsed.utcoffset() == timedelta(hours=9)
    assert parse_ne_datetime("2025/01/02 03:04:05") == parsed
    assert parse_ne_datetime("0000-00-00 00:00:00") is None
    assert parse_ne_datetime(None) is None and parse_ne_datetime("") is None
    assert format_ne_datetime(datetime(2025, 1, 1, 18, 0, tzinfo=UTC)) == "2025-01-02 03:00:00"
    with pytest.raises(ValueError):
        parse_ne_datetime("yesterday")
    with pytest.raises(ValueError):
        format_ne_datetime(datetime(2025, 1, 1))


def test_stock_delta_csv() -> None:
    data = stock_delta_csv({"abc-1": 3, "ZERO": 0, "Def_2": -2, "a,b": 1})
    assert data == b'syohin_code,zaiko_su\r\nabc-1,3\r\nDef_2,-2\r\n"a,b",1\r\n'
    assert gzip.decompress(gzip.compress(data)) == data
    with pytest.raises(ValueError, match="case"):
        stock_delta_csv({"ABC": 1, "abc": 2})
    with pytest.raises(ValueError, match="non-zero"):
        stock_delta_csv({"A": 0})
    with pytest.raises(TypeError):
        stock_delta_csv({"A": True})
    with pytest.raises(ValueError, match="spaces"):
        stock_delta_csv({" A": 1})


@pytest.mark.parametrize(
    ("code", "result", "cls"),
    [
        ("003001", "error", NeOverloaded),
        ("003002", "error", NeOverloaded),
        ("002007", "error", NeMaintenance),
        ("003004", "error", NeMaintenance),
        ("003005", "error", NeMaintenance),
        ("000001", "error", NeTransient),
        ("009005", "error", NeTransient),
        ("011007", "error", NeTransient),
        ("008003", "error", NeTransient),
        ("020007", "error", NeTransient),
        ("008007", "error", NeTransient),
        ("002002", "error", NeTokenStale),
        ("002004", "error", NeReauthRequired),
        ("123456", "redirect", NeReauthRequired),
        ("002003", "error", NeSuspended),
        ("020006", "error", NeLockConflict),
        ("020015", "error", NeValidationError),
        ("020009", "error", NeValidationError),
        ("999999", "error", NeSystemError),
    ],
)
def test_error_codes_map_to_policies(code: str, result: str, cls: type[NextEngineError]) -> None:
    err = error_from_response({"result": result, "code": code, "message": "m"}, path="/p")
    assert type(err) is cls
    assert str(err).startswith(f"Next Engine [{code}] on /p: m — ")
    assert err.hint() in str(err)


def test_maintenance_suggests_when_to_retry() -> None:
    err = error_from_response(
        {"result": "error", "code": "002007", "message": "m"}, retry_after=timedelta(minutes=45)
    )
    assert isinstance(err, NeMaintenance)
    assert err.retry_after == timedelta(minutes=45)
    assert "45 min" in str(err)


def test_result_objects() -> None:
    bulk = BulkResult(("1",), {"2": ("020006", "changed")})
    assert not bulk.ok and isinstance(bulk.error("2"), NeLockConflict)
    assert QueueResult.from_row({"que_id": "7", "que_status_id": "2", "que_message": None}).ok
    pending = QueueResult.from_row({"que_id": "7", "que_status_id": "1"})
    assert not pending.done and not pending.ok
