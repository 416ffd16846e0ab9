"""The inbox folder: noticing files that finished arriving, claiming them and filing them away.

Layout under ``inbox``: ``.claimed/`` (files being processed), ``processed/`` and
``rejected/`` (with ``<file>.errors.txt``; a fixed file goes back with
:meth:`Inbox.requeue`). A file is taken once its size and mtime stayed the same for
``stable_seconds`` (seen unchanged by two scans that far apart, or, at first sight, with an
mtime at least that old; ``0`` takes a file at first sight) and its last byte ends a line
(LF or CR) or it is empty. A file whose last line has no line break is taken once it stayed
unchanged for :data:`NO_NEWLINE_GRACE_SECONDS` (its last line is read like any other).

Files are read as they are, or not at all: a symbolic link or any other non-regular file is
rejected with that reason and never opened; every read opens the file with ``O_NOFOLLOW`` and
checks it is still the very file that was claimed (inode, size, mtime), so a file an in-place
writer extends while nebridge reads it goes back to the inbox and is taken once it settles.
The same check runs once more when a file read in full is filed away into ``processed/``
(:meth:`Inbox.settle`): lines appended after the read send the whole file back to the inbox,
to be read again, instead of into ``processed/`` unread. A writer may also pause past that
check and append to the file in ``processed/`` (the rename keeps the inode): every scan
re-checks the files filed away in the last ``processed_watch_seconds`` and sends one that
changed back to the inbox the same way, with a warning (:attr:`Inbox.returned`). That watch
lives in memory: a file that grows after a restart, or later than the watch, is not noticed.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import pwd
import stat as stat_mode
import time
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from hooks.errors import BatchRejected, RecordError, StepNotReady
from hooks.files import write_file
from plugins.wms_csv.formats import FileFormat, format_for_name

if TYPE_CHECKING:
    from hooks.connectors import ConnectorContext

#: A file whose last line has no line break is taken after staying unchanged this long.
NO_NEWLINE_GRACE_SECONDS = 60.0
#: The longest file name (in bytes) the file systems nebridge runs on accept.
NAME_MAX = 255
#: Bytes kept free after a rejected file's name for ``.errors.retried-<stamp>.txt``.
_REPORT_RESERVE = len(".errors.retried-20261203T120000Z.txt")
#: Bytes kept free after any filed-away name for a ``~N`` variant.
_VARIANT_RESERVE = 6
SYMLINK_REASON = (
    "a symbolic link; nebridge reads only regular files in the inbox and never "
    "follows a link — put the file itself into the inbox"
)
SPECIAL_REASON = (
    "not a regular file (a named pipe, device or socket); put a regular file into the inbox"
)


@dataclass(slots=True)
class _Observation:
    """A file's state and since when (monotonic clock) it is known to be in that state."""

    size: int
    mtime_ns: int
    since: float
    complete: bool | None = None


@dataclass(frozen=True, slots=True)
class _FiledAway:
    """A file filed away into ``processed/``: its inbox name, state, and until when (monotonic
    clock) it is watched for a writer that still appends to it."""

    name: str
    inode: int
    size: int
    mtime_ns: int
    until: float


@dataclass(frozen=True, slots=True)
class ReadyFile:
    """A file in the inbox that finished arriving, or one refused without reading it.

    ``refusal`` says why a file is rejected unread (a symbolic link, a named pipe).
    """

    path: Path
    fmt: FileFormat
    size: int
    mtime_ns: int
    inode: int = 0
    refusal: str | None = None

    @property
    def name(self) -> str:
        """The file name, used as the batch source in errors and logs."""
        return self.path.name


