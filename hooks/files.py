"""Files nebridge writes: created new (``O_EXCL|O_NOFOLLOW``) beside the target, then renamed.

Every file nebridge writes goes through :func:`write_file` (error reports, WMS instruction
files) or :func:`write_private` (secrets, mode 0600): the data goes into a new temporary file
with a random name in the target's own folder, created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` so a
file or symlink planted there is never opened or followed, is fsynced, and is renamed over the
target (a rename replaces a symlink at the target itself, never what it points to). Readers
see the old content or the whole new one; temporary files a crash left for the same target are
removed after the next write of it. :func:`locked_file` serialises writers across
processes.

Run as root (``sudo nebridge doctor``, ``sudo nebridge connect``), a private file or folder
nebridge creates takes the owner and group of the file it replaces or, if new, of its folder:
root must never take over a service user's state (the daemon could no longer write its tokens).
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

#: Flags of every file nebridge creates: new, never through a symlink, closed on exec.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_TAIL = re.compile(r"\.[0-9a-f]{16}\.tmp")


def write_file(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Replace ``path`` with ``data`` atomically; ``mode`` is filtered by the umask.

    The folder must exist: a file is only ever written into its own, existing folder.
    """
    _replace(path, data, mode, exact_mode=False)


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` and each missing parent 0700 (``mkdir(parents=True)`` would give the
    parents the umask's mode, and a state folder open to others stops the daemon)."""
    missing = []
    for level in (folder, *folder.parents):
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        with suppress(FileExistsError):  # another process made it meanwhile
            level.mkdir(mode=0o700)
            _adopt_owner(level, level.parent)
    if not folder.is_dir():
        folder.mkdir()  # raises the error that says why it is not a folder


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, mode 0600 whatever the umask.

    The folder is created (0700) if missing.
    """
    make_private_folder(path.parent)
    _replace(path, data, 0o600, exact_mode=True)


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """Open ``path`` (created 0600 if missing, never through a symlink); the caller closes
    the descriptor. The folder is created (0700) if missing."""
    make_private_folder(path.parent)
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _adopt_owner(fd, path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _adopt_owner(target: int | Path, *like: Path) -> None:
    """Run as root, give ``target`` (a descriptor or a path) the owner and group of the first
    of ``like`` that is not root's, if ``target`` is root's: what root writes in a service
    user's folder stays the user's (and a file root took over earlier goes back to it)."""
    if os.geteuid() != 0:
        return
    mine = os.fstat(target) if isinstance(target, int) else os.lstat(target)
    if (mine.st_uid, mine.st_gid) != (0, 0):
        return
    for candidate in like:
        try:
            owner = os.stat(candidate, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if (owner.st_uid, owner.st_gid) == (0, 0):
            continue
        if isinstance(target, int):
            os.fchown(target, owner.st_uid, owner.st_gid)
        else:
            os.chown(target, owner.st_uid, owner.st_gid, follow_symlinks=False)
        return


def _replace(path: Path, data: bytes, mode: int, exact_mode: bool) -> None:
    """A new hidden temp file beside ``path`` (fsync), renamed over it, folder fsynced."""
    directory = path.parent
    stem = _temp_stem(path)
    tmp = directory / f".{stem}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, CREATE_FLAGS, mode)
    try:
        try:
            if exact_mode:
                os.fchmod(fd, mode)  # umask may have removed bits; never added any
                _adopt_owner(fd, path, directory)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    for stale in directory.glob(f".{glob.escape(stem)}.*.tmp"):  # left by a crash mid-write
        if _TEMP_TAIL.fullmatch(stale.name[len(stem) + 1 :]):
            with suppress(FileNotFoundError):
                os.unlink(stale)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _temp_stem(path: Path) -> str:
    """The target's name cut to 200 bytes, so the temporary name fits in a file name."""
    return path.name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore")


@contextmanager
def locked_file(lock_path: Path) -> Iterator[None]:
    """``flock`` ``lock_path`` (0600) exclusively for the block; waits for other processes."""
    fd = open_private(lock_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
