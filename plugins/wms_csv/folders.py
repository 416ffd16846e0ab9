"""The inbox folder: noticing files that finished arriving, claiming them and filing them away.

Layout under ``inbox``: ``.claimed/`` (files being processed), ``processed/`` and
``rejected/`` (with ``<file>.errors.txt``; a fixed file goes back with
:meth:`Inbox.requeue`). A file is taken only when its last byte is a newline (or it is empty) and
its size and mtime stayed the same for ``stable_seconds``: seen unchanged by two scans that far
apart, or, at first sight, with an mtime at least that old (``0`` takes a file at first
sight: only the newline rule remains).
"""

from __future__ import annotations

import codecs
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hooks.errors import BatchRejected
from plugins.wms_csv.formats import FileFormat, format_for_name


@dataclass(slots=True)
class _Observation:
    """A file's state and since when (monotonic clock) it is known to be in that state."""

    size: int
    mtime_ns: int
    since: float
    complete: bool | None = None


@dataclass(frozen=True, slots=True)
class ReadyFile:
    """A file in the inbox that finished arriving."""

    path: Path
    fmt: FileFormat
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        """The file name, used as the batch source in errors and logs."""
        return self.path.name


class Inbox:
    """Watches one inbox folder; the observation state lives as long as the connector."""

    def __init__(self, root: Path, stable_seconds: float) -> None:
        self.root = root
        self.claimed = root / ".claimed"
        self.processed = root / "processed"
        self.rejected = root / "rejected"
        for folder in (self.root, self.claimed, self.processed, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)
        self._stable_seconds = stable_seconds
        self._observed: dict[str, _Observation] = {}

    def scan(self) -> list[ReadyFile]:
        """Observe the folder once (one ``os.scandir``); return complete files, oldest first.

        A file seen for the first time (or changed) counts as unchanged since its mtime if
        that is in the past, so a one-shot ``nebridge run --once`` takes files that were
        finished long ago. The last byte is read once per file state, once it is stable.
        """
        now, wall = time.monotonic(), time.time()
        observed: dict[str, _Observation] = {}
        ready: list[ReadyFile] = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                fmt = format_for_name(entry.name)
                if fmt is None or not entry.is_file():
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                seen = self._observed.get(entry.name)
                if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                    unchanged_for = max(0.0, wall - stat.st_mtime)
                    seen = _Observation(stat.st_size, stat.st_mtime_ns, now - unchanged_for)
                observed[entry.name] = seen
                if now - seen.since < self._stable_seconds:
                    continue
                if seen.complete is None:
                    seen.complete = _ends_with_newline(Path(entry.path))
                if seen.complete:
                    ready.append(ReadyFile(Path(entry.path), fmt, seen.size, seen.mtime_ns))
        self._observed = observed
        ready.sort(key=lambda file: (file.mtime_ns, file.name))
        return ready

    def claim(self, file: ReadyFile) -> Path | None:
        """Move a ready file into ``.claimed/`` atomically; None if it vanished meanwhile."""
        target = _free_path(self.claimed, file.name)
        try:
            os.rename(file.path, target)
        except FileNotFoundError:
            return None
        return target

    def file_away(self, path: Path, folder: Path, name: str) -> Path:
        """Move ``path`` into ``folder`` as ``name``, or a free variant of it; return the target."""
        target = _free_path(folder, name)
        os.rename(path, target)
        return target

    def reject(self, path: Path, name: str, error: BatchRejected) -> Path:
        """Quarantine a file in ``rejected/`` with ``<name>.errors.txt`` beside it.

        The error report is written (atomically) first, so a crash in between leaves the file
        claimed and it is simply rejected again with a fresh report.
        """
        target = _free_path(self.rejected, name)
        report = target.with_name(target.name + ".errors.txt")
        write_atomically(report, _format_errors(error).encode("utf-8"))
        os.rename(path, target)
        return target

    def requeue(self, name: str, stamp: str) -> Path:
        """Move the fixed file ``rejected/<name>`` back into the inbox, to be taken again.

        Its stale ``<name>.errors.txt`` is kept as ``<name>.errors.retried-<stamp>.txt``, so a
        new rejection writes a fresh report and the old one stays for reference. Raises
        KeyError if there is no such file, ValueError if the inbox would never take it.
        """
        if name in ("", ".", "..") or Path(name).name != name:
            raise ValueError(f"{name!r} is not a file name; give the name only, as "
                             "`nebridge inbox list --state rejected` shows it")
        path = self.rejected / name
        if not path.is_file():
            raise KeyError(f"no rejected file named {name!r} in {self.rejected}; "
                           "`nebridge inbox list --state rejected` shows them")
        if name.endswith(".errors.txt"):
            raise ValueError(f"{name} is an error report; retry the file it describes, "
                             f"{name.removesuffix('.errors.txt')}")
        if format_for_name(name) is None:
            raise ValueError(f"{path} is not named shipments*.csv, receipts*.csv or "
                             "products*.csv, so the inbox would ignore it; rename it and retry")
        if not _ends_with_newline(path):
            raise ValueError(f"{path} does not end with a newline, so the inbox would take it "
                             "for a file still being written; add the final line break and "
                             "retry")
        target = self.file_away(path, self.root, name)
        report = self.rejected / f"{name}.errors.txt"
        if report.is_file():
            self.file_away(report, self.rejected, f"{name}.errors.retried-{stamp}.txt")
        return target

    def unclaim_all(self) -> list[Path]:
        """Return every file a crash left in ``.claimed/`` to the inbox; list the new paths."""
        returned = []
        for path in sorted(self.claimed.iterdir()):
            if path.is_file():
                returned.append(self.file_away(path, self.root, path.name))
        return returned


def _format_errors(error: BatchRejected) -> str:
    """The text of ``<file>.errors.txt``: one line per error with line, column and reason."""
    lines = [f"{error.source}: rejected by nebridge with {len(error.errors)} error(s)"]
    for record in error.errors:
        where = "file" if record.line is None else f"line {record.line}"
        if record.column:
            where += f", column {record.column}"
        lines.append(f"{where}: {record.reason}")
    return "\n".join(lines) + "\n"


def _free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>~N<suffix>`` with the first N that is free."""
    candidate = folder / name
    stem, suffix = os.path.splitext(name)
    number = 0
    while candidate.exists():
        number += 1
        candidate = folder / f"{stem}~{number}{suffix}"
    return candidate


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The temporary file lives in the same folder as ``.<name>.tmp`` (hidden, never matching a
    data file pattern), is fsynced, renamed over the target, and the folder is fsynced.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


_UTF16_NEWLINES = {codecs.BOM_UTF16_LE: b"\n\x00", codecs.BOM_UTF16_BE: b"\x00\n"}


def _ends_with_newline(path: Path) -> bool:
    """True if the file's last character is a newline (in UTF-16 too, whose files are then
    rejected with the reason), or it is empty (stable and empty: complete, and rejected for
    having no header); a vanished file counts as incomplete."""
    try:
        with path.open("rb") as stream:
            newline = _UTF16_NEWLINES.get(stream.read(2), b"\n")
            size = stream.seek(0, os.SEEK_END)
            if size == 0:
                return True
            if size < len(newline):
                return False
            stream.seek(-len(newline), os.SEEK_END)
            return stream.read() == newline
    except FileNotFoundError:
        return False
