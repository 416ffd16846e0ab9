"""Admin services that need only ``daemon.yaml`` and the plugins: listing, inspecting,
enabling and disabling plugins, ``config check``, the warehouses' link flags.

Apart from :mod:`daemon.admin` (which needs the store and the engine) so that ``plugins
list``/``info`` and ``warehouses`` load neither SQLAlchemy nor the engine.
"""

from __future__ import annotations

import copy
import importlib.metadata as md
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from daemon.config import (
    ConfigError,
    ConfigIssue,
    DaemonConfig,
    LoadedConfig,
    parse_config,
    read_yaml,
)
from daemon.pluginload import load_plugins
from daemon.pluginmanager import (
    PluginHost,
    PluginRecord,
    PluginState,
    connector_plugin_name,
    discover_entry_points,
)
from daemon.yamledit import (
    ConfigNotWritable,
    dump,
    set_plugin_enabled,
    set_warehouse_field,
    write_atomically,
)


class AdminError(Exception):
    """An admin request that cannot be carried out; the message says what to do instead."""


def _write(config_path: Path, raw: CommentedMap) -> None:
    """Write an edited ``daemon.yaml`` back (through a symlink; owner, group, mode kept)."""
    try:
        write_atomically(config_path, dump(raw))
    except ConfigNotWritable as exc:
        raise AdminError(str(exc)) from None


# -- plugins ----------------------------------------------------------------------------------


def plugin_host(loaded: LoadedConfig) -> tuple[PluginHost, list[ConfigIssue]]:
    """Load plugins for inspection, returning the host and any config issues."""
    host, issues, _connector, _err = load_plugins(loaded)
    return host, issues


@dataclass
class ConfigCheck:
    """What ``config check`` found: problems (exit 1) and warnings."""

    host: PluginHost
    issues: list[ConfigIssue]
    warnings: list[str]


def check_config(loaded: LoadedConfig) -> ConfigCheck:
    """Everything ``config check`` verifies: the core keys, every enabled plugin imported and
    its options, the disabled plugins' options, dependencies and the WMS connector.

    An enabled plugin that cannot run is a problem, not a warning: the stages it takes part
    in would be paused.
    """
    host, issues = plugin_host(loaded)
    disabled_issues, warnings = host.check_disabled_options(loaded)
    issues = issues + disabled_issues
    for name, section in loaded.config.plugins.items():
        if "enabled" not in section and section:
            warnings.append(
                f"plugin {name} has options but no `enabled:` line, so it is off; "
                f"write `enabled: false` to keep it off on purpose, or enable it "
                f"(`nebridge plugins enable {name}`)"
            )
    from daemon.store.engine import driver_problem  # SQLAlchemy: not for the plugin listing

    missing_driver = driver_problem(loaded.config.resolved_database_url)
    if missing_driver:
        issues.append(
            ConfigIssue("database_url", missing_driver, loaded.line_of(("database_url",)))
        )
    paused = host.paused_stages()
    for record in host.failed():
        prefix = f"plugins.{record.name}"
        if not record.enabled or any(i.path.startswith(prefix) for i in issues):
            continue  # its own problems are listed already
        stages = [s for s in record.stages() if s in paused]
        issues.append(
            ConfigIssue(
                f"{prefix}.enabled",
                f"plugin {record.name} is enabled but {record.state.value}: {record.error}; "
                f"{', '.join(stages) or 'no stage'} would be paused — repair the plugin or "
                f"disable it (`nebridge plugins disable {record.name}`)",
                loaded.line_of(("plugins", record.name, "enabled")),
            )
        )
    return ConfigCheck(host, issues, warnings)


#: Validates an edited document as the file at the path (daemon.yaml's or a company file's).
Parse = Callable[[CommentedMap, Path], LoadedConfig]


def read_for_edit(
    config_path: Path, section: str, inherit: Mapping[str, Any] | None = None
) -> CommentedMap:
    """``config_path`` as a document to edit; a company file without ``section`` first gets
    a copy of daemon.yaml's (``inherit``), so changing one entry keeps the others."""
    raw = read_yaml(config_path)
    if inherit is not None and section not in raw and section in inherit:
        raw[section] = copy.deepcopy(inherit[section])
    return raw


