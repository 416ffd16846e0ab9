"""Parsing of write payloads: ``data``/``data_type`` decoding, update XML (§4.7),
bulkupdatereceipted XML (§4.8) and goods upload CSV (§5.1).

``data_type=gz`` means the form field holds raw gzip bytes (gaps §5.1), not base64.
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass, field
from xml.etree import ElementTree

from daemon.sandbox.errors import NEError

Value = str | None


@dataclass
class OrderChanges:
    """What one update XML asks to change: base fields, option fields, rows by row number."""

    base: dict[str, Value] = field(default_factory=dict)
    option: dict[str, Value] = field(default_factory=dict)
    rows: dict[int, dict[str, Value]] = field(default_factory=dict)


@dataclass
class BulkItem:
    """One ``<receiveorder receive_order_id=… receive_order_last_modified_date=…>`` element."""

    order_id: str
    last_modified: str
    changes: OrderChanges


#: The most a gzip ``data`` may inflate to (a 400 kB upload must not take gigabytes).
MAX_INFLATED_BYTES = 64 * 1024 * 1024


def decode_data(raw: bytes | None, data_type: str | None, allowed: tuple[str, ...]) -> bytes:
    """Return the payload bytes of ``data``; ``gz`` is gunzipped."""
    kind = (data_type or allowed[0]).strip()
    if kind not in allowed:
        raise NEError("data_type_invalid", f"data_type={kind}")
    if raw is None or raw == b"":
        raise NEError("param_missing", "data")
    if kind != "gz":
        return raw
    inflate = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        data = inflate.decompress(raw, MAX_INFLATED_BYTES + 1)
    except zlib.error:
        raise NEError("data_invalid", "data is not gzip") from None
    if len(data) > MAX_INFLATED_BYTES or inflate.unconsumed_tail:
        raise NEError("data_invalid", f"data inflates to more than {MAX_INFLATED_BYTES} bytes")
    if not inflate.eof:
        raise NEError("data_invalid", "data is not gzip (it ends early)")
    return data


def _value(element: ElementTree.Element) -> Value:
    text = element.text or ""
    return text if text != "" else None


def _parse_root(data: bytes) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise NEError("xml_invalid", str(exc)) from None
    if root.tag != "root":
        raise NEError("xml_invalid", f"root element is <{root.tag}>")
    return root


def _parse_changes(parent: ElementTree.Element) -> OrderChanges:
    changes = OrderChanges()
    for section in parent:
        if section.tag in ("receiveorder_base", "receiveorder_option"):
            target = changes.base if section.tag == "receiveorder_base" else changes.option
            for item in section:
                target[item.tag] = _value(item)
        elif section.tag == "receiveorder_row":
            for row in section:
                if row.tag != "receive_order_row_no":
                    raise NEError("xml_invalid", f"<{row.tag}> inside <receiveorder_row>")
                try:
                    row_no = int(row.get("value", ""))
                except ValueError:
                    raise NEError("xml_invalid", "receive_order_row_no value") from None
                changes.rows.setdefault(row_no, {}).update({i.tag: _value(i) for i in row})
        else:
            raise NEError("xml_invalid", f"unexpected <{section.tag}>")
    return changes


def parse_update(data: bytes) -> OrderChanges:
    """Parse the XML of ``receiveorder_base/update``."""
    return _parse_changes(_parse_root(data))


def _items(data: bytes) -> list[tuple[ElementTree.Element, str, str]]:
    out = []
    for element in _parse_root(data):
        if element.tag != "receiveorder":
            raise NEError("xml_invalid", f"unexpected <{element.tag}>")
        out.append(
            (
                element,
                element.get("receive_order_id", ""),
                element.get("receive_order_last_modified_date", ""),
            )
        )
    return out


def parse_bulk_update(data: bytes) -> list[BulkItem]:
    """Parse the XML of ``bulkupdate``: one ``<receiveorder>`` per order."""
    return [BulkItem(oid, lm, _parse_changes(el)) for el, oid, lm in _items(data)]


def parse_bulk_receipted(data: bytes) -> list[BulkItem]:
    """Parse the XML of ``bulkupdatereceipted`` (optional ``receive_order_label_print_flag``)."""
    items = []
    for element, oid, lm in _items(data):
        changes = OrderChanges(base={child.tag: _value(child) for child in element})
        items.append(BulkItem(oid, lm, changes))
    return items


@dataclass
class UploadCsv:
    """A decoded goods upload: rows keyed by lower-case column name, or why it failed."""

    rows: list[dict[str, str]]
    error: str | None = None


def parse_goods_csv(data: bytes) -> UploadCsv:
    """Decode (UTF-8, else Shift_JIS/cp932) and parse a goods CSV with a header line.

    Format problems do not fail the HTTP call: NE reports them through the queue row.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp932")
        except UnicodeDecodeError:
            return UploadCsv([], "文字コードを判別できません(UTF-8またはShift_JISで送ってください)")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        lines = [line for line in reader if any(cell.strip() for cell in line)]
    except csv.Error as exc:
        return UploadCsv([], f"CSVを読み込めません: {exc}")
    if not lines:
        return UploadCsv([], "CSVにデータがありません")
    header = [name.strip().lower() for name in lines[0]]
    if "syohin_code" not in header:
        return UploadCsv([], "syohin_code列がありません")
    rows = []
    for line in lines[1:]:
        padded = line + [""] * (len(header) - len(line))
        rows.append({name: padded[i].strip() for i, name in enumerate(header)})
    return UploadCsv(rows)
