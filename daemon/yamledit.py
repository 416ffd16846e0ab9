"""Editing ``daemon.yaml`` in place: comments and key order kept, written atomically."""

from __future__ import annotations

import io
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def dump(raw: CommentedMap) -> str:
    """Render a round-trip document back to text."""
    buf = io.StringIO()
    _yaml().dump(raw, buf)
    return buf.getvalue()


def set_plugin_enabled(raw: CommentedMap, name: str, enabled: bool) -> None:
    """Set ``plugins.<name>.enabled``, creating the sections if needed."""
    plugins = raw.get("plugins")
    if not isinstance(plugins, CommentedMap):
        plugins = CommentedMap()
        raw["plugins"] = plugins
    section = plugins.get(name)
    if not isinstance(section, CommentedMap):
        section = CommentedMap()
        plugins[name] = section
    section["enabled"] = enabled


def set_warehouse_field(raw: CommentedMap, code: str, key: str, value: Any) -> bool:
    """Set ``warehouses[i].<key>`` for the warehouse ``code``; False if there is none."""
    for entry in raw.get("warehouses") or []:
        if isinstance(entry, CommentedMap) and str(entry.get("code")) == code:
            entry[key] = value
            return True
    return False


class ConfigNotWritable(OSError):
    """``daemon.yaml`` cannot be replaced as it is (owner, group, folder); says what to do."""


def write_atomically(path: Path, text: str) -> None:
    """Replace the file ``path`` names with ``text`` in one rename, keeping what it is.

    A symbolic link is followed and its target edited (the link stays a link); the new file
    keeps the old one's owner, group and mode. When they cannot be kept (a user who may not
    give the file its group), nothing is written and :class:`ConfigNotWritable` says so.
    """
    target = Path(os.path.realpath(path))
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except PermissionError:
        raise ConfigNotWritable(
            f"cannot write in {target.parent} (the folder of {target}); "
            "run the command with sudo, or as the file's owner"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if old is not None:
                _keep_owner(handle.fileno(), target, old)
            os.fchmod(handle.fileno(), stat.S_IMODE(old.st_mode) if old else 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _keep_owner(fd: int, target: Path, old: os.stat_result) -> None:
    """Give the new file the old one's owner and group, or refuse to replace it."""
    if (old.st_uid, old.st_gid) == (os.geteuid(), os.getegid()):
        return
    try:
        os.fchown(fd, old.st_uid, old.st_gid)
    except PermissionError:
        raise ConfigNotWritable(
            f"{target} belongs to uid {old.st_uid} and gid {old.st_gid}; editing it as this "
            "user would change that, so it was left as it is: run the command with sudo, or "
            "as the file's owner"
        ) from None