def change_plugin(
    config_path: Path,
    name: str,
    enabled: bool,
    *,
    parse: Parse = parse_config,
    inherit: Mapping[str, Any] | None = None,
) -> list[str]:
    """Enable or disable a plugin in ``daemon.yaml`` (or a company file, validated with
    ``parse`` on top of daemon.yaml's sections ``inherit``); refuse changes that break
    dependencies.

    Returns notes for the admin (e.g. how to apply the change to the running daemon).
    """
    raw = read_for_edit(config_path, "plugins", inherit)
    current = parse(raw, config_path)
    host, _ = plugin_host(current)
    if name not in host.records:
        raise AdminError(
            f"no installed plugin is called {name!r}; "
            "`nebridge plugins list` shows the installed ones"
        )
    if enabled:
        _check_can_enable(config_path, name, current, parse, inherit)
    else:
        connector = current.config.wms.connector
        if name == connector_plugin_name(connector):  # it stays loaded whatever `enabled` says
            raise AdminError(
                f"{name} is the WMS connector in use (`wms.connector: "
                f"{connector}`); choose another connector first"
            )
        dependents = sorted(
            r.name
            for r in host.records.values()
            if r.enabled and r.info is not None and name in r.info.requires
        )
        if dependents:
            verb = "requires" if len(dependents) == 1 else "require"
            commands = " && ".join(f"nebridge plugins disable {d}" for d in dependents)
            raise AdminError(
                f"{'plugin' if len(dependents) == 1 else 'plugins'} {', '.join(dependents)} "
                f"{verb} {name}; disable {'it' if len(dependents) == 1 else 'them'} first "
                f"(`{commands}`)"
            )
    set_plugin_enabled(raw, name, enabled)
    try:
        new = parse(raw, config_path)
    except ConfigError as exc:
        raise AdminError(str(exc)) from None
    _, issues = plugin_host(new)
    if issues:
        raise AdminError(str(ConfigError(config_path, issues)))
    _write(config_path, raw)
    state = "enabled" if enabled else "disabled"
    return [f"plugin {name} {state} in {config_path}", apply_note(config_path, inherit)]


def _check_can_enable(
    config_path: Path,
    name: str,
    current: LoadedConfig,
    parse: Parse,
    inherit: Mapping[str, Any] | None,
) -> None:
    raw = read_for_edit(config_path, "plugins", inherit)
    set_plugin_enabled(raw, name, True)
    probe, _ = plugin_host(parse(raw, config_path))
    record = probe.records.get(name)
    if record is None or record.state is PluginState.FAILED:
        reason = record.error if record else "not installed"
        raise AdminError(f"plugin {name!r} cannot be loaded: {reason}")
    enabled = set(current.config.enabled_plugins())
    missing = [r for r in (record.info.requires if record.info else ()) if r not in enabled]
    if missing:
        them = "it" if len(missing) == 1 else "them"
        commands = " && ".join(f"nebridge plugins enable {m}" for m in missing)
        raise AdminError(
            f"plugin {name} requires {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} disabled; enable {them} first "
            f"(`{commands}`)"
        )


def plugin_rows(host: PluginHost, enabled_only: bool = False) -> list[dict[str, Any]]:
    """Rows for ``plugins list``: every installed plugin (or the enabled ones), by name.

    A disabled plugin's summary and requirements come from importing it into a throwaway
    host (see :func:`plugin_record`); the engine's own host never loads it.
    """
    records = sorted(host.records.values(), key=lambda r: r.name)
    entry_points = discover_entry_points()
    return [
        plugin_record(host, r.name, entry_points).as_dict()
        for r in records
        if r.enabled or not enabled_only
    ]


