"""The CLI answers at once (issue #18): ``nebridge --help`` imports no heavy module, and
``plugins list`` and ``status`` import only what they use.

A structural check, not a timing: a fresh interpreter runs the command and reports which
modules it imported. The lazy command table of ``daemon/cli/__init__.py`` must stay
equal to the commands it loads (names and help lines).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer._click.utils import make_default_short_help
from typer.testing import CliRunner

import daemon.cli
from daemon.cli import COMMANDS, app, load_command

#: Top-level packages ``nebridge --help`` must not import: each costs tens of milliseconds
#: or more, and only some commands need them.
HEAVY = (
    "sqlalchemy",
    "sqlmodel",
    "pydantic",
    "rich",
    "requests",
    "apscheduler",
    "ruamel",
    "pluggy",
    "alembic",
    "psycopg",
    "plugins",
    "hooks",
    "daemon.config",
    "daemon.store",
    "daemon.admin",
    "daemon.nextengine",
    "importlib.metadata",
)

ROOT = Path(__file__).resolve().parents[1]


#: What ``plugins list`` must not import: it needs ``daemon.yaml`` and the plugins, not the
#: store (SQLAlchemy, the models), the engine, the Next Engine client or migrations.
NOT_FOR_PLUGINS_LIST = (
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "psycopg",
    "apscheduler",
    "daemon.store",
    "daemon.admin",
    "daemon.status",
    "daemon.runtime",
    "daemon.nextengine",
    "daemon.attention",
    "daemon.inbox",
    "daemon.outbox",
    "daemon.pipeline",
    "daemon.dispatch",
    "daemon.importer",
    "daemon.sandbox",
)

#: What ``status`` must not import: it loads the plugins and reads the default SQLite file
#: with plain SQL (:mod:`daemon.store.reads`), so neither SQLAlchemy, SQLModel nor the table
#: models (half a second before the first query); nor the engine that runs passes, the Next
#: Engine client (and requests) or the migration tool.
NOT_FOR_STATUS = (
    "sqlalchemy",
    "sqlmodel",
    "psycopg",
    "daemon.store.models",
    "daemon.store.engine",
    "daemon.attention",
    "daemon.nelink",
    "daemon.tokenguard",
    "daemon.notify",
    "daemon.outbox",
    "daemon.orderwatch",
    "alembic",
    "apscheduler",
    "requests",
    "daemon.admin",
    "daemon.runtime",
    "daemon.nextengine.client",
    "daemon.inbox",
    "daemon.pipeline",
    "daemon.dispatch",
    "daemon.importer",
    "daemon.sandbox",
    "daemon.scheduler",
    "daemon.supervisor",
)


def _modules_after(*args: str) -> set[str]:
    """The modules a fresh ``nebridge ARGS`` has imported when it exits."""
    script = (
        "import sys, json, atexit\n"
        "atexit.register(lambda: sys.__stderr__.write('\\nMODULES ' + "
        "json.dumps(sorted(sys.modules)) + '\\n'))\n"
        "sys.argv = ['nebridge', *sys.argv[1:]]\n"
        "from daemon.cli import main\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode in (0, 2), result.stderr  # bare `nebridge`: help, usage exit
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def _heavy(modules: set[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy))


@pytest.mark.parametrize("args", [("--help",), (), ("--version",), ("plugins", "--help")])
def test_help_imports_no_heavy_module(args: tuple[str, ...]) -> None:
    """``--help``, bare ``nebridge`` (help, exit 2), ``--version``; a group's help loads that
    group's module only."""
    modules = _modules_after(*args)
    expected_cli = {"daemon.cli", "daemon.cli.common"} | (
        {"daemon.cli.plugins"} if args[:1] == ("plugins",) else set()
    )
    assert {m for m in modules if m.startswith("daemon.cli")} == expected_cli
    if args[:1] != ("plugins",):  # --version reads the installed metadata, nothing else
        allowed = {"importlib.metadata"} if args == ("--version",) else set()
        assert [m for m in _heavy(modules) if m.split("._")[0] not in allowed] == []


def test_the_check_sees_a_heavy_import() -> None:
    """The check can fail: a command that runs loads its module and what it needs."""
    modules = _modules_after("plugins", "--help")
    assert "daemon.cli.plugins" in modules and _heavy(modules)


def test_every_command_line_matches_the_command_it_loads() -> None:
    for name, entry in COMMANDS.items():
        command = load_command(name, entry)
        assert command.name == name
        assert make_default_short_help(entry.help, 300) == command.get_short_help_str(300), (
            f"{name}: the help line in daemon/cli/__init__.py COMMANDS differs from the "
            "command's own help; copy the command's first sentence there"
        )


def test_every_command_module_is_in_the_table() -> None:
    """A command module nobody lists would be unreachable."""
    listed = {entry.target.split(":")[0] for entry in COMMANDS.values()}
    modules = {
        f"daemon.cli.{p.stem}"
        for p in Path(daemon.cli.__file__).parent.glob("*.py")
        if p.stem not in ("__init__", "common")
    }
    assert modules - listed == set()


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == 2 and "No such command" in result.output


@pytest.fixture(scope="module")
def migrated_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's ``daemon.yaml`` in a folder of its own, on a migrated SQLite file."""
    folder = tmp_path_factory.mktemp("cli-startup")
    config = folder / "daemon.yaml"
    config.write_text((ROOT / "daemon.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(config), "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return config


@pytest.mark.parametrize(
    ("args", "not_imported"),
    [
        (("plugins", "list"), NOT_FOR_PLUGINS_LIST),
        (("status",), NOT_FOR_STATUS),
    ],
)
def test_read_commands_import_only_what_they_use(
    migrated_config: Path, args: tuple[str, ...], not_imported: tuple[str, ...]
) -> None:
    """``plugins list`` and ``status`` run (their answer is there) without the listed
    modules; the lists fail when a module-level import pulls the engine back in."""
    modules = _modules_after("--config", str(migrated_config), *args)
    assert "daemon.config" in modules and "daemon.pluginmanager" in modules  # they ran
    assert _heavy(modules, not_imported) == []