class Inbox:
    """Watches one inbox folder; the observation state lives as long as the connector."""

    def __init__(self, root: Path, stable_seconds: float, watch_seconds: float = 0.0) -> None:
        self.root = root
        self.claimed = root / ".claimed"
        self.processed = root / "processed"
        self.rejected = root / "rejected"
        #: The inbox and its subfolders, parents first (created by the connector's start).
        self.folders = (root, self.claimed, self.processed, self.rejected)
        self._stable_seconds = stable_seconds
        self._watch_seconds = watch_seconds
        self._observed: dict[str, _Observation] = {}
        self._filed_away: dict[Path, _FiledAway] = {}
        #: Why files were sent back from ``processed/`` since the connector last logged them.
        self.returned: list[str] = []
        #: Files of the last scan whose names match no format (never read: the admin is told).
        self.unknown: tuple[str, ...] = ()

    def scan(self) -> list[ReadyFile]:
        """Observe the folder once (one ``os.scandir``); return complete files, oldest first.

        A file seen for the first time (or changed) counts as unchanged since its mtime if
        that is in the past, so a one-shot ``nebridge run --once`` takes files that were
        finished long ago. The last byte is read once per file state, once it is stable.
        Links and special files are returned at once, with their ``refusal``; folders are
        ignored. Files whose names match no format land in :attr:`unknown`. Files in
        ``processed/`` that changed since they were filed away go back to the inbox first.
        """
        now, wall = time.monotonic(), time.time()
        self._recheck_filed_away(now)
        observed: dict[str, _Observation] = {}
        ready: list[ReadyFile] = []
        unknown: list[str] = []
        grace = max(self._stable_seconds, NO_NEWLINE_GRACE_SECONDS)
        try:
            listing = os.scandir(self.root)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"the inbox folder {self.root} does not exist: nebridge creates it when it "
                f"starts (`nebridge run`, `nebridge run --once`), or create it for the service "
                f"user: mkdir -p {self.root} && chown {this_user()}: {self.root}"
            ) from None
        except NotADirectoryError:
            raise NotADirectoryError(
                f"the inbox folder {self.root} is not a folder (a file is in its place or in "
                f"its path's): move that file away, then mkdir -p {self.root} && chown "
                f"{this_user()}: {self.root}"
            ) from None
        with listing as entries:
            for entry in entries:
                fmt = format_for_name(entry.name)
                if fmt is None:
                    own = entry.name in (self.processed.name, self.rejected.name)
                    if not own and _stray(entry, wall - self._stable_seconds):
                        unknown.append(entry.name)
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                path = Path(entry.path)
                refusal = _refusal(info.st_mode)
                if stat_mode.S_ISDIR(info.st_mode):
                    continue
                if refusal is not None:
                    ready.append(
                        ReadyFile(path, fmt, info.st_size, info.st_mtime_ns, info.st_ino, refusal)
                    )
                    continue
                seen = self._observed.get(entry.name)
                if seen is None or (seen.size, seen.mtime_ns) != (info.st_size, info.st_mtime_ns):
                    unchanged_for = max(0.0, wall - info.st_mtime)
                    seen = _Observation(info.st_size, info.st_mtime_ns, now - unchanged_for)
                observed[entry.name] = seen
                if now - seen.since < self._stable_seconds:
                    continue
                if seen.complete is None:
                    seen.complete = _ends_a_line(path)
                if seen.complete or now - seen.since >= grace:
                    ready.append(ReadyFile(path, fmt, seen.size, seen.mtime_ns, info.st_ino))
        self._observed = observed
        self.unknown = tuple(sorted(unknown))
        ready.sort(key=lambda file: (file.mtime_ns, file.name))
        return ready

    def _recheck_filed_away(self, now: float) -> None:
        """Send every watched file of ``processed/`` that a writer extended back to the inbox
        (whole: what was stored is recognised by id), noting why in :attr:`returned`."""
        for path, seen in list(self._filed_away.items()):
            try:
                info = os.stat(path, follow_symlinks=False)
            except OSError:
                del self._filed_away[path]
                continue
            if info.st_ino != seen.inode or now >= seen.until:
                del self._filed_away[path]
                continue
            if (info.st_size, info.st_mtime_ns) == (seen.size, seen.mtime_ns):
                continue
            del self._filed_away[path]
            cause = (
                f"{seen.name} grew after nebridge had read it and filed it away as {path} "
                f"(size {seen.size} -> {info.st_size} bytes): the WMS writes to it under its "
                "final name and paused longer than wms.csv.stable_seconds"
            )
            advice = (
                "have the WMS write to a temporary name and rename the file when complete, "
                "or raise wms.csv.stable_seconds above its longest pause"
            )
            try:
                back = self.file_away(path, self.root, seen.name)
            except OSError as exc:
                self.returned.append(
                    f"{cause}; it could not be put back into the inbox ({exc}): move it into "
                    f"{self.root} by hand, its new lines were not read; {advice}"
                )
                continue
            self.returned.append(
                f"{cause}; the whole file is back in the inbox as {back.name} and is read "
                f"again (what was already stored is recognised by id); {advice}"
            )

    def claim(self, file: ReadyFile) -> Path | None:
        """Move a ready file into ``.claimed/`` atomically; None if it vanished meanwhile."""
        target = _free_path(_subfolder(self.claimed), file.name)
        try:
            os.rename(file.path, target)
        except FileNotFoundError:
            return None
        return target

    def file_away(self, path: Path, folder: Path, name: str) -> Path:
        """Move ``path`` into ``folder`` as ``name``, or a free variant of it; return the target."""
        target = _free_path(_subfolder(folder), name)
        os.rename(path, target)
        return target

    def settle(self, path: Path, expected: ReadyFile) -> tuple[Path, str | None]:
        """File a claimed file that was read in full away into ``processed/``; return
        ``(where it is, None)``, or ``(its path back in the inbox, why)`` if it grew.

        A writer that still holds the file open may append to it after nebridge read it
        (it paused longer than ``stable_seconds``). Those lines were never read, so the file
        is checked again once moved (inode, size, mtime): if it changed, the whole file goes
        back into the inbox and is read again once it settles. The events already stored
        are recognised by their ids, so nothing is doubled, and no appended line is lost.
        A writer pausing past this check is caught by the next scans (see :meth:`scan`).
        """
        target = self.file_away(path, self.processed, expected.name)
        info = os.stat(target, follow_symlinks=False)
        if (info.st_ino, info.st_size, info.st_mtime_ns) == (
            expected.inode,
            expected.size,
            expected.mtime_ns,
        ):
            if self._watch_seconds > 0:
                self._filed_away[target] = _FiledAway(
                    expected.name,
                    info.st_ino,
                    info.st_size,
                    info.st_mtime_ns,
                    time.monotonic() + self._watch_seconds,
                )
            return target, None
        back = self.file_away(target, self.root, expected.name)
        return back, (
            f"{expected.name} changed after nebridge read it (size {expected.size} "
            f"-> {info.st_size} bytes): the WMS wrote to it again; the whole file is "
            f"back in the inbox as {back.name} and is read again once it stays "
            "unchanged (what was already stored is recognised by id)"
        )

    def reject(self, path: Path, name: str, error: BatchRejected) -> Path:
        """Quarantine a file in ``rejected/`` with ``<name>.errors.txt`` beside it.

        The error report is written (atomically) first, so a crash in between leaves the file
        claimed and it is simply rejected again with a fresh report. A name too long to take
        the report's suffix is shortened (its hash keeps it apart); :meth:`requeue` finds the
        file by its original name all the same.
        """
        target = _free_path(_subfolder(self.rejected), rejected_name(name))
        report = target.with_name(target.name + ".errors.txt")
        write_file(report, _format_errors(error).encode("utf-8"))
        os.rename(path, target)
        return target

    def requeue(self, name: str, stamp: str) -> Path:
        """Move the fixed file ``rejected/<name>`` back into the inbox, to be taken again.

        Its stale ``<name>.errors.txt`` is kept as ``<name>.errors.retried-<stamp>.txt``, so a
        new rejection writes a fresh report and the old one stays for reference. Raises
        KeyError if there is no such file, ValueError if the inbox would never take it.
        """
        if name in ("", ".", "..") or Path(name).name != name:
            raise ValueError(
                f"{name!r} is not a file name; give the name only, as "
                "`nebridge inbox list --state rejected` shows it"
            )
        if name.endswith(".errors.txt"):
            raise ValueError(
                f"{name} is an error report; retry the file it describes, "
                f"{name.removesuffix('.errors.txt')}"
            )
        if format_for_name(name) is None:
            raise ValueError(
                f"{name} is not named shipments*.csv, receipts*.csv or "
                "products*.csv, so the inbox would ignore it; rename it and retry"
            )
        stored = rejected_name(name)
        path = self.rejected / stored
        if not path.is_file():
            raise KeyError(
                f"no rejected file named {name!r} in {self.rejected}; "
                "`nebridge inbox list --state rejected` shows them"
            )
        target = self.file_away(path, self.root, name)
        report = self.rejected / f"{stored}.errors.txt"
        if report.is_file():
            self.file_away(report, self.rejected, f"{stored}.errors.retried-{stamp}.txt")
        return target

    def unclaim_all(self) -> list[tuple[Path, Path]]:
        """Return every file a crash left in ``.claimed/`` to the inbox; list (claimed path,
        new path) pairs."""
        returned: list[tuple[Path, Path]] = []
        if not self.claimed.is_dir():
            return returned
        for path in sorted(self.claimed.iterdir()):
            if path.is_file() or path.is_symlink():
                returned.append((path, self.file_away(path, self.root, path.name)))
        return returned


