"""The ``nebridge`` admin CLI (Typer). Commands are thin: they call daemon service functions.

Exit codes: 0 ok, 1 operational failure, 2 usage error. Errors go to stderr and say what to
do next. Every listing accepts ``--json``.

The rule for command modules (why: ``nebridge --help``, Tab completion and ``status`` must
answer at once, issue #18): this file imports no command module. Each command is one line
of :data:`COMMANDS` — its name, ``"module:attribute"`` (a ``typer.Typer`` sub-app or a
command function) and its one-line help — and its module is imported only when that command
runs or its own help is shown. A new command adds a line there, never an import here. Inside
a command module, import what only some commands need (SQLAlchemy, the sandboxes, requests,
apscheduler) inside those command functions. ``tests/test_cli_startup.py`` fails when
``nebridge --help`` imports a heavy module, and when a line's help differs from the command's.

Plugins add commands through the ``nebridge_cli_commands`` hook (:mod:`hooks.surface`). A
name that is not in :data:`COMMANDS` is looked up in the plugins ``daemon.yaml`` enables —
only then are the configuration read and the plugins loaded — so ``--help`` lists the core
commands and says how to list the plugins' (``nebridge plugins commands``). A plugin never
takes a core command's name.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer
import typer.main
from typer._click.exceptions import UsageError
from typer._click.utils import make_default_short_help
from typer.models import CommandInfo, TyperInfo

from daemon.cli import common


class Entry(NamedTuple):
    """One command of the root: where it lives and its help line for ``nebridge --help``."""

    target: str  # "daemon.cli.module:attribute" (a typer.Typer sub-app or a function)
    help: str  # the first sentence of the command's help (a test keeps them equal)


#: Every command of ``nebridge``, in the order ``--help`` lists them.
COMMANDS: dict[str, Entry] = {
    "run": Entry(
        "daemon.cli.run:run",
        "Run the daemon in the foreground (no fork, no pidfile), or one pass with --once.",
    ),
    "status": Entry(
        "daemon.cli.status:status",
        "Show plugins, last runs per warehouse and stage, backlog, and what waits for a person.",
    ),
    "attention": Entry(
        "daemon.cli.attention:attention_cmd",
        "List what waits for a person, newest first, with the reason and the fix for each.",
    ),
    "demo": Entry(
        "daemon.cli.demo:demo",
        "Run nebridge end to end against the Next Engine sandbox and check the result.",
    ),
    "doctor": Entry(
        "daemon.cli.doctor:doctor",
        "Config, database, plugins, paused stages, Next Engine link, tokens, WMS folders, clock.",
    ),
    "history": Entry(
        "daemon.cli.history:history",
        "Show what happened to one order, "
        "shipment, receipt or goods' stock corrections, from arrival (or "
        "decision) to Next Engine.",
    ),
    "connect": Entry(
        "daemon.cli.link:connect_cmd",
        "Link a Next Engine company: sign in, receive uid/state, exchange them for tokens.",
    ),
    "unlink": Entry(
        "daemon.cli.link:unlink_cmd",
        "Remove ALL Next Engine integration (連携を解除する); unfinished work is exported first.",
    ),
    "companies": Entry(
        "daemon.cli.companies:app", "Fleet mode: the companies, who serves each, the vault key."
    ),
    "config": Entry("daemon.cli.config_cmd:app", "Check the configuration."),
    "db": Entry("daemon.cli.db:app", "Database migrations."),
    "plugins": Entry("daemon.cli.plugins:app", "Feature plugins and WMS connectors."),
    "warehouses": Entry(
        "daemon.cli.warehouses:app", "Warehouses (拠点) and their Next Engine link."
    ),
    "sandbox": Entry(
        "daemon.cli.sandbox:app", "Local sandboxes: Next Engine's, and those plugins offer."
    ),
    "inbox": Entry("daemon.cli.inbox:app", "WMS input: accepted, pending, held and rejected."),
    "outbox": Entry("daemon.cli.outbox:app", "Next Engine actions: list, retry, resolve."),
    "orders": Entry(
        "daemon.cli.orders:app",
        "Imported and held Next Engine orders: list, "
        "retry, drop; orders changed after import: stopped, shipped-anyway.",
    ),
    "wms": Entry(
        "daemon.cli.wms:app", "Authorise nebridge in the WMS (connectors with an API sign-in)."
    ),
    "stock": Entry(
        "daemon.cli.stock:app", "Stock drift: compare Next Engine with the warehouses, correct it."
    ),
    "systemd": Entry("daemon.cli.systemd_cmd:app", "systemd integration."),
    "notify": Entry(
        "daemon.cli.notify:app", "Notifications: send a test message, list what was sent."
    ),
}


class LazyGroup(common.CliGroup):
    """The root command: builds a subcommand from :data:`COMMANDS` only when it is used."""

    def list_commands(self, ctx: Any) -> list[str]:
        """Every command name, in :data:`COMMANDS` order (nothing imported)."""
        return list(COMMANDS)

    #: Why the last name that is no core command was not found among the plugins either.
    plugin_note = ""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """Import the command's module and build its click command; a name that is no core
        command is looked up in the enabled plugins (None if unknown)."""
        if cmd_name not in self.commands:
            entry = COMMANDS.get(cmd_name)
            command = (
                load_command(cmd_name, entry)
                if entry is not None
                else self._plugin_command(ctx, cmd_name)
            )
            if command is None:
                return None
            self.commands[cmd_name] = command
        return self.commands[cmd_name]

    def _plugin_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command ``cmd_name`` of an enabled plugin (daemon.yaml read and plugins
        loaded only now), or None with :attr:`plugin_note` saying why."""
        if ctx.resilient_parsing:  # Tab completion: never load plugins for a keystroke
            return None
        from daemon.config import ConfigError, config_path_from, load_config
        from daemon.surface import command_host, plugin_commands

        try:
            loaded = load_config(config_path_from(ctx.params.get("config")))
        except ConfigError as exc:
            self.plugin_note = (
                f"(plugin commands were not looked up: {exc.source} cannot be "
                "used; `nebridge config check` says why, or pass --config PATH)"
            )
            return None
        host = command_host(loaded)
        offers = plugin_commands(host, loaded.path, COMMANDS)
        found = offers.commands
        refused = [row for row in offers.refused if row["name"] == cmd_name]
        if refused and cmd_name not in found:
            self.plugin_note = (
                f"(plugin {refused[0]['plugin']} offers it, refused: {refused[0]['reason']})"
            )
            return None
        if cmd_name not in found:
            failed = ", ".join(record.name for record in host.failed() if record.enabled)
            self.plugin_note = (
                "(no enabled plugin offers it either: `nebridge plugins "
                "commands` lists the plugins' commands"
                + (f"; not loaded: {failed}, see `nebridge plugins list`)" if failed else ")")
            )
            return None
        plugin, offered = found[cmd_name]
        return guarded(build_command(cmd_name, offered.app), plugin)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """As click's, with why a plugin command was not found added to "No such command"."""
        self.plugin_note = ""
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            if self.plugin_note and exc.message.startswith("No such command"):
                exc.message = f"{exc.message} {self.plugin_note}"
            raise

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The ``Commands:`` section of ``--help`` from the help lines, importing nothing."""
        width = formatter.width - 6 - max(len(name) for name in COMMANDS)
        with formatter.section("Commands"):
            formatter.write_dl(
                [
                    (name, make_default_short_help(entry.help, width))
                    for name, entry in COMMANDS.items()
                ]
            )
        with formatter.section("Commands of plugins"):
            formatter.write_text(PLUGIN_COMMANDS_HELP)


#: The line ``nebridge --help`` shows instead of the plugins' commands (listing them would
#: load the configuration and every enabled plugin).
PLUGIN_COMMANDS_HELP = "Enabled plugins may add commands: `nebridge plugins commands` lists them."


def plugin_failure(plugin: str, what: str, exc: BaseException) -> str:
    """One line for an exception out of plugin code (secrets redacted), with what to do."""
    from daemon.logsetup import redact

    return (
        f"plugin {plugin}'s {what} failed: {type(exc).__name__}: {redact(str(exc))} "
        f"(a fault of the plugin: report it to its authors with the command run; "
        f"`nebridge plugins disable {plugin}` turns it off)"
    )


def guarded(command: Any, plugin: str) -> Any:
    """``command`` (a plugin's) whose exception is one ``error:`` line naming the plugin
    and exit 1, not a traceback; click's own exits and usage errors pass through."""
    from typer.exceptions import Abort, Exit, TyperException

    from daemon.cli.common import fail

    invoke = command.invoke

    def invoke_guarded(ctx: Any) -> Any:
        try:
            return invoke(ctx)
        except (Exit, Abort, TyperException):  # its own exit, usage error, Ctrl-C
            raise
        except Exception as exc:
            fail(plugin_failure(plugin, "command", exc))

    command.invoke = invoke_guarded
    return command


def load_command(name: str, entry: Entry) -> Any:
    """The click command of ``entry``, built as ``app.add_typer`` / ``app.command`` would."""
    module_name, attribute = entry.target.split(":")
    return build_command(name, getattr(importlib.import_module(module_name), attribute))


def build_command(name: str, target: Any) -> Any:
    """The click command named ``name`` of a ``typer.Typer`` (a group) or a function."""
    if isinstance(target, typer.Typer):
        return typer.main.get_group_from_info(
            TyperInfo(target, name=name),
            pretty_exceptions_short=app.pretty_exceptions_short,
            suggest_commands=app.suggest_commands,
            rich_markup_mode=app.rich_markup_mode,
        )
    return typer.main.get_command_from_info(
        CommandInfo(name=name, callback=target),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
    )


app = typer.Typer(
    name="nebridge",
    help="Link a warehouse management system (WMS) to Next Engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,  # plain help, like git and systemctl: no <bool>, no boxes
    cls=LazyGroup,
)


def _version(value: bool) -> None:
    if value:
        from daemon import __version__

        typer.echo(f"nebridge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="daemon.yaml to use (env NEBRIDGE_CONFIG; default ./daemon.yaml)",
            show_default=False,
        ),
    ] = None,
    company: Annotated[
        str | None,
        typer.Option(
            "--company",
            metavar="CODE",
            help="The company a per-company command "
            "works on, in fleet mode (env NEBRIDGE_COMPANY; `nebridge companies "
            "list` shows the codes)",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """nebridge: WMS ⇄ Next Engine integration daemon."""
    ctx.obj = common.AppContext.create(config, company)


def main() -> None:
    """Console-script entry point."""
    app()
