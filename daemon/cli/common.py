"""Shared CLI plumbing: the context object, output helpers and error exits.

Imported by ``nebridge --help`` (for :class:`CliGroup`), so it imports nothing heavy at
module level: rich, the configuration (pydantic) and the store are imported by the functions
that use them (see the rule in ``daemon/cli/__init__.py``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
import typer.core

if TYPE_CHECKING:
    from rich.console import Console

    from daemon.config import LoadedConfig


@cache
def err_console() -> Console:
    """The rich console on stderr (made on first use: rich is not imported by ``--help``)."""
    from rich.console import Console
    return Console(stderr=True)


@dataclass
class AppContext:
    """What every command gets: where the configuration lives."""

    config_path: Path

    @classmethod
    def create(cls, option: Path | None) -> AppContext:
        """Resolve ``--config`` / ``$NEBRIDGE_CONFIG`` / ``./daemon.yaml``."""
        from daemon.config import config_path_from
        return cls(config_path=config_path_from(option))

    def load(self) -> LoadedConfig:
        """Load the configuration or exit 1 with every problem listed."""
        from daemon.config import ConfigError, load_config
        from daemon.logsetup import configure_logging
        try:
            loaded = load_config(self.config_path)
        except ConfigError as exc:
            fail(str(exc))
        configure_logging(loaded.config.log_level)
        return loaded


def get(ctx: typer.Context) -> AppContext:
    """The AppContext of the running command."""
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    _json_requested[-1] = bool(ctx.params.get("as_json"))
    return obj


class CliGroup(typer.core.TyperGroup):
    """The root command: a database that cannot be used, or a path the user may not write, ends
    any command with one line.

    Every command reaches the database through :func:`daemon.store.engine.make_engine`,
    whose errors already say where (host, port, database — never the password) and what to
    do; here they become that one line on stderr and exit 1 instead of a traceback.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Take the global ``--config PATH`` anywhere on the line, as git takes ``-C``:
        ``nebridge run --once --config x.yaml`` works like ``nebridge --config x.yaml run
        --once``."""
        _json_requested[-1] = "--json" in args[:args.index("--")] if "--" in args else (
            "--json" in args)  # until the command itself says (see get)
        return list(super().parse_args(ctx, hoist_config(args)))

    def invoke(self, ctx: Any) -> Any:  # a click context (typer vendors click)
        """Run the command; turn database errors into :func:`fail`."""
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:  # a usage error of a --json command: JSON too
            if wants_json():
                print_json({"error": exc.format_message(), "exit_code": exc.exit_code})
            raise
        except OSError as exc:
            if exc.filename is None:  # not about a path (a socket, a pipe): not ours to word
                raise
            # e.g. state_dir not created yet and the service user may not create it
            fail(f"cannot use {exc.filename}: {exc.strerror or exc}; run the command as a user "
                 "who may write there (the service user, or with sudo), or create the folder "
                 "for it first: `sudo install -d -o nebridge -g nebridge -m 0700 FOLDER`")
        except Exception as exc:
            store = sys.modules.get("daemon.store.engine")  # not imported: not raised
            if store is not None and isinstance(
                    exc, (store.DatabaseUnavailable, store.DatabaseNotMigrated)):
                fail(str(exc))
            raise


#: The global option every subcommand accepts wherever it is written.
CONFIG_FLAGS = ("--config", "-c")


def hoist_config(args: list[str]) -> list[str]:
    """``args`` with every ``--config PATH`` / ``--config=PATH`` / ``-c PATH`` moved to the
    front (before the subcommand); nothing after ``--`` is touched."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in CONFIG_FLAGS and i + 1 < len(args):
            front += args[i:i + 2]
            i += 2
            continue
        (front if arg.startswith("--config=") else rest).append(arg)
        i += 1
    return front + rest


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error to stderr and exit with ``code``.

    A command run with ``--json`` also gets the error as JSON on stdout
    (``{"error": message, "exit_code": code}``), so a script never parses an empty answer.
    """
    if wants_json():
        print_json({"error": message, "exit_code": code})
    from rich.markup import escape
    err_console().print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                        markup=True, soft_wrap=True)
    raise typer.Exit(code)


def wants_json() -> bool:
    """Whether the running command was given ``--json`` (its ``as_json`` parameter)."""
    return _json_requested[-1]


#: Set by :func:`get` from the running command's ``--json`` (the newest command wins).
_json_requested = [False]


def print_json(data: Any) -> None:
    """Machine output: JSON on stdout, unchanged by terminal detection."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Human output: a rich table (plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def info(message: str) -> None:
    """A human progress/info line on stderr (keeps stdout clean for --json); never wrapped,
    so the commands it names stay copyable."""
    err_console().print(message, highlight=False, markup=False, soft_wrap=True)


# -- one output style for every command (human output; --json keeps raw values) -------------


#: The largest ``--limit`` any listing takes (a bigger number is a usage error, exit 2).
LIMIT_MAX = 100_000


def limit_option(help_text: str) -> Any:
    """The ``--limit N`` option of a listing: 1 to :data:`LIMIT_MAX`, else a usage error."""
    return typer.Option("--limit", metavar="N", callback=_check_limit,
                        help=f"{help_text.rstrip('.')} (1-{LIMIT_MAX}).")


def _check_limit(value: int) -> int:
    """Refuse a limit outside 1 to :data:`LIMIT_MAX` in plain words (exit 2)."""
    if not 1 <= value <= LIMIT_MAX:
        raise typer.BadParameter(f"{value} is not between 1 and {LIMIT_MAX}")
    return value


def yes_no(value: bool | None) -> str:
    """The one boolean style of human output: ``yes`` / ``no`` (``-`` when unknown)."""
    return "-" if value is None else "yes" if value else "no"


def display_zone(loaded: LoadedConfig | None = None) -> tzinfo | None:
    """The zone times are shown in: ``timezone`` of ``daemon.yaml``, else the system's."""
    from zoneinfo import ZoneInfo
    name = loaded.config.timezone if loaded is not None else None
    return ZoneInfo(name) if name else None


def when(moment: datetime | str | None, zone: tzinfo | None = None) -> str:
    """A moment (or its ISO 8601 text) as ISO 8601 with its offset, to the second, in
    ``zone`` (default: the system's zone): ``2026-12-03T20:43:02+09:00``; ``-`` for none.
    Naive values are UTC, as everything nebridge stores."""
    if moment is None or moment == "":
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).isoformat(timespec="seconds")