def _stray(entry: os.DirEntry[str], settled_before: float) -> bool:
    """A finished regular file the WMS left under a name no format has: not hidden, not a
    temporary ``.tmp``/``.part`` being written, unchanged since ``settled_before``."""
    if entry.name.startswith(".") or entry.name.lower().endswith((".tmp", ".part")):
        return False
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    return stat_mode.S_ISREG(info.st_mode) and info.st_mtime <= settled_before


def open_claimed(path: Path, source: str, expected: ReadyFile | None = None) -> BinaryIO:
    """Open a claimed file for reading, never through a link; check it is the file scanned.

    Raises :class:`BatchRejected` for a link or a special file, and
    :class:`~hooks.errors.StepNotReady` if the file changed since ``expected`` was scanned
    (it goes back to the inbox and is taken once it stays unchanged).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BatchRejected(source, [RecordError(source, SYMLINK_REASON)]) from None
        raise
    try:
        info = os.fstat(fd)
        refusal = _refusal(info.st_mode)
        if refusal is not None:
            raise BatchRejected(source, [RecordError(source, refusal)])
        if expected is not None:
            _check_same(info, expected, source)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def check_unchanged(path: Path, expected: ReadyFile, source: str) -> None:
    """Raise :class:`~hooks.errors.StepNotReady` unless ``path`` is still the scanned file."""
    _check_same(os.stat(path, follow_symlinks=False), expected, source)


def _check_same(info: os.stat_result, expected: ReadyFile, source: str) -> None:
    if (info.st_ino, info.st_size, info.st_mtime_ns) != (
        expected.inode,
        expected.size,
        expected.mtime_ns,
    ):
        raise StepNotReady(
            f"{source} changed while nebridge read it (size {expected.size} -> "
            f"{info.st_size}); it is taken again once it stays unchanged"
        )


def this_user() -> str:
    """The name of the user this process runs as: the one who must write the WMS folders
    (the service user when the daemon says it), never a guessed ``nebridge``."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def make_folder(folder: Path, parents: bool = False) -> Path:
    """Create ``folder`` (mode 0777 less the umask) unless something is there already: a file
    in its way then fails the move into it, for that file alone and with the reason."""
    if not os.path.lexists(folder):
        folder.mkdir(parents=parents, exist_ok=True)
    return folder


