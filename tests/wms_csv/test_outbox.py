"""Order files in the outbox: content, naming, idempotence and atomic appearance."""

from __future__ import annotations

import csv
import fnmatch
import io
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hooks.connectors import InstructionBatch
from hooks.errors import OrdersRefused
from hooks.records import OrderInstruction, OrderInstructionLine
from plugins.wms_csv import CsvConnector, CsvConnectorConfig
from plugins.wms_csv.outbox import ORDER_COLUMNS, order_file_name

from .test_parsing import make_ctx

CREATED = datetime(2026, 11, 28, 4, 5, 12, tzinfo=timezone(timedelta(hours=9)))


def order(ne_order_id: str, lines: int = 2, name: str = "山田 太郎") -> OrderInstruction:
    """An order with ``lines`` lines."""
    return OrderInstruction(
        ne_order_id=ne_order_id,
        shop_order_id=f"shop-{ne_order_id}",
        warehouse="W1",
        order_date="2026-11-27 18:00:00",
        delivery_method="宅急便",
        consignee_name=name,
        consignee_zip="150-0001",
        consignee_address='東京都渋谷区神宮前1-2-3, "ビル" 4F',
        consignee_tel="03-1234-5678",
        lines=tuple(
            OrderInstructionLine(n, f"P{n}", f"NE-{n}", n * 2) for n in range(1, lines + 1)
        ),
    )


def make_connector(tmp_path: Path, encoding_out: str = "utf-8") -> CsvConnector:
    """A connector whose outbox is ``tmp_path/outbox``, started as the engine starts it
    (``recover`` creates the folders)."""
    connector = CsvConnector(
        CsvConnectorConfig.model_validate(
            {
                "inbox": tmp_path / "inbox",
                "outbox": tmp_path / "outbox",
                "encoding_out": encoding_out,
            }
        )
    )
    connector.recover(make_ctx())
    return connector


def outbox_files(tmp_path: Path) -> list[str]:
    """Every file name in the outbox, hidden ones included."""
    return sorted(path.name for path in (tmp_path / "outbox").iterdir())


def test_orders_file_has_one_row_per_order_line(tmp_path: Path) -> None:
    batch = InstructionBatch("batch-7", CREATED, [order("1001"), order("1002", lines=1)])
    make_connector(tmp_path).push_orders(batch, make_ctx())
    (name,) = outbox_files(tmp_path)
    assert name == order_file_name(batch)
    assert name.startswith("orders-20261127T190512Z-batch-7-")  # created_at in UTC
    assert name.endswith(".csv")
    raw = (tmp_path / "outbox" / name).read_bytes()
    assert raw.startswith(b"ne_order_id,shop_order_id,")  # UTF-8 without BOM
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert rows[0] == list(ORDER_COLUMNS)
    assert [row[0] for row in rows[1:]] == ["1001", "1001", "1002"]
    assert rows[2] == [
        "1001",
        "shop-1001",
        "W1",
        "2026-11-27 18:00:00",
        "宅急便",
        "山田 太郎",
        "150-0001",
        '東京都渋谷区神宮前1-2-3, "ビル" 4F',
        "03-1234-5678",
        "2",
        "P2",
        "NE-2",
        "4",
    ]
    assert raw.count(b"\r\n") == 4


def test_cp932_output(tmp_path: Path) -> None:
    batch = InstructionBatch("k", CREATED, [order("1001")])
    make_connector(tmp_path, "cp932").push_orders(batch, make_ctx())
    (name,) = outbox_files(tmp_path)
    assert "山田 太郎" in (tmp_path / "outbox" / name).read_bytes().decode("cp932")


def test_unencodable_order_is_refused_alone_and_the_others_are_written(tmp_path: Path) -> None:
    batch = InstructionBatch(
        "k", CREATED, [order("1001"), order("1002", name="🍣 さん"), order("1003", lines=1)]
    )
    for _ in range(2):  # a re-push after a crash refuses and writes exactly the same
        with pytest.raises(OrdersRefused) as refused:
            make_connector(tmp_path, "cp932").push_orders(batch, make_ctx())
        assert list(refused.value.refused) == ["1002"]
        assert "'🍣' cannot be written in cp932" in refused.value.refused["1002"]
        assert "nebridge orders retry 1002" in refused.value.refused["1002"]
        (name,) = outbox_files(tmp_path)
        text = (tmp_path / "outbox" / name).read_bytes().decode("cp932")
        ids = [row[0] for row in csv.reader(io.StringIO(text))][1:]
        assert ids == ["1001", "1001", "1003"]


