"""The README's CLI reference names every command and every visible option it takes.

The commands are read from the real CLI (each core command's click command, as ``nebridge``
builds it), the table from README.md; a new option without its row fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import typer.core
import typer.main
from typer._click.core import Command, Context

from daemon.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def leaf_commands(
    group: typer.core.TyperGroup, ctx: Context, path: str
) -> Iterator[tuple[str, Command]]:
    """Every runnable command under ``group`` with its path (``"sandbox serve"``)."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        full = f"{path} {name}".strip()
        if isinstance(command, typer.core.TyperGroup):
            yield from leaf_commands(command, ctx, full)
        else:
            yield full, command


def table_rows() -> dict[str, str]:
    """The first cell of every CLI table row, by each command path it names (``a\\|b``
    spelled out: ``plugins enable\\|disable`` is ``plugins enable`` and ``plugins disable``)."""
    rows: dict[str, str] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `nebridge "):
            continue
        first = line.split(" | ")[0]
        for found in re.finditer(r"`nebridge ([^`]*)`", first):
            usage = found.group(1).replace("\\|", "|")
            words = []
            for word in usage.split():
                if not re.fullmatch(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*", word):
                    break
                words.append(word.split("|"))
            paths = [""]
            for alternatives in words:
                paths = [f"{p} {w}".strip() for p in paths for w in alternatives]
            for path in paths:
                rows[path] = f"{rows.get(path, '')} {usage}"
    return rows


def test_the_cli_table_names_every_command_and_option() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    rows = table_rows()
    missing = []
    for path, command in leaf_commands(root, Context(root), ""):
        if path not in rows:
            missing.append(f"no row for `nebridge {path}`")
            continue
        for param in command.params:
            if not isinstance(param, typer.core.TyperOption) or param.hidden:
                continue
            names = [o for o in param.opts if o.startswith("--")]
            if names and not any(re.search(rf"{re.escape(o)}(?![\w-])", rows[path]) for o in names):
                missing.append(f"`nebridge {path}` row lacks {names[0]}")
    assert missing == []
