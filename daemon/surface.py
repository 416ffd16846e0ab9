"""The engine's side of what plugins add to the surface (``hooks/surface.py``): the
commands mounted in ``nebridge``, the sandboxes of ``nebridge sandbox serve``, the demos of
``nebridge demo --wms`` and the connector handed to ``doctor``'s health checks.

Plugins are loaded here only for the command that needs them, never by ``nebridge --help``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.config import DaemonConfig, LoadedConfig
from daemon.pluginload import resolve_relative_paths
from daemon.pluginmanager import (
    CONNECTOR_PREFIX,
    PluginHost,
    connector_plugin_name,
    discover_entry_points,
    validate_section,
)
from hooks.surface import CliCommand, ConnectorInUse, DemoSpec, SandboxSpec

log = logging.getLogger(__name__)

#: What a plugin command may be called: ASCII, lower case, no option-like or blank names.
COMMAND_NAME = re.compile(r"[a-z][a-z0-9-]*")


@dataclass
class PluginCommands:
    """The commands plugins offer: name → (plugin, command), and those refused, each with
    the reason (a core name, another plugin's name, not a command)."""

    commands: dict[str, tuple[str, CliCommand]] = field(default_factory=dict)
    refused: list[dict[str, str]] = field(default_factory=list)

    def as_rows(self) -> list[dict[str, str]]:
        """One row per offered command, mounted or refused (``plugins commands --json``)."""
        rows = [
            {"name": name, "plugin": plugin, "help": command.help, "state": "mounted", "reason": ""}
            for name, (plugin, command) in self.commands.items()
        ]
        return rows + self.refused


def command_host(loaded: LoadedConfig) -> PluginHost:
    """The enabled plugins (and the connector's), their options validated, paths resolved."""
    host = PluginHost()
    host.load(loaded.config)
    host.validate(loaded)
    base = loaded.path.resolve().parent
    for record in host.records.values():
        record.options = resolve_relative_paths(record.options, base)
    return host


def plugin_commands(
    host: PluginHost, config_path: Path, core_names: Iterable[str]
) -> PluginCommands:
    """Every command the loaded plugins offer; one named like a core command, or like an
    earlier plugin's, is refused (the first keeps the name)."""
    core = set(core_names)
    found = PluginCommands()
    for outcome in host.cli_commands(config_path):
        if outcome.error is not None:
            found.refused.append(
                _refusal(
                    "",
                    outcome.plugin,
                    "",
                    "nebridge_cli_commands raised "
                    f"{outcome.error!r}; report it to the plugin's "
                    "authors or disable the plugin",
                )
            )
            continue
        offered: Iterable[object] = outcome.result or ()  # what a plugin returns is checked
        for command in offered:
            if not isinstance(command, CliCommand):
                found.refused.append(
                    _refusal(
                        "",
                        outcome.plugin,
                        "",
                        f"returned {type(command).__name__}, not a CliCommand",
                    )
                )
            elif not isinstance(command.name, str) or not COMMAND_NAME.fullmatch(command.name):
                found.refused.append(
                    _refusal(
                        str(command.name),
                        outcome.plugin,
                        command.help,
                        f"{command.name!r} is not a command name: use lower-case ASCII letters, "
                        "digits and '-', starting with a letter (like `my-report`); the plugin "
                        "must rename its command",
                    )
                )
            elif command.name in core:
                found.refused.append(
                    _refusal(
                        command.name,
                        outcome.plugin,
                        command.help,
                        f"`nebridge {command.name}` is a core command; the plugin must give its "
                        "command another name",
                    )
                )
            elif command.name in found.commands:
                first = found.commands[command.name][0]
                found.refused.append(
                    _refusal(
                        command.name,
                        outcome.plugin,
                        command.help,
                        f"plugin {first} offers `nebridge {command.name}` already; disable one "
                        "of the two plugins, or have one rename its command",
                    )
                )
            else:
                found.commands[command.name] = (outcome.plugin, command)
    return found


def _refusal(name: str, plugin: str, help_text: str, reason: str) -> dict[str, str]:
    return {"name": name, "plugin": plugin, "help": help_text, "state": "refused", "reason": reason}


def connector_host(config: DaemonConfig) -> PluginHost:
    """The enabled plugins, the connector's and every installed WMS connector plugin
    (``wms_*``): the ones that may offer a sandbox or a demo. Options are not validated."""
    connectors = [name for name in discover_entry_points() if name.startswith(CONNECTOR_PREFIX)]
    sections = dict(config.plugins)
    for name in connectors:
        sections[name] = {**sections.get(name, {}), "enabled": True}
    host = PluginHost()
    host.load(config.model_copy(update={"plugins": sections}))
    return host


def sandboxes(host: PluginHost) -> dict[str, tuple[str, SandboxSpec]]:
    """The sandboxes loaded plugins offer: name → (plugin, spec); the first keeps a name."""
    found: dict[str, tuple[str, SandboxSpec]] = {}
    for outcome in host.sandboxes():
        if outcome.error is not None:
            log.error("plugin %s: nebridge_sandboxes raised %r", outcome.plugin, outcome.error)
            continue
        for spec in outcome.result or ():
            if isinstance(spec, SandboxSpec) and spec.name not in found:
                found[spec.name] = (outcome.plugin, spec)
    return found


def demo_of(name: str) -> DemoSpec | None:
    """The demo ``nebridge demo --wms NAME`` runs: offered by the connector plugin
    ``wms_<NAME>`` (None when it is not installed or offers none)."""
    host = PluginHost()
    host.load(DaemonConfig.model_validate({"wms": {"connector": name}}))
    for outcome in host.demos(connector_plugin_name(name)):
        if outcome.error is not None:
            log.error("plugin %s: nebridge_demos raised %r", outcome.plugin, outcome.error)
            continue
        for spec in outcome.result or ():
            if isinstance(spec, DemoSpec) and spec.name == name:
                return spec
    return None


def installed_connectors() -> list[str]:
    """The names of the installed WMS connector plugins, without ``wms_`` (``csv`` …)."""
    return sorted(
        name.removeprefix(CONNECTOR_PREFIX)
        for name in discover_entry_points()
        if name.startswith(CONNECTOR_PREFIX)
    )


def connector_in_use(loaded: LoadedConfig, host: PluginHost) -> ConnectorInUse | None:
    """The configured WMS connector for health checks, its section validated (None when no
    loaded plugin offers it)."""
    wanted = loaded.config.wms.connector
    offered = host.connector_specs().get(wanted)
    if offered is None:
        return None
    plugin, spec = offered
    base = loaded.path.resolve().parent
    options: Any = loaded.config.wms.connector_section()
    if spec.config_model is not None:
        issues, options = validate_section(spec.config_model, options, ("wms", wanted), loaded)
        if issues:
            options = None
    return ConnectorInUse(
        name=wanted,
        plugin=plugin,
        options=resolve_relative_paths(options, base),
        config_dir=base,
        state_dir=loaded.config.state_dir,
        credentials_dir=loaded.config.credentials_dir,
    )
