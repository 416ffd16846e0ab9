"""Streaming reader for inbox CSV files: encoding detection, header mapping, physical lines.

Nothing here holds a whole file: bytes are checked line by line and rows are yielded one by
one, each with the physical line number it starts on (quoted fields may span lines).
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from hooks.errors import BatchRejected, RecordError
from plugins.wms_csv.formats import FileFormat, normalise_header

MAX_ERRORS = 1000
#: The longest physical line read; longer ones reject the file before it fills the memory.
MAX_LINE_BYTES = 64 * 1024

_LINE_END = re.compile(rb"\r\n|\r|\n")

Opener = Callable[[], BinaryIO]
"""Opens the file being read, from its start (each pass opens it anew)."""


class ErrorLog:
    """The record errors of one file, capped so a broken 100,000-line file stays cheap."""

    def __init__(self, source: str, cap: int = MAX_ERRORS) -> None:
        self.source = source
        self.cap = cap
        self.errors: list[RecordError] = []

    def add(self, reason: str, line: int | None = None, column: str | None = None) -> None:
        """Record one error unless the cap is reached."""
        self.append(RecordError(self.source, reason, line, column))

    def append(self, error: RecordError) -> None:
        """Record an error built elsewhere (e.g. by :func:`read_rows`) unless the cap is reached."""
        if not self.full:
            self.errors.append(error)

    @property
    def full(self) -> bool:
        """True once the cap is reached: callers stop reading, the file is rejected anyway."""
        return len(self.errors) >= self.cap

    def raise_if_any(self) -> None:
        """Raise :class:`BatchRejected` with every error, sorted by line, if there are any."""
        if not self.errors:
            return
        errors = sorted(self.errors, key=lambda e: -1 if e.line is None else e.line)
        if self.full:
            errors.append(
                RecordError(self.source, f"stopped after {self.cap} errors; fix these first")
            )
        raise BatchRejected(self.source, errors)


def detect_encoding(open_file: Opener, source: str) -> str:
    """Tell the file's encoding: UTF-8 BOM, else strict UTF-8, else CP932 (Shift_JIS).

    Raises :class:`BatchRejected` naming the first line that fits neither, a line longer than
    :data:`MAX_LINE_BYTES`, or a UTF-16 file. Line by line is safe for both encodings: bytes
    0x0A and 0x0D never occur inside a multi-byte character.
    """
    with open_file() as stream:
        if stream.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            reason = "UTF-16 text; the inbox takes UTF-8 or Shift_JIS (CP932), save it as one"
            raise BatchRejected(source, [RecordError(source, reason, line=1)])
        stream.seek(0)
        bom = stream.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
        if not bom:
            stream.seek(0)
        bad_line = _first_undecodable_line(_byte_lines(stream, source), "utf-8")
        if bad_line is None:
            return "utf-8-sig" if bom else "utf-8"
        reason = "not valid UTF-8 although the file starts with a UTF-8 BOM"
        if not bom:
            stream.seek(0)
            bad_line = _first_undecodable_line(_byte_lines(stream, source), "cp932")
            if bad_line is None:
                return "cp932"
            reason = "cannot be decoded as UTF-8 or as Shift_JIS (CP932)"
    raise BatchRejected(source, [RecordError(source, reason, line=bad_line)])


def _byte_lines(stream: BinaryIO, source: str) -> Iterator[bytes]:
    """The physical lines of a binary stream (ended by LF, CRLF or CR), read in chunks.

    Raises :class:`BatchRejected` at the first line longer than :data:`MAX_LINE_BYTES`, so a
    file that is one huge line is never read into memory.
    """
    buffer, number = b"", 0
    while True:
        chunk = stream.read(1 << 16)
        buffer += chunk
        start = 0
        for match in _LINE_END.finditer(buffer):
            if chunk and match.end() == len(buffer) and match.group() == b"\r":
                break  # perhaps the first half of a CRLF: wait for the next chunk
            number += 1
            if match.end() - start > MAX_LINE_BYTES:
                raise BatchRejected(source, [_too_long(source, number)])
            yield buffer[start : match.end()]
            start = match.end()
        buffer = buffer[start:]
        if len(buffer) > MAX_LINE_BYTES:
            raise BatchRejected(source, [_too_long(source, number + 1)])
        if not chunk:
            if buffer:
                yield buffer
            return


def _too_long(source: str, line: int) -> RecordError:
    reason = (
        f"line longer than {MAX_LINE_BYTES:,} bytes; inbox files have one shipment, "
        "receipt or product line per row (is this a CSV file?)"
    )
    return RecordError(source, reason, line)


def _first_undecodable_line(lines: Iterable[bytes], encoding: str) -> int | None:
    """The 1-based number of the first line that does not decode, or None."""
    for number, raw in enumerate(lines, start=1):
        try:
            raw.decode(encoding)
        except UnicodeDecodeError:
            return number
    return None


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: its first physical line and its values by canonical column (stripped)."""

    line: int
    values: dict[str, str]


