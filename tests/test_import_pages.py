"""The order import works page by page (issue #18): memory bounded, nothing lost or doubled.

Real sandbox over HTTP (its unsorted searches shuffled, so only the import's sort by order
keeps an order's rows together), real order files, real databases. ``PAGE_ORDERS`` is made
small so that a handful of orders spans several pages.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import importer
from daemon.admin import run_once
from tests.conftest import ConfigFactory
from tests.ne_world import World, make_world

PAST = "2026-01-05 09:00:00"  # print-instruct date long reached
ROW_SEARCH = "/api_v1_receiveorder_row/search"


@pytest.fixture
def world(
    make_config: ConfigFactory, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.setattr(importer, "PAGE_ORDERS", 2)
    yield from make_world(
        make_config,
        tmp_path,
        database_url=database_url,
        sandbox_options={"shuffle_unsorted_results": True, "seed": 7},
        order_import={"claim": "tag"},
    )


def order_files(world: World) -> list[list[dict[str, str]]]:
    return [
        list(csv.DictReader(io.StringIO(p.read_text(encoding="utf-8"), newline="")))
        for p in sorted(world.outbox.glob("orders-*.csv"))
    ]


def stage_of(report: object) -> object:
    return next(
        r
        for r in report.stages  # type: ignore[attr-defined]
        if r.stage.value == "import_orders"
    )


def test_orders_over_several_pages_are_each_instructed_once_with_all_their_rows(
    world: World,
) -> None:
    st = world.sandbox.state
    for code in ("A-1", "B-2", "C-3"):
        st.create_goods(code, quantity=50)
    made = {
        st.create_order([("A-1", 1), ("B-2", 2), ("C-3", 3)][: 1 + n % 3], instruct_date=PAST): 1
        + n % 3
        for n in range(7)
    }
    unmatched = st.create_order([("A-1", 1), ("Z-9", 1)], instruct_date=PAST)
    world.products([("P-A", "A-1"), ("P-B", "B-2"), ("P-C", "C-3")])
    traffic = world.sandbox.state.traffic
    searches = traffic.snapshot()["calls_by_path"].get(ROW_SEARCH, 0)

    stage = stage_of(run_with(world))
    files = order_files(world)
    lines = Counter(r["ne_order_id"] for rows in files for r in rows)
    assert lines == Counter({str(oid): rows for oid, rows in made.items()})
    assert len(files) >= 3  # one instruction batch per page: the pages were really cut
    assert all(len({r["ne_order_id"] for r in rows}) <= 2 for rows in files)
    assert stage.counts["imported"] == 7 and stage.counts["held"] == 1  # type: ignore[attr-defined]
    assert stage.subjects["held"] == [str(unmatched)]  # type: ignore[attr-defined]
    # the pages are nebridge's: still one search call (one Next Engine page of rows)
    assert traffic.snapshot()["calls_by_path"][ROW_SEARCH] == searches + 1

    stage = stage_of(run_with(world))  # nothing new: nothing instructed again
    assert stage.counts["imported"] == 0  # type: ignore[attr-defined]
    assert len(order_files(world)) == len(files)
    for oid in made:  # every order claimed once (its tag written by one page's claim)
        assert world.order(oid)["receive_order_gruoping_tag"].count("[nebridge取込済]") == 1


def run_with(world: World) -> object:
    rt = world.runtime()
    try:
        return run_once(rt)
    finally:
        rt.close()


@pytest.fixture
def receipted_world(
    make_config: ConfigFactory, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.setattr(importer, "PAGE_ORDERS", 2)
    for world in make_world(
        make_config, tmp_path, database_url=database_url, order_import={"claim": "receipted"}
    ):
        text = world.config.read_text(encoding="utf-8")
        assert text.count("nextengine:\n") == 1
        world.config.write_text(
            text.replace("nextengine:\n", "nextengine:\n  page_size: 3\n"), encoding="utf-8"
        )
        yield world


def test_a_claim_that_takes_orders_out_of_the_search_loses_none_across_pages(
    receipted_world: World,
) -> None:
    """``receipted`` moves orders 20 -> 40, out of the import's search: were they claimed page
    by page, the search's later pages (3 rows each here) would skip orders."""
    world = receipted_world
    st = world.sandbox.state
    st.create_goods("A-1", quantity=50)
    st.create_goods("B-2", quantity=50)
    made = [
        st.create_order([("A-1", 1), ("B-2", 1)][: 1 + n % 2], instruct_date=PAST) for n in range(9)
    ]
    world.products([("P-A", "A-1"), ("P-B", "B-2")])

    stage = stage_of(run_with(world))
    assert stage.counts["imported"] == 9  # type: ignore[attr-defined]
    lines = Counter(r["ne_order_id"] for rows in order_files(world) for r in rows)
    assert lines == Counter({str(oid): 1 + n % 2 for n, oid in enumerate(made)})
    assert {str(world.order(oid)["receive_order_order_status_id"]) for oid in made} == {"40"}
