"""Shared CLI plumbing: the context object, output helpers and error exits."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from daemon.config import ConfigError, LoadedConfig, config_path_from, load_config
from daemon.logsetup import configure_logging

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