def read_rows(
    open_file: Opener, encoding: str, fmt: FileFormat, source: str
) -> Iterator[Row | RecordError]:
    """Yield the data rows of a file, or errors for what cannot be read as a row.

    Blank rows (also rows of empty cells only) are skipped. A header that lacks a column or
    names one twice yields its errors and ends the file, since no row can be read without it.
    A row with another number of fields than the header is an error, not guessed at. A
    physical line longer than :data:`MAX_LINE_BYTES` characters ends the file with an error.
    """
    with io.TextIOWrapper(open_file(), encoding=encoding, newline="") as stream:
        too_long: list[int] = []
        reader = csv.reader(_bounded_lines(stream, too_long), strict=True)
        values_of: Callable[[list[str]], dict[str, str]] | None = None
        width = 0
        next_line = 1
        try:
            for cells in reader:
                line, next_line = next_line, reader.line_num + 1
                if not "".join(cells).strip():
                    continue
                if values_of is None:
                    columns, header_errors = _map_header(cells, fmt, source, line)
                    if header_errors:
                        yield from header_errors
                        return
                    values_of = _values_picker(columns)
                    width = len(cells)
                elif len(cells) != width:
                    reason = f"expected {width} fields as in the header, found {len(cells)}"
                    yield RecordError(source, reason, line)
                else:
                    yield Row(line, values_of(cells))
        except csv.Error as exc:
            yield RecordError(source, f"malformed CSV: {exc}", next_line)
            return
        if too_long:
            yield _too_long(source, too_long[0])
            return
    if values_of is None:
        yield RecordError(source, "no header row", 1)


def _bounded_lines(stream: TextIO, too_long: list[int]) -> Iterator[str]:
    """The stream's physical lines; stops at one longer than :data:`MAX_LINE_BYTES`,
    appending its number to ``too_long``."""
    for number in itertools.count(1):
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES:
            too_long.append(number)
            return
        yield line


def _map_header(
    cells: list[str], fmt: FileFormat, source: str, line: int
) -> tuple[list[tuple[int, str]], list[RecordError]]:
    """Return (cell index, canonical column) for the known header cells, and header errors."""
    lookup = fmt.header_lookup()
    found: dict[str, int] = {}
    errors: list[RecordError] = []
    for index, cell in enumerate(cells):
        name = lookup.get(normalise_header(cell))
        if name is None:
            continue
        if name in found:
            reason = f"column given twice (fields {found[name] + 1} and {index + 1})"
            errors.append(RecordError(source, reason, line, name))
        else:
            found[name] = index
    errors.extend(
        RecordError(source, "required column missing from the header", line, column.name)
        for column in fmt.columns
        if column.name not in found
    )
    return [(index, name) for name, index in found.items()], errors


def _values_picker(columns: list[tuple[int, str]]) -> Callable[[list[str]], dict[str, str]]:
    """A fast function from a row's cells to its stripped values by canonical column."""
    pairs = tuple(columns)

    def values_of(cells: list[str]) -> dict[str, str]:
        return {name: cells[index].strip() for index, name in pairs}

    return values_of
