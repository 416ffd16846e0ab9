"""Loading and validating the configured plugins and building the WMS connector.

Apart from :mod:`daemon.runtime` so that the commands that only inspect plugins
(``plugins list``, ``status``, ``config check``) load neither the store nor the engine.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from daemon.config import ConfigIssue, LoadedConfig
from daemon.pluginmanager import PluginHost, connector_plugin_name, validate_section
from hooks.connectors import WmsConnector


def resolve_relative_paths(model: Any, base: Path) -> Any:
    """Make every relative ``Path`` field of a pydantic model relative to ``base``."""
    if not isinstance(model, BaseModel):
        return model
    updates = {
        name: base / value
        for name, value in model
        if isinstance(value, Path) and not value.is_absolute()
    }
    return model.model_copy(update=updates) if updates else model


def load_plugins(
    loaded: LoadedConfig,
    entry_points: Mapping[str, md.EntryPoint] | None = None,
    extra_plugins: Mapping[str, object] | None = None,
) -> tuple[PluginHost, list[ConfigIssue], WmsConnector | None, str]:
    """Load and validate plugins and build the connector; collect every config issue."""
    host = PluginHost()
    host.load(loaded.config, entry_points=entry_points, extra=extra_plugins)
    issues = host.validate(loaded)
    base = loaded.path.resolve().parent
    for record in host.records.values():
        record.options = resolve_relative_paths(record.options, base)
    connector, connector_error = None, ""
    wanted = loaded.config.wms.connector
    specs = host.connector_specs()
    if wanted not in specs:
        plugin = connector_plugin_name(wanted)
        plugin_record = host.records.get(plugin)
        reason = (
            plugin_record.error
            if plugin_record and plugin_record.error
            else ("no plugin offers it")
        )
        connector_error = (
            f"WMS connector {wanted!r} is not available ({plugin}: {reason}); "
            f"available: {', '.join(sorted(specs)) or 'none'}"
        )
        issues.append(
            ConfigIssue("wms.connector", connector_error, loaded.line_of(("wms", "connector")))
        )
    else:
        _plugin, spec = specs[wanted]
        options: Any = loaded.config.wms.connector_section()
        if spec.config_model is not None:
            section_issues, options = validate_section(
                spec.config_model, options, ("wms", wanted), loaded
            )
            issues.extend(section_issues)
        if not issues or all(not i.path.startswith("wms") for i in issues):
            try:
                connector = spec.factory(resolve_relative_paths(options, base))
            except Exception as exc:
                connector_error = f"WMS connector {wanted!r} could not start: {exc}"
                issues.append(
                    ConfigIssue(f"wms.{wanted}", connector_error, loaded.line_of(("wms", wanted)))
                )
    return host, issues, connector, connector_error
