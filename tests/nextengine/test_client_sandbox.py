"""End-to-end tests of the NE client against the NE sandbox over real HTTP on loopback."""

from __future__ import annotations

import gzip
import json
import logging
import math
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from daemon.nextengine.client import (
    PATH_GOODS_UPLOAD,
    PATH_ORDER_BULKUPDATE,
    PATH_ORDER_UPDATE,
    NextEngineClient,
    QueueResult,
    RetryPolicy,
)
from daemon.nextengine.errors import (
    NeLockConflict,
    NeMaintenance,
    NeNotSent,
    NeOutcomeUnknown,
    NeOverloaded,
    NeQueueTimeout,
    NeReauthRequired,
    NeSystemError,
    NeTokenStale,
    NeValidationError,
)
from daemon.nextengine.search import Resource, Row, Where, desc
from daemon.nextengine.tokens import FileTokenStore, TokenSet
from daemon.nextengine.xmlbuild import OrderRef, OrderUpdate
from daemon.sandbox import SandboxConfig, SandboxServer
from daemon.sandbox.testing import SandboxCaller

CLIENT_ID = "nebridge-test-app"
CLIENT_SECRET = "client-secret-7f3a9c1e5b2d"
VERSION = "9.9.9-test"
ORDER_FIELDS = (
    "receive_order_id",
    "receive_order_order_status_id",
    "receive_order_last_modified_date",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


class RecordingStore(FileTokenStore):
    """A token file that remembers every pair saved to it (to look for leaks)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.saved: list[TokenSet] = []

    def save(self, tokens: TokenSet) -> None:
        self.saved.append(tokens)
        super().save(tokens)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        seed=1,
        clock_frozen=True,
        que_processing_delay_s=2.0,
    )
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


def new_client(
    sandbox: SandboxServer, store: FileTokenStore, sleeps: list[float], **kw: Any
) -> NextEngineClient:
    return NextEngineClient(
        sandbox.base_url,
        store,
        version=VERSION,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        sleep=sleeps.append,
        **kw,
    )


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path / "state" / "nextengine-tokens.json")


@pytest.fixture
def client(
    sandbox: SandboxServer, store: RecordingStore, sleeps: list[float]
) -> Iterator[NextEngineClient]:
    with new_client(sandbox, store, sleeps) as c:
        c.authorize(*sandbox.state.issue_login())
        yield c


@pytest.fixture
def timed_client(sandbox: SandboxServer, store: RecordingStore) -> Iterator[NextEngineClient]:
    """A client whose sleeps pass time on the (frozen) sandbox clock, not in the test."""

    def sleep(seconds: float) -> None:
        sandbox.clock.advance(seconds)

    with NextEngineClient(
        sandbox.base_url,
        store,
        version=VERSION,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        sleep=sleep,
    ) as c:
        c.authorize(*sandbox.state.issue_login())
        yield c


def calls(sandbox: SandboxServer, path: str | None = None) -> int:
    """API calls the sandbox received (to ``path``)."""
    if path is None:
        return sandbox.state.traffic.calls
    by_path: dict[str, int] = sandbox.state.traffic.snapshot()["calls_by_path"]
    return by_path.get(path, 0)


def ready_orders(client: NextEngineClient, n: int) -> list[Row]:
    where = Where().eq("receive_order_order_status_id", 20).eq("receive_order_cancel_type_id", 0)
    rows = list(client.search_orders(ORDER_FIELDS, where=where, sort="receive_order_id-asc"))
    assert len(rows) >= n
    return rows[:n]


def order(sandbox: SandboxServer, order_id: str | None) -> dict[str, Any]:
    return sandbox.state.order_snapshot(int(str(order_id)))


def assert_current_pair_stored(sandbox: SandboxServer, store: FileTokenStore) -> None:
    current = sandbox.state.current_tokens()
    stored = store.load()
    assert current is not None and stored is not None
    assert stored.access_token == current.access_token
    assert stored.refresh_token == current.refresh_token


# -- connecting --------------------------------------------------------------------------------


def test_authorize_stores_the_company_pair_in_a_private_file(
    client: NextEngineClient, sandbox: SandboxServer, store: RecordingStore
) -> None:
    stored = store.load()
    assert stored is not None
    assert stored.company_id == sandbox.state.company["company_ne_id"]
    assert stored.company_name == "サンドボックス商店"
    assert stored.access_token_end_date and stored.refresh_token_end_date
    assert stored.refresh_token_end_date - stored.access_token_end_date == timedelta(days=2)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert_current_pair_stored(sandbox, store)
    assert client.company_info()["company_ne_id"] == stored.company_id
    assert client.user_info()["pic_name"] == "山田 花子"
    assert stored.access_token not in repr(client) + repr(stored)


def test_authorize_failures_are_classified_and_redacted(
    sandbox: SandboxServer, tmp_path: Path, sleeps: list[float]
) -> None:
    uid, state = sandbox.state.issue_login()
    with new_client(sandbox, FileTokenStore(tmp_path / "a.json"), sleeps) as c:
        c.authorize(uid, state)
        with pytest.raises(NeReauthRequired) as reused:  # a state works once (redirect)
            c.authorize(uid, state)
    wrong = NextEngineClient(
        sandbox.base_url,
        FileTokenStore(tmp_path / "b.json"),
        version=VERSION,
        client_id=CLIENT_ID,
        client_secret="not-the-secret-1234",
    )
    uid2, state2 = sandbox.state.issue_login()
    with wrong, pytest.raises(NeValidationError) as bad_secret:
        wrong.authorize(uid2, state2)
    for err in (reused.value, bad_secret.value):
        for secret in (uid, state, state2, CLIENT_SECRET, "not-the-secret-1234"):
            assert secret not in str(err) and secret not in repr(err)
    assert FileTokenStore(tmp_path / "b.json").load() is None
    with pytest.raises(ValueError, match="client_secret"):
        NextEngineClient(
            sandbox.base_url, FileTokenStore(tmp_path / "c.json"), version="x"
        ).authorize(uid2, state2)


def test_without_stored_tokens_nothing_is_sent(sandbox: SandboxServer, tmp_path: Path) -> None:
    c = new_client(sandbox, FileTokenStore(tmp_path / "none.json"), [])
    with c, pytest.raises(NeReauthRequired, match="no Next Engine tokens"):
        c.company_info()
    assert calls(sandbox) == 0


# -- searching ---------------------------------------------------------------------------------


def test_search_pages_through_all_orders_and_agrees_with_count(
    client: NextEngineClient, sandbox: SandboxServer
) -> None:
    where = Where().eq("receive_order_order_status_id", 20)
    before = calls(sandbox, "/api_v1_receiveorder_base/search")
    paged = list(client.search("receiveorder_base", ORDER_FIELDS, where=where, page_size=3))
    pages = calls(sandbox, "/api_v1_receiveorder_base/search") - before
    whole = list(client.search_orders(ORDER_FIELDS, where=where))
    assert paged == whole and len(whole) > 6
    assert pages == math.ceil(len(whole) / 3) + (1 if len(whole) % 3 == 0 else 0)
    assert client.count(Resource.RECEIVEORDER_BASE, where) == len(whole)
    assert {r["receive_order_order_status_id"] for r in whole} == {"20"}


def test_every_operator_filters_like_the_sandbox(
    client: NextEngineClient, sandbox: SandboxServer
) -> None:
    sandbox.state.human_edit(1, {"receive_order_gruoping_tag": ""})  # empty, not null
    fields = [*ORDER_FIELDS, "receive_order_gruoping_tag", "receive_order_shop_cut_form_id"]
    everything = list(client.search_orders(fields))
    ids = [int(str(r["receive_order_id"])) for r in everything]
    mid = sorted(ids)[len(ids) // 2]

    def check(where: Where, predicate: Callable[[Row], bool]) -> None:
        got = list(client.search_orders(fields, where=where))
        assert got == [r for r in everything if predicate(r)], where
        assert 0 < len(got) < len(everything), where  # the condition really filtered

    def oid(r: Row) -> int:
        return int(str(r["receive_order_id"]))

    def tag(r: Row) -> str | None:
        return r["receive_order_gruoping_tag"]

    status = "receive_order_order_status_id"
    check(Where().eq(status, 40), lambda r: r[status] == "40")
    check(Where().neq(status, 40), lambda r: r[status] != "40")
    check(Where().gt("receive_order_id", mid), lambda r: oid(r) > mid)
    check(Where().gte("receive_order_id", mid), lambda r: oid(r) >= mid)
    check(Where().lt("receive_order_id", mid), lambda r: oid(r) < mid)
    check(Where().lte("receive_order_id", mid), lambda r: oid(r) <= mid)
    check(Where().in_("receive_order_id", [1, 3, mid]), lambda r: oid(r) in (1, 3, mid))
    check(Where().nin("receive_order_id", [1, 3, mid]), lambda r: oid(r) not in (1, 3, mid))
    check(
        Where().like("receive_order_gruoping_tag", "%ギフト%"), lambda r: "ギフト" in (tag(r) or "")
    )
    check(
        Where().nlike("receive_order_gruoping_tag", "%ギフト%"),
        lambda r: tag(r) is not None and "ギフト" not in (tag(r) or ""),
    )
    check(
        Where().nlikeornull("receive_order_gruoping_tag", "%ギフト%"),
        lambda r: "ギフト" not in (tag(r) or ""),
    )
    check(Where().null("receive_order_gruoping_tag"), lambda r: tag(r) is None)
    check(Where().nnull("receive_order_gruoping_tag"), lambda r: tag(r) is not None)
    check(Where().blank("receive_order_gruoping_tag"), lambda r: not tag(r))
    check(Where().nblank("receive_order_gruoping_tag"), lambda r: bool(tag(r)))


def test_long_in_lists_are_split_and_merged_in_order(
    sandbox: SandboxServer, store: RecordingStore, sleeps: list[float]
) -> None:
    with new_client(sandbox, store, sleeps, in_max=5) as c:
        c.authorize(*sandbox.state.issue_login())
        ids = [int(str(r["receive_order_id"])) for r in c.search_orders(["receive_order_id"])][:12]
        where = Where().in_("receive_order_id", ids)
        before = calls(sandbox)
        got = list(
            c.search_orders(
                ["receive_order_shop_cut_form_id"], where=where, sort=desc("receive_order_id")
            )
        )
        assert calls(sandbox) - before == 3
        expected = [
            {
                "receive_order_shop_cut_form_id": order(sandbox, str(i))[
                    "receive_order_shop_cut_form_id"
                ]
            }
            for i in sorted(ids, reverse=True)
        ]
        assert got == expected
        assert c.count(Resource.RECEIVEORDER_BASE, where) == 12
        excluded = list(
            c.search_orders(["receive_order_id"], where=Where().nin("receive_order_id", ids))
        )
        assert {int(str(r["receive_order_id"])) for r in excluded}.isdisjoint(ids)
        assert len(excluded) == len(sandbox.state.orders) - 12


def test_row_search_takes_base_conditions_and_goods_join_stock(
    client: NextEngineClient, sandbox: SandboxServer
) -> None:
    status_20 = Where().eq("receive_order_order_status_id", 20)
    ready = {
        str(r["receive_order_id"])
        for r in client.search_orders(["receive_order_id"], where=status_20)
    }
    rows = list(
        client.search_order_rows(
            [
                "receive_order_row_receive_order_id",
                "receive_order_row_goods_id",
                "receive_order_order_status_id",
            ],
            where=Where()
            .eq("receive_order_order_status_id", 20)
            .eq("receive_order_row_cancel_flag", 0),
        )
    )
    assert rows and {r["receive_order_row_receive_order_id"] for r in rows} <= ready
    goods = list(
        client.search_goods(
            ["goods_id", "stock_quantity"], where=Where().like("goods_id", "TSHIRT%")
        )
    )
    assert len(goods) == 6
    stock = list(
        client.search_stock(
            ["stock_goods_id", "stock_quantity"], where=Where().eq("stock_goods_id", "TSHIRT-Red-S")
        )
    )
    assert stock == [
        {"stock_goods_id": "TSHIRT-Red-S", "stock_quantity": goods[0]["stock_quantity"]}
    ]
    assert client.count(Resource.MASTER_GOODS) == len(sandbox.state.goods)


# -- order writes ------------------------------------------------------------------------------


def test_update_order_then_a_stale_write_is_a_lock_conflict(
    client: NextEngineClient, sandbox: SandboxServer
) -> None:
    target = ready_orders(client, 1)[0]
    oid, stamp = target["receive_order_id"], target["receive_order_last_modified_date"]
    client.update_order(
        str(oid), str(stamp), {"receive_order_delivery_cut_form_id": "TRK-1\x01<&>"}
    )
    assert order(sandbox, oid)["receive_order_delivery_cut_form_id"] == "TRK-1<&>"
    before = calls(sandbox)
    with pytest.raises(NeLockConflict, match="Re-read the order"):
        client.update_order(str(oid), str(stamp), {"receive_order_delivery_cut_form_id": "TRK-2"})
    assert calls(sandbox) - before == 1
    assert order(sandbox, oid)["receive_order_delivery_cut_form_id"] == "TRK-1<&>"


def test_a_human_edit_racing_the_write_is_a_lock_conflict(
    client: NextEngineClient, sandbox: SandboxServer
) -> None:
    target = ready_orders(client, 1)[0]
    sandbox.faults.human_edit_next(path=PATH_ORDER_UPDATE)
    with pytest.raises(NeLockConflict):
        client.update_order(
            str(target["receive_order_id"]),
            str(target["receive_order_last_modified_date"]),
            {"receive_order_worker_text": "x"},
        )


def test_validation_errors_are_never_retried(
    client: NextEngineClient, sandbox: SandboxServer, sleeps: list[float]
) -> None:
    target = ready_orders(client, 1)[0]
    before = calls(sandbox)
    with pytest.raises(NeValidationError) as info:
        client.update_order(
            str(target["receive_order_id"]),
            str(target["receive_order_last_modified_date"]),
            {"receive_order_cancel_type_id": 999},
        )
    assert info.value.code == "020015"
    assert calls(sandbox) - before == 1 and sleeps == []


def test_receipted_then_shipped_moves_an_order_from_20_to_40_to_50(
    client: NextEngineClient, sandbox: SandboxServer
) -> None:
    target = ready_orders(client, 1)[0]
    oid = str(target["receive_order_id"])
    client.receipted(oid, str(target["receive_order_last_modified_date"]), label_print_flag=0)
    snapshot = order(sandbox, oid)
    assert snapshot["receive_order_order_status_id"] == "40"
    client.shipped(oid, snapshot["receive_order_last_modified_date"])
    assert order(sandbox, oid)["receive_order_order_status_id"] == "50"


@pytest.mark.parametrize("data_type", ["gz", "xml"])
def test_bulk_update_returns_per_order_results(
    client: NextEngineClient, sandbox: SandboxServer, data_type: Any
) -> None:
    a, b, c = ready_orders(client, 3)
    items = [
        OrderUpdate(
            str(a["receive_order_id"]),
            str(a["receive_order_last_modified_date"]),
            {"receive_order_worker_text": "A"},
        ),
        OrderUpdate(
            str(b["receive_order_id"]), "2000-01-01 00:00:00", {"receive_order_worker_text": "B"}
        ),
        OrderUpdate(
            str(c["receive_order_id"]),
            str(c["receive_order_last_modified_date"]),
            {"receive_order_worker_text": "C&D"},
        ),
    ]
    result = client.bulk_update(items, data_type=data_type)
    assert result.succeeded == (str(a["receive_order_id"]), str(c["receive_order_id"]))
    assert set(result.failed) == {str(b["receive_order_id"])}
    assert result.failed[str(b["receive_order_id"])][0] == "020006"
    assert isinstance(result.error(str(b["receive_order_id"])), NeLockConflict)
    assert order(sandbox, a["receive_order_id"])["receive_order_worker_text"] == "A"
    assert order(sandbox, c["receive_order_id"])["receive_order_worker_text"] == "C&D"
    assert order(sandbox, b["receive_order_id"])["receive_order_worker_text"] != "B"
    everything_ok = client.bulk_update(
        [
            OrderUpdate(
                str(a["receive_order_id"]),
                order(sandbox, a["receive_order_id"])["receive_order_last_modified_date"],
                {"receive_order_worker_text": "A2"},
            )
        ]
    )
    assert everything_ok.ok and everything_ok.succeeded == (str(a["receive_order_id"]),)


def test_bulk_receipted_partial_failure_and_whole_request_failure(
    client: NextEngineClient, sandbox: SandboxServer
) -> None:
    a, b = ready_orders(client, 2)
    client.receipted(str(b["receive_order_id"]), str(b["receive_order_last_modified_date"]))
    b_now = order(sandbox, b["receive_order_id"])["receive_order_last_modified_date"]
    refs = [
        OrderRef(str(a["receive_order_id"]), str(a["receive_order_last_modified_date"])),
        OrderRef(str(b["receive_order_id"]), b_now),
    ]
    result = client.bulk_receipted(refs)
    assert result.succeeded == (str(a["receive_order_id"]),)
    assert list(result.failed) == [str(b["receive_order_id"])]
    assert order(sandbox, a["receive_order_id"])["receive_order_order_status_id"] == "40"
    sandbox.faults.fail_next("002007", path=PATH_ORDER_BULKUPDATE)
    with pytest.raises(NeMaintenance):
        client.bulk_update(
            [
                OrderUpdate(
                    str(a["receive_order_id"]),
                    "2000-01-01 00:00:00",
                    {"receive_order_worker_text": "x"},
                )
            ]
        )


# -- stock upload and the queue ----------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_stock_upload_is_applied_once_the_queue_finishes(
    timed_client: NextEngineClient, sandbox: SandboxServer, gz: bool
) -> None:
    client = timed_client
    before = {
        c: sandbox.state.goods_snapshot(c)["stock_quantity"]
        for c in ("TSHIRT-Red-S", "mug-white-01")
    }
    que_id = client.upload_stock_deltas(
        {"TSHIRT-Red-S": 5, "mug-white-01": -1, "CAP-blk": 0}, gz=gz
    )
    seen: list[QueueResult] = []
    result = client.wait_for_queue(que_id, poll_interval=0.6, timeout=30, on_progress=seen.append)
    assert result.ok and result.que_id == que_id
    assert [r.status_id for r in seen][-1] == 2 and {r.status_id for r in seen} >= {0, 1, 2}
    assert (
        int(sandbox.state.goods_snapshot("TSHIRT-Red-S")["stock_quantity"])
        == int(before["TSHIRT-Red-S"]) + 5
    )
    assert (
        int(sandbox.state.goods_snapshot("mug-white-01")["stock_quantity"])
        == int(before["mug-white-01"]) - 1
    )


def test_a_failed_upload_queue_is_reported_not_raised(
    timed_client: NextEngineClient, sandbox: SandboxServer
) -> None:
    client = timed_client
    sandbox.faults.fail_next_ques()
    quantity = sandbox.state.goods_snapshot("sock-23")["stock_quantity"]
    que_id = client.upload_stock_deltas({"sock-23": 4})
    result = client.wait_for_queue(que_id, poll_interval=1, timeout=10)
    assert result.status_id == -1 and not result.ok and result.message
    assert sandbox.state.goods_snapshot("sock-23")["stock_quantity"] == quantity


def test_waiting_for_a_queue_gives_up_after_the_timeout(
    sandbox: SandboxServer, store: RecordingStore
) -> None:
    now = [0.0]

    def tick(seconds: float) -> None:
        now[0] += seconds  # the sandbox clock stands still: the queue never finishes

    client = NextEngineClient(
        sandbox.base_url,
        store,
        version=VERSION,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        sleep=tick,
        monotonic=lambda: now[0],
    )
    with client:
        client.authorize(*sandbox.state.issue_login())
        que_id = client.upload_stock_deltas({"sock-25": 1})
        with pytest.raises(NeQueueTimeout, match="do not re-upload") as info:
            client.wait_for_queue(que_id, poll_interval=4, timeout=10)
    assert info.value.que_id == que_id and info.value.status_id == 0 and now[0] == 10


def test_an_upload_whose_answer_was_lost_is_found_in_the_queue(
    timed_client: NextEngineClient, sandbox: SandboxServer
) -> None:
    client = timed_client
    quantity = int(sandbox.state.goods_snapshot("sock-27")["stock_quantity"])
    start = sandbox.clock.now()
    sandbox.faults.drop_next(when="after", path=PATH_GOODS_UPLOAD)
    with pytest.raises(NeOutcomeUnknown, match="may have been applied"):
        client.upload_stock_deltas({"SOCK-27": 3})
    assert calls(sandbox, PATH_GOODS_UPLOAD) == 1  # never resent
    found = client.find_queue_rows(
        start - timedelta(seconds=5), sandbox.clock.now() + timedelta(seconds=5)
    )
    assert len(found) == 1
    assert client.wait_for_queue(found[0].que_id, poll_interval=1).ok
    assert int(sandbox.state.goods_snapshot("sock-27")["stock_quantity"]) == quantity + 3
    assert client.find_queue_rows(start - timedelta(days=2), start - timedelta(days=1)) == []


# -- error policies ----------------------------------------------------------------------------


def test_overload_is_retried_with_backoff_then_raised(
    client: NextEngineClient, sandbox: SandboxServer, sleeps: list[float]
) -> None:
    sandbox.faults.fail_next("003001", count=2)
    before = calls(sandbox)
    assert client.company_info()
    assert calls(sandbox) - before == 3 and sleeps == [10.0, 30.0]
    sleeps.clear()
    sandbox.faults.fail_next("003001", count=4)
    with pytest.raises(NeOverloaded, match="try again in a few minutes"):
        client.company_info()
    assert sleeps == [10.0, 30.0, 60.0]


def test_wait_flag_lets_ne_wait_out_overload(
    client: NextEngineClient, sandbox: SandboxServer, sleeps: list[float]
) -> None:
    sandbox.faults.fail_next("003002")
    client.company_info()  # wait_flag=1: the sandbox waits instead of failing
    assert sleeps == []
    sandbox.faults.fail_next("003002")
    client.call("/api_v1_login_company/info", wait_flag=False)
    assert sleeps == [10.0]


@pytest.mark.parametrize("code", ["002007", "003004", "003005"])
def test_maintenance_is_raised_at_once_with_a_retry_suggestion(
    sandbox: SandboxServer, store: RecordingStore, sleeps: list[float], code: str
) -> None:
    policy = RetryPolicy(maintenance_retry_after=timedelta(minutes=20))
    with new_client(sandbox, store, sleeps, retry=policy) as c:
        c.authorize(*sandbox.state.issue_login())
        sandbox.faults.fail_next(code)
        before = calls(sandbox)
        with pytest.raises(NeMaintenance) as info:
            c.company_info()
    assert calls(sandbox) - before == 1 and sleeps == []
    assert info.value.retry_after == timedelta(minutes=20) and "20 min" in str(info.value)


@pytest.mark.parametrize("code", ["000001", "009005", "011007"])
def test_transient_codes_are_retried(
    client: NextEngineClient, sandbox: SandboxServer, sleeps: list[float], code: str
) -> None:
    sandbox.faults.fail_next(code)
    assert client.user_info()["pic_name"]
    assert sleeps == [10.0]


def test_system_error_is_not_retried(
    client: NextEngineClient, sandbox: SandboxServer, sleeps: list[float]
) -> None:
    sandbox.faults.fail_next("999999")
    before = calls(sandbox)
    with pytest.raises(NeSystemError, match="re-read"):
        client.company_info()
    assert calls(sandbox) - before == 1 and sleeps == []


def test_a_pair_rotated_by_an_uncoordinated_client_is_reloaded_once(
    sandbox: SandboxServer, tmp_path: Path, sleeps: list[float]
) -> None:
    path = tmp_path / "tokens.json"

    class RacingStore(FileTokenStore):
        """Another NE client (not using our lock) rotates the pair right after we read it."""

        race = True

        def load(self) -> TokenSet | None:
            tokens = super().load()
            if self.race and tokens is not None:
                self.race = False
                sandbox.state.expire_access_token()
                outsider = SandboxCaller(sandbox.base_url)
                outsider.access_token, outsider.refresh_token = tokens.secrets()
                outsider.call("/api_v1_login_company/info")
                FileTokenStore(path).save(
                    TokenSet(str(outsider.access_token), str(outsider.refresh_token))
                )
                outsider.close()
            return tokens

    FileTokenStore(path).save(TokenSet(*_pair(sandbox)))
    with new_client(sandbox, RacingStore(path), sleeps) as c:
        assert c.company_info()
    verdicts = [u.verdict for u in sandbox.state.traffic.token_uses()]
    assert verdicts == ["rotated", "dead", "current"]  # outsider, our stale try, our retry
    assert sleeps == []


def test_a_pair_that_stays_stale_needs_reauthorisation(
    client: NextEngineClient, sandbox: SandboxServer
) -> None:
    sandbox.state.issue_tokens()  # e.g. someone connected the company elsewhere: our pair dies
    before = calls(sandbox)
    with pytest.raises(NeReauthRequired) as info:
        client.company_info()
    assert isinstance(info.value, NeTokenStale) and info.value.code == "002002"
    # the store still holds the refused pair: it is not sent a second time (NE §1.3)
    assert calls(sandbox) - before == 1
    assert len(sandbox.state.traffic.dead_pair_uses()) == 1
    with pytest.raises(NeTokenStale):  # nor on later calls, until the pair changes
        client.company_info()
    assert calls(sandbox) - before == 1


def test_expired_refresh_token_needs_reauthorisation(
    client: NextEngineClient, sandbox: SandboxServer
) -> None:
    sandbox.clock.advance(4 * 86_400)
    before = calls(sandbox)
    with pytest.raises(NeReauthRequired, match="run `nebridge connect`"):
        client.company_info()
    assert calls(sandbox) - before == 1


def test_rotated_pair_in_an_error_answer_is_saved_before_raising(
    client: NextEngineClient, sandbox: SandboxServer, store: RecordingStore
) -> None:
    sandbox.state.expire_access_token()
    sandbox.faults.fail_next("003005")
    with pytest.raises(NeMaintenance):
        client.company_info()
    assert_current_pair_stored(sandbox, store)
    assert client.company_info()
    assert sandbox.state.traffic.dead_pair_uses() == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_dropped_connection_is_outcome_unknown_and_never_resent(
    client: NextEngineClient, sandbox: SandboxServer, sleeps: list[float], when: Any
) -> None:
    target = ready_orders(client, 1)[0]
    oid = str(target["receive_order_id"])
    sandbox.faults.drop_next(when=when, path=PATH_ORDER_UPDATE)
    with pytest.raises(NeOutcomeUnknown):
        client.update_order(
            oid,
            str(target["receive_order_last_modified_date"]),
            {"receive_order_worker_text": "dropped"},
        )
    assert calls(sandbox, PATH_ORDER_UPDATE) == 1 and sleeps == []
    applied = order(sandbox, oid)["receive_order_worker_text"] == "dropped"
    assert applied is (when == "after")  # the client cannot know which: the caller re-reads


def test_a_slow_answer_beyond_the_read_timeout_is_outcome_unknown(
    sandbox: SandboxServer, store: RecordingStore, sleeps: list[float]
) -> None:
    with new_client(sandbox, store, sleeps, read_timeout=0.2) as c:
        c.authorize(*sandbox.state.issue_login())
        sandbox.faults.update(latency_ms=1000)
        with pytest.raises(NeOutcomeUnknown, match="read timeout"):
            c.company_info()
        sandbox.faults.reset()
    assert sleeps == []


def test_an_unreachable_host_is_not_sent_and_retried(tmp_path: Path, sleeps: list[float]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    store = FileTokenStore(tmp_path / "t.json")
    store.save(TokenSet("access-x", "refresh-x"))
    c = NextEngineClient(f"http://127.0.0.1:{port}", store, version=VERSION, sleep=sleeps.append)
    with c, pytest.raises(NeNotSent, match="retrying is safe"):
        c.company_info()
    assert sleeps == [5.0, 15.0, 30.0]


# -- what goes over the wire -------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    server: _RecordingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.path, dict(self.headers), body))
        status, payload = self.server.reply
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _RecordingServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.reply: tuple[int, bytes] = (200, b"{}")


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[tuple[_RecordingServer, NextEngineClient, FileTokenStore]]:
    server = _RecordingServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    store = FileTokenStore(tmp_path / "t.json")
    store.save(TokenSet("access-wire", "refresh-wire"))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with NextEngineClient(base, store, version=VERSION, sleep=lambda s: None) as c:
        yield server, c, store
    server.shutdown()
    server.server_close()


def test_requests_are_form_posts_with_tokens_wait_flag_and_user_agent(
    wire: tuple[_RecordingServer, NextEngineClient, FileTokenStore],
) -> None:
    server, c, _ = wire
    server.reply = (200, json.dumps({"result": "success", "que_id": "12"}).encode())
    assert c.upload_stock_deltas({"A-1": 2}) == "12"
    path, headers, body = server.seen[-1]
    assert path == "/api_v1_master_goods/upload"
    assert headers["User-Agent"] == f"nebridge/{VERSION} (+python-requests)"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(body.decode("latin-1"), encoding="latin-1")
    assert form["access_token"] == ["access-wire"] and form["refresh_token"] == ["refresh-wire"]
    assert form["wait_flag"] == ["1"] and form["data_type"] == ["gz"]
    raw = form["data"][0].encode("latin-1")
    assert raw[:2] == b"\x1f\x8b"  # raw gzip bytes, not base64
    assert gzip.decompress(raw) == b"syohin_code,zaiko_su\r\nA-1,2\r\n"
    c.call("/api_v1_login_company/info", wait_flag=False)
    assert "wait_flag" not in parse_qs(server.seen[-1][2].decode())


@pytest.mark.parametrize(
    ("status", "payload"),
    [(200, b"<html>busy</html>"), (502, b'{"result":"success"}'), (200, b'["x"]')],
)
def test_unusable_answers_are_outcome_unknown(
    wire: tuple[_RecordingServer, NextEngineClient, FileTokenStore], status: int, payload: bytes
) -> None:
    server, c, _ = wire
    server.reply = (status, payload)
    with pytest.raises(NeOutcomeUnknown):
        c.company_info()
    assert len(server.seen) == 1


def test_secrets_never_reach_logs_or_errors(
    client: NextEngineClient,
    sandbox: SandboxServer,
    store: RecordingStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[Exception] = []
    sandbox.state.expire_access_token()
    client.company_info()  # rotates
    for code in ("003001", "002007", "999999"):
        sandbox.faults.fail_next(code, count=5)
        try:
            client.company_info()
        except Exception as exc:
            errors.append(exc)
        sandbox.faults.reset()
    sandbox.state.issue_tokens()
    with pytest.raises(NeReauthRequired) as stale:
        client.company_info()
    errors.append(stale.value)
    secrets = [s for t in store.saved for s in t.secrets()] + [CLIENT_SECRET]
    assert len(store.saved) == 2
    text = caplog.text + "".join(str(e) + repr(e) for e in errors)
    assert "rotated the token pair" in caplog.text
    for secret in secrets:
        assert secret not in text


# -- concurrency -------------------------------------------------------------------------------


def _pair(sandbox: SandboxServer) -> tuple[str, str]:
    """A fresh pair, as if the company had just been connected."""
    pair = sandbox.state.issue_tokens()
    return pair.access_token, pair.refresh_token


def test_pipelines_and_a_cli_hammering_one_company_never_overlap(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """4 warehouse pipelines share the engine's client; a CLI process and a second client
    object use the same token file. NE rotates the pair every 4th call."""
    path = tmp_path / "tokens.json"
    FileTokenStore(path).save(TokenSet(*_pair(sandbox)))
    sandbox.faults.update(expire_access_token_every_n_calls=4, latency_ms=2)
    engine = new_client(sandbox, FileTokenStore(path), [])
    other = new_client(sandbox, FileTokenStore(path), [])
    failures: list[BaseException] = []
    where = Where().eq("receive_order_order_status_id", 20)

    def pipeline(i: int) -> None:
        try:
            for _ in range(8):
                if i % 2:
                    list(engine.search_orders(ORDER_FIELDS, where=where))
                else:
                    engine.count(Resource.RECEIVEORDER_BASE, where)
                (other if i == 3 else engine).company_info()
        except BaseException as exc:
            failures.append(exc)

    cli = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys
            from daemon.nextengine.client import NextEngineClient
            from daemon.nextengine.tokens import FileTokenStore
            with NextEngineClient({sandbox.base_url!r}, FileTokenStore({str(path)!r}),
                                  version="cli") as c:
                print("ready", flush=True)
                sys.stdin.readline()
                for _ in range(12):
                    c.company_info()
            print("ok")
            """),
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert cli.stdout is not None and cli.stdout.readline().strip() == "ready"
    threads = [threading.Thread(target=pipeline, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    out, _ = cli.communicate("go\n", timeout=60)  # the CLI runs while the pipelines do
    for t in threads:
        t.join()
    engine.close()
    other.close()
    assert failures == [] and out.strip() == "ok"
    traffic = sandbox.state.traffic
    assert traffic.calls >= 4 * 16 + 12
    assert traffic.max_in_flight(sandbox.state.company_id) == 1
    assert traffic.dead_pair_uses() == []
    verdicts = [u.verdict for u in traffic.token_uses()]
    assert verdicts.count("rotated") >= 15 and set(verdicts) == {"current", "rotated"}
    assert_current_pair_stored(sandbox, FileTokenStore(path))