def _subfolder(folder: Path) -> Path:
    """``folder`` of the inbox, created first if missing (never the inbox itself): a command
    that takes files before the daemon ever started (``stock take``) finds only the inbox the
    admin made."""
    return make_folder(folder)


def _refusal(mode: int) -> str | None:
    """Why a directory entry is not read at all, or None for a regular file (or folder)."""
    if stat_mode.S_ISLNK(mode):
        return SYMLINK_REASON
    if stat_mode.S_ISREG(mode) or stat_mode.S_ISDIR(mode):
        return None
    return SPECIAL_REASON


def _format_errors(error: BatchRejected) -> str:
    """The text of ``<file>.errors.txt``: one line per error with line, column and reason."""
    lines = [f"{error.source}: rejected by nebridge with {len(error.errors)} error(s)"]
    for record in error.errors:
        where = "file" if record.line is None else f"line {record.line}"
        if record.column:
            where += f", column {record.column}"
        lines.append(f"{where}: {record.reason}")
    return "\n".join(lines) + "\n"


def rejected_name(name: str) -> str:
    """The name a rejected file is kept under: ``name``, shortened if the report's name
    (``<name>.errors.retried-<stamp>.txt``) would not fit in a file name."""
    return fit_name(name, _REPORT_RESERVE + _VARIANT_RESERVE)


