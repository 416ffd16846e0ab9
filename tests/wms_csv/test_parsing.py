"""Reading and validating inbound files: encodings, headers, every validation rule."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from hooks.connectors import ConnectorContext
from hooks.errors import BatchRejected
from hooks.records import (
    ProductLink,
    ReceiptLine,
    ShipmentLine,
    WarehouseInfo,
    WmsEvent,
    WmsReceipt,
    WmsShipment,
)
from plugins.wms_csv.formats import RECEIPTS, SHIPMENTS, FileFormat
from plugins.wms_csv.inbound import read_events, read_products
from plugins.wms_csv.reader import MAX_ERRORS, MAX_LINE_BYTES

TOKYO = ZoneInfo("Asia/Tokyo")
SHIP_HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"
RECEIPT_HEADER = "receipt_id,warehouse,confirmed_at,product_code,quantity"
KNOWN_PRODUCTS = frozenset({"P1", "P2", "P3", "商品A"})


def make_ctx(warehouses: Iterable[str] = ("W1", "W2")) -> ConnectorContext:
    """A real connector context with the given warehouses and products P1-P3 and 商品A."""
    return ConnectorContext(
        warehouses={code: WarehouseInfo(code, f"倉庫 {code}", True, True) for code in warehouses},
        is_known_product=KNOWN_PRODUCTS.__contains__,
        http=requests.Session(),
        clock=lambda: datetime.now(UTC),
        log=logging.getLogger("tests.wms_csv"),
    )


def write_csv(
    path: Path, lines: Iterable[str], encoding: str = "utf-8", newline: str = "\n"
) -> Path:
    """Write lines (each ending with ``newline``) in ``encoding``; return the path."""
    path.write_bytes("".join(line + newline for line in lines).encode(encoding))
    return path


def events_of(path: Path, fmt: FileFormat = SHIPMENTS, zone: ZoneInfo = TOKYO) -> list[WmsEvent]:
    """All events of a valid file."""
    return list(read_events(path, path.name, fmt, make_ctx(), zone))


def shipments_of(path: Path) -> list[WmsShipment]:
    """All events of a valid shipments file, typed as shipments."""
    events = events_of(path)
    assert all(isinstance(event, WmsShipment) for event in events)
    return [event for event in events if isinstance(event, WmsShipment)]


Located = tuple[int | None, str | None, str]


def rejection_of(path: Path, fmt: FileFormat = SHIPMENTS) -> list[Located]:
    """The (line, column, reason) of every error of an invalid file; asserts nothing was yielded."""
    yielded: list[WmsEvent] = []
    with pytest.raises(BatchRejected) as info:
        yielded.extend(read_events(path, path.name, fmt, make_ctx(), TOKYO))
    assert yielded == []
    assert info.value.source == path.name
    assert all(error.source == path.name for error in info.value.errors)
    return [(error.line, error.column, error.reason) for error in info.value.errors]


def at_tokyo(hour: int, minute: int = 0, second: int = 0) -> datetime:
    """2026-11-27 at the given Tokyo wall-clock time."""
    return datetime(2026, 11, 27, hour, minute, second, tzinfo=TOKYO)


# --- valid files -----------------------------------------------------------------------------


def test_shipments_become_one_event_per_id_with_all_lines(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [
            SHIP_HEADER,
            "S1,W1,1001,TRK1,2026-11-27 10:00:00,P1,2",
            "S1,W1,1001,TRK1,2026-11-27 10:00:00,P2,1",
            "S2,W2,,,2026-11-27T02:00:00Z,P3,5",
        ],
    )
    assert events_of(path) == [
        WmsShipment(
            "S1", "W1", "1001", "TRK1", at_tokyo(10), (ShipmentLine("P1", 2), ShipmentLine("P2", 1))
        ),
        WmsShipment(
            "S2", "W2", None, None, datetime(2026, 11, 27, 2, tzinfo=UTC), (ShipmentLine("P3", 5),)
        ),
    ]
    assert [event.from_next_engine for event in shipments_of(path)] == [True, False]


def test_receipts_become_one_event_per_id(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "receipts.csv",
        [RECEIPT_HEADER, "R1,W1,2026/11/27 09:30,P1,10", "R1,W1,2026/11/27 09:30,P2,4"],
    )
    assert events_of(path, RECEIPTS) == [
        WmsReceipt("R1", "W1", at_tokyo(9, 30), (ReceiptLine("P1", 10), ReceiptLine("P2", 4)))
    ]


def test_rows_of_one_shipment_need_not_be_contiguous(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [
            SHIP_HEADER,
            "S1,W1,1,,2026-11-27 10:00:00,P1,1",
            "S2,W1,2,,2026-11-27 10:00:00,P1,1",
            "S3,W1,3,,2026-11-27 10:00:00,P1,1",
            "S1,W1,1,,2026-11-27 10:00:00,P2,2",
            "S2,W1,2,,2026-11-27 10:00:00,P2,2",
            "S1,W1,1,,2026-11-27 10:00:00,P3,3",
        ],
    )
    events = shipments_of(path)
    assert [(e.shipment_id, len(e.lines)) for e in events] == [("S3", 1), ("S2", 2), ("S1", 3)]
    s1 = events[2]
    assert s1.lines == (ShipmentLine("P1", 1), ShipmentLine("P2", 2), ShipmentLine("P3", 3))


JAPANESE_HEADER = "出荷番号,拠点コード,受注伝票番号,問い合わせ番号,出荷確定日時,商品コード,数量"


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp932"])
def test_encodings_and_line_endings(tmp_path: Path, encoding: str, newline: str) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [JAPANESE_HEADER, "出荷-1,W1,1001,追跡-１,2026/11/27 10:00:00,商品A,3"],
        encoding=encoding,
        newline=newline,
    )
    assert events_of(path) == [
        WmsShipment("出荷-1", "W1", "1001", "追跡-１", at_tokyo(10), (ShipmentLine("商品A", 3),))
    ]


def test_columns_in_any_order_with_extra_columns(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [
            "memo,quantity,product_code,confirmed_at,carrier,tracking_number,ne_order_id,"
            "warehouse,shipment_id",
            "hello,2,P1,2026-11-27 10:00:00,yamato,TRK,77,W1,S1",
        ],
    )
    assert events_of(path) == [
        WmsShipment("S1", "W1", "77", "TRK", at_tokyo(10), (ShipmentLine("P1", 2),))
    ]


def test_header_matching_ignores_case_spaces_and_width(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [
            " Shipment_ID ,WAREHOUSE, 伝票番号 ,送り状番号,出荷確定日時, 商品コード,数量 ",
            "S1,W1,1,T,2026-11-27 10:00:00,P1,1",
        ],
    )
    assert len(events_of(path)) == 1
    path = write_csv(
        tmp_path / "receipts.csv",
        ["入荷ＩＤ,倉庫コード,入荷確定日時,商品コード,数量", "R1,W1,2026-11-27 10:00:00,P1,1"],
    )
    assert len(events_of(path, RECEIPTS)) == 1


def test_values_are_stripped_and_blank_rows_skipped(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [SHIP_HEADER, "", " S1 , W1 , 5 ,  , 2026-11-27 10:00:00 , P1 , 2 ", ",,,,,,", ""],
    )
    assert events_of(path) == [
        WmsShipment("S1", "W1", "5", None, at_tokyo(10), (ShipmentLine("P1", 2),))
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27 10:05:00", at_tokyo(10, 5)),
        ("2026-11-27T10:05:00", at_tokyo(10, 5)),
        ("2026/11/27 10:05", at_tokyo(10, 5)),
        ("2026/11/27 10:05:09", at_tokyo(10, 5, 9)),
        ("2026/1/2 3:04", datetime(2026, 1, 2, 3, 4, tzinfo=TOKYO)),
        ("2026-11-27T10:05:00+09:00", at_tokyo(10, 5)),
        ("2026-11-27T01:05:00Z", at_tokyo(10, 5)),
        ("2026-11-27 10:05:00-05:00", datetime(2026, 11, 27, 15, 5, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(tmp_path: Path, text: str, expected: datetime) -> None:
    path = write_csv(tmp_path / "shipments.csv", [SHIP_HEADER, f"S1,W1,,,{text},P1,1"])
    (event,) = events_of(path)
    assert event.confirmed_at == expected
    assert event.confirmed_at.tzinfo is not None


def test_timestamps_without_offset_use_the_configured_zone(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "shipments.csv", [SHIP_HEADER, "S1,W1,,,2026-11-27 10:00,P1,1"])
    (event,) = events_of(path, zone=ZoneInfo("UTC"))
    assert event.confirmed_at == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert event.confirmed_at.utcoffset() == timedelta(0)


def test_same_instant_in_other_notation_is_not_a_conflict(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [SHIP_HEADER, "S1,W1,,,2026/11/27 10:00,P1,1", "S1,W1,,,2026-11-27T01:00:00Z,P2,1"],
    )
    (event,) = events_of(path)
    assert event.confirmed_at.astimezone(UTC) == datetime(2026, 11, 27, 1, tzinfo=UTC)


def test_header_only_file_has_no_events(tmp_path: Path) -> None:
    assert events_of(write_csv(tmp_path / "shipments.csv", [SHIP_HEADER])) == []


def test_quoted_newlines_keep_physical_line_numbers(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [
            SHIP_HEADER,
            'S1,W1,,"multi',
            'line",2026-11-27 10:00,P1,1',
            "S2,W1,,,2026-11-27 10:00,P1,0",
        ],
    )
    assert rejection_of(path) == [(4, "quantity", "not a positive integer: '0'")]


# --- validation: every rule, located, and nothing yielded -------------------------------------

GOOD = "S1,W1,1001,TRK,2026-11-27 10:00:00,P1,1"


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        ("S2,W9,1,,2026-11-27 10:00:00,P1,1", "warehouse", "unknown warehouse 'W9'"),
        ("S2,,1,,2026-11-27 10:00:00,P1,1", "warehouse", "missing value"),
        ("S2,W1,1,,2026-11-27 10:00:00,P1,0", "quantity", "not a positive integer: '0'"),
        ("S2,W1,1,,2026-11-27 10:00:00,P1,-3", "quantity", "not a positive integer: '-3'"),
        ("S2,W1,1,,2026-11-27 10:00:00,P1,1.5", "quantity", "not a positive integer: '1.5'"),
        ("S2,W1,1,,2026-11-27 10:00:00,P1,２", "quantity", "not a positive integer: '２'"),
        ("S2,W1,1,,2026-11-27 10:00:00,P1,", "quantity", "missing value"),
        ("S2,W1,1,,2026-11-27 10:00:00,P9,1", "product_code", "unknown product 'P9'"),
        ("S2,W1,1,,2026-11-27 10:00:00,,1", "product_code", "missing value"),
        ("S2,W1,1,,27.11.2026 10:00,P1,1", "confirmed_at", "not a timestamp: '27.11.2026 10:00'"),
        ("S2,W1,1,,2026-11-27,P1,1", "confirmed_at", "not a timestamp: '2026-11-27'"),
        ("S2,W1,1,,2026-13-01 10:00:00,P1,1", "confirmed_at", "not a timestamp"),
        ("S2,W1,1,,2026/02/30 10:00,P1,1", "confirmed_at", "not a timestamp"),
        ("S2,W1,1,,,P1,1", "confirmed_at", "missing value"),
        (
            f"S2,W1,1,{'T' * 51},2026-11-27 10:00:00,P1,1",
            "tracking_number",
            "longer than 50 characters (51)",
        ),
        (",W1,1,,2026-11-27 10:00:00,P1,1", "shipment_id", "missing value"),
        ("S2,W1,1,,2026-11-27 10:00:00,P1", None, "expected 7 fields as in the header, found 6"),
        (
            "S2,W1,1,,2026-11-27 10:00:00,P1,1,x",
            None,
            "expected 7 fields as in the header, found 8",
        ),
    ],
)
def test_each_rule_is_located(tmp_path: Path, row: str, column: str | None, reason: str) -> None:
    path = write_csv(tmp_path / "shipments.csv", [SHIP_HEADER, GOOD, row, GOOD.replace("S1", "S3")])
    ((line, got_column, got_reason),) = rejection_of(path)
    assert (line, got_column) == (3, column)
    assert got_reason.startswith(reason)


def test_tracking_number_of_50_characters_is_fine(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv", [SHIP_HEADER, f"S1,W1,1,{'T' * 50},2026-11-27 10:00,P1,1"]
    )
    assert shipments_of(path)[0].tracking_number == "T" * 50


def test_the_same_product_on_two_lines_adds_up_even_when_not_contiguous(tmp_path: Path) -> None:
    """An echoed order file lists one line per Next Engine row: quantities add up (issue #12
    finding 7), the product keeps the place of its first line."""
    path = write_csv(
        tmp_path / "shipments.csv",
        [
            SHIP_HEADER,
            GOOD,
            "S2,W1,2,,2026-11-27 10:00:00,P1,1",
            "S1,W1,1001,TRK,2026-11-27 10:00:00,P2,1",
            GOOD[:-1] + "2",
        ],
    )
    first = next(s for s in shipments_of(path) if s.shipment_id == "S1")
    assert first.lines == (ShipmentLine("P1", 3), ShipmentLine("P2", 1))


def test_added_up_quantities_are_bounded(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [SHIP_HEADER, "S1,W1,1,,2026-11-27 10:00,P1,9999999", "S1,W1,1,,2026-11-27 10:00,P1,1"],
    )
    assert rejection_of(path) == [
        (3, "quantity", "quantities of product 'P1' in shipment 'S1' add up to more than 9,999,999")
    ]


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        (
            "S1,W2,1001,TRK,2026-11-27 10:00:00,P2,1",
            "warehouse",
            "shipment 'S1': warehouse 'W2' differs from 'W1' on line 2",
        ),
        (
            "S1,W1,1002,TRK,2026-11-27 10:00:00,P2,1",
            "ne_order_id",
            "shipment 'S1': ne_order_id '1002' differs from '1001' on line 2",
        ),
        (
            "S1,W1,,TRK,2026-11-27 10:00:00,P2,1",
            "ne_order_id",
            "shipment 'S1': ne_order_id '' differs from '1001' on line 2",
        ),
        (
            "S1,W1,1001,TRK2,2026-11-27 10:00:00,P2,1",
            "tracking_number",
            "shipment 'S1': tracking_number 'TRK2' differs from 'TRK' on line 2",
        ),
        (
            "S1,W1,1001,TRK,2026-11-27 10:00:01,P2,1",
            "confirmed_at",
            "shipment 'S1': confirmed_at '2026-11-27 10:00:01' differs from "
            "'2026-11-27 10:00:00' on line 2",
        ),
    ],
)
def test_conflicting_header_fields_within_a_shipment(
    tmp_path: Path, row: str, column: str, reason: str
) -> None:
    path = write_csv(
        tmp_path / "shipments.csv", [SHIP_HEADER, GOOD, "S2,W1,,,2026-11-27 10:00,P1,1", row]
    )
    assert rejection_of(path) == [(4, column, reason)]


def test_conflicting_receipt_fields(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "receipts.csv",
        [
            RECEIPT_HEADER,
            "R1,W1,2026/11/27 09:00,P1,1",
            "R1,W2,2026/11/27 09:01,P2,1",
            "R1,W1,2026/11/27 09:00,P1,3",
        ],
    )
    assert rejection_of(path, RECEIPTS) == [
        (3, "warehouse", "receipt 'R1': warehouse 'W2' differs from 'W1' on line 2"),
        (
            3,
            "confirmed_at",
            "receipt 'R1': confirmed_at '2026/11/27 09:01' differs from '2026/11/27 09:00' on "
            "line 2",
        ),
    ]


def test_every_error_is_reported_in_line_order(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        [
            SHIP_HEADER,
            "S1,W9,1,,2026-11-27 10:00,P9,0",
            GOOD.replace("S1", "S2"),
            "S3,W1,1,,nope,P1,1",
            "S2,W1,1001,TRK,2026-11-27 10:00:00,P1,1",
            "S4,W1,0016,,2026-11-27 10:00,P1,1",
        ],
    )
    assert rejection_of(path) == [
        (2, "warehouse", "unknown warehouse 'W9'"),
        (2, "product_code", "unknown product 'P9'"),
        (2, "quantity", "not a positive integer: '0'"),
        (
            4,
            "confirmed_at",
            "not a timestamp: 'nope' (expected ISO 8601, YYYY-MM-DD HH:MM:SS "
            "or YYYY/MM/DD HH:MM[:SS])",
        ),
        (
            6,
            "ne_order_id",
            "not a Next Engine order number (a positive whole number without "
            "leading zeros, as Next Engine shows it): '0016'",
        ),
    ]


def test_errors_are_capped(tmp_path: Path) -> None:
    rows = [f"S{n},W1,,,2026-11-27 10:00,P1,0" for n in range(MAX_ERRORS + 500)]
    errors = rejection_of(write_csv(tmp_path / "shipments.csv", [SHIP_HEADER, *rows]))
    assert len(errors) == MAX_ERRORS + 1
    assert errors[MAX_ERRORS - 1][0] == MAX_ERRORS + 1
    assert errors[-1] == (None, None, f"stopped after {MAX_ERRORS} errors; fix these first")


def test_missing_and_doubled_columns_are_header_errors(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "shipments.csv",
        ["shipment_id,出荷ID,warehouse,ne_order_id,confirmed_at,product_code", "S1,S1,W1,,x,P1"],
    )
    assert rejection_of(path) == [
        (1, "shipment_id", "column given twice (fields 1 and 2)"),
        (1, "tracking_number", "required column missing from the header"),
        (1, "quantity", "required column missing from the header"),
    ]


def test_header_line_counts_leading_blank_lines(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "shipments.csv", ["", "", "shipment_id", "S1"])
    assert {(line, reason) for line, _, reason in rejection_of(path)} == {
        (3, "required column missing from the header")
    }


def test_file_without_header_row(tmp_path: Path) -> None:
    assert rejection_of(write_csv(tmp_path / "shipments.csv", ["", " , "])) == [
        (1, None, "no header row")
    ]


def test_undecodable_bytes_are_rejected_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "shipments.csv"
    path.write_bytes(
        (SHIP_HEADER + "\n" + GOOD + "\n").encode() + b"S2,W1,,,2026-11-27 10:00,P\x81 ,1\n"
    )
    assert rejection_of(path) == [(3, None, "cannot be decoded as UTF-8 or as Shift_JIS (CP932)")]


def test_bom_file_must_be_utf8_throughout(tmp_path: Path) -> None:
    path = tmp_path / "shipments.csv"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + (SHIP_HEADER + "\n").encode()
        + "S1,W1,,,2026-11-27 10:00,商品A,1\n".encode("cp932")
    )
    assert rejection_of(path) == [
        (2, None, "not valid UTF-8 although the file starts with a UTF-8 BOM")
    ]


@pytest.mark.parametrize(
    "row", ['S2,W1,"1"x,,2026-11-27 10:00,P1,1', 'S2,W1,"1,,2026-11-27 10:00,P1,1']
)
def test_malformed_csv_is_rejected(tmp_path: Path, row: str) -> None:
    path = write_csv(tmp_path / "shipments.csv", [SHIP_HEADER, GOOD, row])
    ((line, column, reason),) = rejection_of(path)
    assert (line, column) == (3, None)
    assert reason.startswith("malformed CSV: ")


# --- product master ----------------------------------------------------------------------------


def test_products_are_read_with_optional_link_code(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "products.csv",
        ["商品コード,紐付けコード,name", "P1,ne-p1,x", "P2,,y", " P3 , NE3 ,z"],
        encoding="cp932",
    )
    assert read_products(path, path.name) == [
        ProductLink("P1", "ne-p1"),
        ProductLink("P2", None),
        ProductLink("P3", "NE3"),
    ]


def test_products_must_be_unique_and_complete(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "products.csv", ["product_code,link_code", "P1,a", ",b", "P1,c", "P2,d,e"]
    )
    with pytest.raises(BatchRejected) as info:
        read_products(path, path.name)
    assert [(e.line, e.column, e.reason) for e in info.value.errors] == [
        (3, "product_code", "missing value"),
        (4, "product_code", "duplicate product 'P1', first on line 2"),
        (5, None, "expected 2 fields as in the header, found 3"),
    ]


def test_a_crlf_split_between_two_reads_ends_one_line(tmp_path: Path) -> None:
    """The CR of a CRLF is the last byte of one 64 KiB read and the LF the first of the next:
    still one line end, so the bad line is named correctly."""
    header = f"{SHIP_HEADER},note"
    head = f"{header}\r\nS1,W1,,,2026-11-27 10:00,P1,1,"
    row = head + "x" * (65535 - len(head))
    assert len(row.encode()) == 65535
    path = tmp_path / "shipments.csv"
    path.write_bytes(row.encode() + b"\r\nS2,W1,,,2026-11-27 10:00,P1,1,\x81 \r\n")
    assert rejection_of(path) == [(3, None, "cannot be decoded as UTF-8 or as Shift_JIS (CP932)")]


def test_cr_only_line_ends_and_a_missing_final_line_break_are_read(tmp_path: Path) -> None:
    path = tmp_path / "shipments.csv"
    path.write_bytes(
        f"{SHIP_HEADER}\rS1,W1,,,2026-11-27 10:00,P1,1\rS1,W1,,,2026-11-27 10:00,P1,2".encode()
    )
    (shipment,) = shipments_of(path)
    assert shipment.lines == (ShipmentLine("P1", 3),)


def test_a_line_longer_than_the_bound_rejects_the_file_without_reading_it_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shipments.csv"
    path.write_bytes(f"{SHIP_HEADER}\n".encode() + b"y" * (MAX_LINE_BYTES + 1) + b"\n")
    assert rejection_of(path) == [
        (
            2,
            None,
            f"line longer than {MAX_LINE_BYTES:,} bytes; inbox "
            "files have one shipment, receipt or product line per row "
            "(is this a CSV file?)",
        )
    ]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1", True),
        ("16", True),
        ("999999999999999999", True),
        ("0016", False),
        ("0", False),
        ("1234567890123456789", False),
        ("١٢", False),
        ("+16", False),
    ],
)
def test_order_numbers_must_be_canonical(tmp_path: Path, value: str, ok: bool) -> None:
    path = write_csv(
        tmp_path / "shipments.csv", [SHIP_HEADER, f"S1,W1,{value},,2026-11-27 10:00,P1,1"]
    )
    if ok:
        assert shipments_of(path)[0].ne_order_id == value
    else:
        ((line, column, reason),) = rejection_of(path)
        assert (line, column) == (2, "ne_order_id")
        assert reason.startswith("not a Next Engine order number")
