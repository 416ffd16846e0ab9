"""Editing ``daemon.yaml`` in place: comments and key order kept, written atomically."""

from __future__ import annotations

import io
import os
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


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, keeping the file's mode."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