def fit_name(name: str, reserve: int = 0) -> str:
    """``name``, or ``<shortened stem>~<hash><suffix>`` so that it and ``reserve`` more bytes
    fit in :data:`NAME_MAX` bytes; the same name always gives the same result."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) + reserve <= NAME_MAX:
        return name
    stem, suffix = os.path.splitext(name)
    digest = hashlib.sha256(raw).hexdigest()[:12]
    budget = NAME_MAX - reserve - len(suffix.encode("utf-8", "surrogateescape")) - 13
    short = stem.encode("utf-8", "surrogateescape")[: max(budget, 1)].decode("utf-8", "ignore")
    return f"{short}~{digest}{suffix}"


def _free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>~N<suffix>`` with the first N that is free
    (a name too long to take ``~N`` is shortened first)."""
    name = fit_name(name, _VARIANT_RESERVE)
    candidate = folder / name
    stem, suffix = os.path.splitext(name)
    number = 0
    while os.path.lexists(candidate):
        number += 1
        candidate = folder / f"{stem}~{number}{suffix}"
    return candidate


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    See :func:`hooks.files.write_file`: a new hidden temporary file (``O_EXCL|O_NOFOLLOW``,
    never matching a data file pattern) beside the target, fsynced and renamed over it.
    """
    write_file(path, data)


_LINE_ENDS = {
    codecs.BOM_UTF16_LE: (b"\n\x00", b"\r\x00"),
    codecs.BOM_UTF16_BE: (b"\x00\n", b"\x00\r"),
}


def _ends_a_line(path: Path) -> bool:
    """True if the file's last character is LF or CR (in UTF-16 too, whose files are then
    rejected with the reason), or it is empty (stable and empty: complete, and rejected for
    having no header); a vanished or unreadable file counts as incomplete."""
    try:
        with open_claimed(path, path.name) as stream:
            ends = _LINE_ENDS.get(stream.read(2), (b"\n", b"\r"))
            size = stream.seek(0, os.SEEK_END)
            if size == 0:
                return True
            if size < len(ends[0]):
                return False
            stream.seek(-len(ends[0]), os.SEEK_END)
            return stream.read() in ends
    except (OSError, BatchRejected):
        return False


class ClaimedFile:
    """A claimed inbox file taken as one batch: filed away to ``processed/`` once stored, or
    to ``rejected/`` with its errors. The shipments/receipts and the stock batches share it."""

    #: How log lines name the file's kind (e.g. ``"stock file "``).
    label = ""

    def __init__(
        self, inbox: Inbox, path: Path, file: ReadyFile, ctx: ConnectorContext, zone: tzinfo
    ) -> None:
        self.source = file.name
        self._inbox, self._path, self._file, self._ctx, self._zone = inbox, path, file, ctx, zone
        self.settled = False

    def commit(self) -> None:
        """The batch is stored: move the file to ``processed/`` (back to the inbox if it grew
        since it was read, see :meth:`Inbox.settle`)."""
        target, grew = self._inbox.settle(self._path, self._file)
        self.settled = True
        if grew is not None:
            self._ctx.log.warning("%s", grew)
            return
        self._ctx.log.info("processed %s%s, kept as %s", self.label, self.source, target)

    def reject(self, error: BatchRejected) -> None:
        """Move the file to ``rejected/`` with ``<file>.errors.txt`` listing every error."""
        target = self._inbox.reject(self._path, self.source, error)
        self.settled = True
        self._ctx.log.warning(
            "rejected %s%s (%d errors), see %s.errors.txt",
            self.label,
            self.source,
            len(error.errors),
            target,
        )
