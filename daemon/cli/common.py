"""Shared CLI plumbing: the context object, output helpers and error exits."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
import typer.core
from rich.console import Console
from rich.table import Table

from daemon.config import ConfigError, LoadedConfig, config_path_from, load_config
from daemon.logsetup import configure_logging
from daemon.store.engine import DatabaseNotMigrated, DatabaseUnavailable

err_console = Console(stderr=True)


@dataclass
class AppContext:
    """What every command gets: where the configuration lives."""

    config_path: Path

    @classmethod
    def create(cls, option: Path | None) -> AppContext:
        """Resolve ``--config`` / ``$NEBRIDGE_CONFIG`` / ``./daemon.yaml``."""
        return cls(config_path=config_path_from(option))

    def load(self) -> LoadedConfig:
        """Load the configuration or exit 1 with every problem listed."""
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
    return obj


class CliGroup(typer.core.TyperGroup):
    """The root command: a database that cannot be used ends any command with one line.

    Every command reaches the database through :func:`daemon.store.engine.make_engine`,
    whose errors already say where (host, port, database — never the password) and what to
    do; here they become that one line on stderr and exit 1 instead of a traceback.
    """

    def invoke(self, ctx: Any) -> Any:  # a click context (typer vendors click)
        """Run the command; turn database errors into :func:`fail`."""
        try:
            return super().invoke(ctx)
        except (DatabaseUnavailable, DatabaseNotMigrated) as exc:
            fail(str(exc))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True,
                      soft_wrap=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """Machine output: JSON on stdout, unchanged by terminal detection."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Human output: a rich table (plain text when not a terminal)."""
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
    """A human progress/info line on stderr (keeps stdout clean for --json)."""
    err_console.print(message, highlight=False, markup=False)