def test_a_batch_whose_every_order_is_refused_writes_no_file(tmp_path: Path) -> None:
    batch = InstructionBatch("k", CREATED, [order("1002", name="🍣 さん")])
    with pytest.raises(OrdersRefused, match="order 1002"):
        make_connector(tmp_path, "cp932").push_orders(batch, make_ctx())
    assert outbox_files(tmp_path) == []


def test_same_batch_key_rewrites_the_same_file(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    batch = InstructionBatch("batch/8 ü", CREATED, [order("1001")])
    connector.push_orders(batch, make_ctx())
    (first,) = outbox_files(tmp_path)
    content = (tmp_path / "outbox" / first).read_bytes()
    connector.push_orders(batch, make_ctx())
    make_connector(tmp_path).push_orders(batch, make_ctx())  # after a restart, too
    assert outbox_files(tmp_path) == [first]
    assert (tmp_path / "outbox" / first).read_bytes() == content


def test_other_batch_in_the_same_second_gets_its_own_file(tmp_path: Path) -> None:
    connector = make_connector(tmp_path)
    connector.push_orders(InstructionBatch("a", CREATED, [order("1")]), make_ctx())
    connector.push_orders(InstructionBatch("b", CREATED, [order("2")]), make_ctx())
    assert len(outbox_files(tmp_path)) == 2


def test_file_names_are_safe_and_distinct() -> None:
    slashed = order_file_name(InstructionBatch("a/b", CREATED, []))
    underscored = order_file_name(InstructionBatch("a_b", CREATED, []))
    assert slashed.startswith("orders-20261127T190512Z-a_b-")
    assert slashed != underscored
    assert order_file_name(InstructionBatch("日本", CREATED, [])).startswith(
        "orders-20261127T190512Z-"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        order_file_name(InstructionBatch("k", datetime(2026, 11, 27), []))


def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    make_connector(tmp_path).push_orders(InstructionBatch("k", CREATED, []), make_ctx())
    assert outbox_files(tmp_path) == []


def test_an_outbox_gone_is_an_error_and_not_made_again(tmp_path: Path) -> None:
    """Only the engine's start creates the outbox: one removed later (a WMS share unmounted)
    fails the push, so the batch waits as held_instruction instead of writing elsewhere."""
    connector = make_connector(tmp_path)
    (tmp_path / "outbox").rmdir()
    with pytest.raises(FileNotFoundError):
        connector.push_orders(InstructionBatch("k", CREATED, [order("1001")]), make_ctx())
    assert not (tmp_path / "outbox").exists()


def test_a_stale_temporary_file_is_replaced_and_never_looks_like_an_order_file(
    tmp_path: Path,
) -> None:
    connector = make_connector(tmp_path)
    batch = InstructionBatch("k", CREATED, [order("1001")])
    final = order_file_name(batch)
    stale = tmp_path / "outbox" / f".{final}.0123456789abcdef.tmp"
    stale.write_text("ne_order_id,shop_ord")  # left by a crash in the middle of a write
    assert not fnmatch.fnmatch(stale.name, "orders-*.csv")
    connector.push_orders(batch, make_ctx())
    assert outbox_files(tmp_path) == [final]


def test_order_files_are_never_visible_partially(tmp_path: Path) -> None:
    """A reader polling the outbox while big batches are written sees only whole files."""
    connector = make_connector(tmp_path)
    outbox = tmp_path / "outbox"
    batches = [
        InstructionBatch(
            f"b{n}", CREATED + timedelta(seconds=n), [order(str(i), lines=3) for i in range(3_000)]
        )
        for n in range(4)
    ]
    finals = {order_file_name(batch) for batch in batches}
    expected_rows = 1 + 3_000 * 3
    rows_seen: dict[str, set[int]] = {}
    names_seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not (done.is_set() and rows_seen.keys() == finals):
            for entry in outbox.iterdir():
                names_seen.add(entry.name)
                if fnmatch.fnmatch(entry.name, "orders-*.csv"):
                    text = entry.read_text(encoding="utf-8")
                    rows = len(list(csv.reader(io.StringIO(text, newline=""))))
                    rows_seen.setdefault(entry.name, set()).add(rows)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for batch in batches:
            connector.push_orders(batch, make_ctx())
    finally:
        done.set()
        watcher.join(timeout=30)
    assert rows_seen == {name: {expected_rows} for name in finals}
    for name in names_seen - finals:
        assert name.startswith(".") and name.endswith(".tmp")
        assert not fnmatch.fnmatch(name, "orders-*.csv")
    assert {p.name for p in outbox.iterdir()} == finals
