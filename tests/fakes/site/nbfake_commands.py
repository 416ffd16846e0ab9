"""A third-party plugin that adds CLI commands: one command, one group, one that raises, one
named like a core command and several badly named (refused); and a sandbox that raises."""

from pathlib import Path

import typer
from pydantic import BaseModel, ConfigDict

from hooks import hookimpl
from hooks.records import PluginInfo
from hooks.surface import CliCommand, SandboxRequest, SandboxSpec


class CommandsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hello"


@hookimpl
def nebridge_plugin_info():
    return PluginInfo(name="fake_commands", summary="adds commands", config_model=CommandsConfig)


@hookimpl
def nebridge_cli_commands(options, config_path: Path):
    def hello(name: str = typer.Option("world", help="Whom to greet.")) -> None:
        """Greet someone with the configured greeting."""
        typer.echo(f"{options.greeting} {name} (config {config_path.name})")

    tools = typer.Typer(help="Fake tools.", no_args_is_help=True)

    @tools.command("count")
    def count(n: int) -> None:
        """Count to N."""
        typer.echo(" ".join(str(i) for i in range(1, n + 1)))

    def run() -> None:
        """A command that must never replace the core `run`."""
        typer.echo("FAKE RUN")

    def explode() -> None:
        """A command whose code breaks."""
        raise RuntimeError("the spreadsheet is gone")

    def noop() -> None:
        """Never mounted: a name no command may have."""

    return [
        CliCommand("hello", hello, "Greet someone with the configured greeting."),
        CliCommand("fake-tools", tools, "Fake tools."),
        CliCommand("run", run, "Shadow the core run command."),
        CliCommand("explode", explode, "Break."),
        *(
            CliCommand(name, noop, "Badly named.")
            for name in ("", "Status", "status ", "companies\u200b", "-c", "--help")
        ),
    ]


@hookimpl
def nebridge_sandboxes():
    def serve(request: SandboxRequest) -> None:
        raise ValueError("no seed file here")

    return [SandboxSpec("broken-box", "A sandbox whose code breaks.", serve, 0, 1)]