def plugin_record(
    host: PluginHost, name: str, entry_points: Mapping[str, md.EntryPoint] | None = None
) -> PluginRecord:
    """The record of ``name``; for a disabled plugin, as it would load if enabled.

    The plugin is imported into a throwaway host (its module code runs, none of its hooks
    are called but ``nebridge_plugin_info``), so its summary, requirements, hooks and options
    can be shown while it stays disabled; ``enabled`` stays false. A plugin that cannot be
    imported keeps state ``disabled`` with the import error. ``entry_points`` (found once
    by a caller that probes many) saves looking them up again.
    """
    record = host.records.get(name)
    if record is None:
        raise AdminError(
            f"no installed plugin is called {name!r}; "
            "`nebridge plugins list` shows the installed ones"
        )
    if record.enabled:
        return record
    found_eps = discover_entry_points() if entry_points is None else entry_points
    probe = PluginHost()  # its only entry point is this plugin's: nothing else is read
    probe.load(
        DaemonConfig(plugins={name: {"enabled": True}}),
        entry_points={name: found_eps[name]} if name in found_eps else {},
    )
    found = probe.records.get(name)
    if found is None:
        return record
    return replace(
        found,
        state=PluginState.DISABLED,
        enabled=False,
        error=f"cannot be loaded: {found.error}" if found.error else "",
    )


def plugin_details(host: PluginHost, name: str) -> dict[str, Any]:
    """Everything about one plugin, including its config JSON schema (disabled ones too)."""
    record = plugin_record(host, name)
    data = record.as_dict()
    model = record.info.config_model if record.info else None
    data["setting_ja"] = record.info.setting_ja if record.info else ""
    data["config_schema"] = model.model_json_schema() if model is not None else None
    if not record.enabled and record.info is None:
        data["note"] = (
            f"its summary and options cannot be shown: the plugin does not load "
            f"({record.error or 'no plugin information'})"
        )
    return data


# -- warehouses -------------------------------------------------------------------------------


def set_warehouse_link(
    config_path: Path,
    code: str,
    linked: bool,
    *,
    parse: Parse = parse_config,
    inherit: Mapping[str, Any] | None = None,
) -> list[str]:
    """Set a warehouse's Next Engine link flag (拠点設定) in ``daemon.yaml`` (or a company
    file: see :func:`change_plugin`)."""
    raw = read_for_edit(config_path, "warehouses", inherit)
    before = next(
        (
            bool(w.get("ne_linked", False))
            for w in raw.get("warehouses") or []
            if isinstance(w, Mapping) and str(w.get("code")) == code
        ),
        None,
    )
    if before is linked:
        return [f"warehouse {code}: ne_linked is {str(linked).lower()} already; nothing changed"]
    if not set_warehouse_field(raw, code, "ne_linked", linked):
        codes = ", ".join(str(w.get("code")) for w in raw.get("warehouses") or [])
        raise AdminError(
            f"no warehouse with code {code!r} in {config_path} (configured: {codes or 'none'})"
        )
    try:
        parse(raw, config_path)
    except ConfigError as exc:
        raise AdminError(str(exc)) from None
    _write(config_path, raw)
    effect = (
        "stock changes at this warehouse will now reach Next Engine"
        if linked
        else "stock changes at this warehouse will no longer reach Next Engine"
    )
    return [
        f"warehouse {code}: ne_linked={str(linked).lower()} ({effect})",
        apply_note(config_path, inherit),
    ]


def apply_note(config_path: Path, inherit: Mapping[str, Any] | None) -> str:
    """How an edited file reaches the running daemon: SIGHUP for daemon.yaml; for a fleet
    company's file (edited on top of daemon.yaml's sections ``inherit``) the copy on every
    host, which each worker's file watch applies."""
    if inherit is None:
        return "apply it to a running daemon with `systemctl reload nebridge` (SIGHUP)"
    return (
        f"copy {config_path} to every host: each worker's file watch applies it within "
        "seconds (`systemctl reload nebridge` applies it at once), and a worker on a host "
        "with the old file serves the company with it whenever it holds the lease"
    )


def warehouse_rows(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """Rows for ``warehouses list``."""
    return [
        {
            "code": w.code,
            "name": w.name,
            "ne_linked": w.ne_linked,
            "import_orders": w.import_orders,
            "shop_ids": list(w.shop_ids),
        }
        for w in loaded.config.warehouses
    ]
