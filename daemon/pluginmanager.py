"""Finding, loading, validating and calling plugins.

Built-in and third-party plugins are found the same way, through the ``nebridge`` entry-point
group. Loading is fail-soft: a plugin that fails to import is recorded as failed and the
daemon starts without it. Plugins not enabled in ``daemon.yaml`` are blocked before import, so
their code never runs. The engine calls hooks one implementation at a time
(:meth:`PluginHost.call_each`) so an exception in one plugin is attributed to it and never
stops another.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from daemon.config import ConfigIssue, DaemonConfig, LoadedConfig, yaml_path
from daemon.logsetup import push_log_context, reset_log_context
from hooks.connectors import ConnectorSpec
from hooks.markers import PROJECT_NAME
from hooks.records import PluginInfo
from hooks.specs import ALL_SPECS

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME
CONNECTOR_PREFIX = "wms_"


class PluginState(StrEnum):
    """Where a plugin stands after loading."""

    LOADED = "loaded"
    DISABLED = "disabled"
    FAILED = "failed"
    INACTIVE = "inactive"  # loaded, but something it requires is not available


@dataclass
class PluginRecord:
    """Everything the engine and the CLI know about one plugin."""

    name: str
    state: PluginState
    enabled: bool
    source: str = ""
    distribution: str = ""
    version: str = ""
    info: PluginInfo | None = None
    options: Any = None
    error: str = ""
    hooks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view for ``plugins list --json``."""
        return {
            "name": self.name,
            "state": self.state.value,
            "enabled": self.enabled,
            "summary": self.info.summary if self.info else "",
            "requires": list(self.info.requires) if self.info else [],
            "source": self.source,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """The result of calling one plugin's implementation of a hook."""

    plugin: str
    result: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the implementation returned without raising."""
        return self.error is None


def connector_plugin_name(connector: str) -> str:
    """The plugin that provides ``wms.connector: <connector>`` (``csv`` → ``wms_csv``)."""
    return f"{CONNECTOR_PREFIX}{connector}"


def discover_entry_points() -> dict[str, md.EntryPoint]:
    """All installed ``nebridge`` entry points by name (the first one wins on duplicates)."""
    found: dict[str, md.EntryPoint] = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            log.warning(
                "plugin name %r is provided twice (%s and %s); using the first",
                ep.name, found[ep.name].value, ep.value,
            )
            continue
        found[ep.name] = ep
    return found


def _short_error(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


class PluginHost:
    """The plugin manager with a typed, isolating facade over pluggy."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        for spec in ALL_SPECS:
            self.pm.add_hookspecs(spec)
        self.records: dict[str, PluginRecord] = {}
        self._order: list[str] = []
        self._ordered: dict[str, list[tuple[str, Any]]] = {}

    # -- loading ----------------------------------------------------------------------------

    def wanted_plugins(self, config: DaemonConfig) -> list[str]:
        """Plugins to import: the enabled ones and the configured WMS connector's plugin."""
        wanted = config.enabled_plugins()
        connector = connector_plugin_name(config.wms.connector)
        if connector not in wanted:
            wanted.append(connector)
        return wanted

    def load(
        self,
        config: DaemonConfig,
        entry_points: Mapping[str, md.EntryPoint] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """Import and register the wanted plugins; record the rest as disabled.

        ``extra`` registers plugin objects directly under a name (for tests and embedding);
        they are treated exactly like entry-point plugins.
        """
        eps = dict(discover_entry_points() if entry_points is None else entry_points)
        extra = dict(extra or {})
        wanted = self.wanted_plugins(config)
        self._order = list(wanted)
        self._ordered.clear()
        for name in sorted(set(eps) | set(extra)):
            enabled = name in wanted
            ep = eps.get(name)
            record = PluginRecord(
                name=name,
                state=PluginState.DISABLED,
                enabled=enabled,
                source=ep.value if ep else "registered object",
                distribution=ep.dist.name if ep and ep.dist else "",
                version=ep.dist.version if ep and ep.dist else "",
            )
            self.records[name] = record
            if not enabled:
                self.pm.set_blocked(name)
                continue
            try:
                plugin = extra[name] if name in extra else ep.load()  # type: ignore[union-attr]
                self.pm.register(plugin, name=name)
            except Exception as exc:  # a broken plugin must never stop the daemon
                record.state = PluginState.FAILED
                record.error = _short_error(exc)
                log.error("plugin %s failed to load: %s", name, record.error)
                continue
            record.state = PluginState.LOADED
            record.hooks = sorted(
                caller.name for caller in self.pm.get_hookcallers(plugin) or []
            )
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            bad = exc.plugin_name if hasattr(exc, "plugin_name") else ""
            self._fail(bad, f"implements an unknown hook: {exc}")
        self._read_infos()

    def _fail(self, name: str, error: str) -> None:
        record = self.records.get(name)
        if record is None:
            return
        record.state = PluginState.FAILED
        record.error = error
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
            self._ordered.clear()
        log.error("plugin %s failed: %s", name, error)

    def _read_infos(self) -> None:
        for outcome in self.call_each("nebridge_plugin_info"):
            record = self.records[outcome.plugin]
            if outcome.error is not None:
                self._fail(outcome.plugin,
                           f"nebridge_plugin_info raised {_short_error(outcome.error)}")
            elif not isinstance(outcome.result, PluginInfo):
                self._fail(outcome.plugin, "nebridge_plugin_info must return a PluginInfo")
            elif outcome.result.name != outcome.plugin:
                self._fail(
                    outcome.plugin,
                    f"calls itself {outcome.result.name!r} but is registered as "
                    f"{outcome.plugin!r}; the entry-point name must equal PluginInfo.name",
                )
            else:
                record.info = outcome.result
        for name in self.loaded_names():
            if self.records[name].info is None:
                self._fail(name, "does not implement nebridge_plugin_info")

    # -- validation -------------------------------------------------------------------------

    def validate(self, loaded: LoadedConfig) -> list[ConfigIssue]:
        """Check dependencies and each plugin's options; store the validated options.

        Returns every problem found, each with its YAML path and line. Plugins whose
        requirements are unavailable at run time (failed to load) become inactive.
        """
        config = loaded.config
        issues: list[ConfigIssue] = []
        enabled = set(config.enabled_plugins())
        for name in config.plugins:
            if name not in self.records:
                issues.append(
                    ConfigIssue(
                        f"plugins.{name}",
                        "no installed plugin has this name; check the spelling or install it "
                        "(`nebridge plugins list --all` shows what is installed)",
                        loaded.line_of(("plugins", name)),
                    )
                )
        for name in config.enabled_plugins():
            record = self.records.get(name)
            if record is None or record.info is None:
                continue
            for required in record.info.requires:
                if required not in enabled:
                    issues.append(
                        ConfigIssue(
                            f"plugins.{name}.enabled",
                            f"plugin {name!r} requires plugin {required!r}, which is not "
                            f"enabled; enable {required!r} (`nebridge plugins enable "
                            f"{required}`) or disable {name!r}",
                            loaded.line_of(("plugins", name, "enabled")),
                        )
                    )
            issues.extend(
                self._validate_options(
                    record, config.plugin_options(name), ("plugins", name), loaded
                )
            )
        self._deactivate_broken_dependents()
        return issues

    def _validate_options(
        self,
        record: PluginRecord,
        options: Mapping[str, Any],
        loc: tuple[str, ...],
        loaded: LoadedConfig,
    ) -> list[ConfigIssue]:
        model = record.info.config_model if record.info else None
        if model is None:
            if options:
                keys = ", ".join(sorted(options))
                return [
                    ConfigIssue(
                        yaml_path(loc),
                        f"plugin {record.name!r} takes no options, found: {keys}",
                        loaded.line_of(loc),
                    )
                ]
            return []
        issues, value = validate_section(model, options, loc, loaded)
        if not issues:
            record.options = value
        return issues

    def _deactivate_broken_dependents(self) -> None:
        changed = True
        while changed:
            changed = False
            for record in self.records.values():
                if record.state is not PluginState.LOADED or record.info is None:
                    continue
                missing = [
                    r for r in record.info.requires
                    if self.records.get(r) is None
                    or self.records[r].state is not PluginState.LOADED
                ]
                if missing:
                    record.state = PluginState.INACTIVE
                    record.error = f"requires {', '.join(missing)}, which is not available"
                    plugin = self.pm.get_plugin(record.name)
                    if plugin is not None:
                        self.pm.unregister(plugin)
                        self._ordered.clear()
                    changed = True

    # -- calling ----------------------------------------------------------------------------

    def loaded_names(self) -> list[str]:
        """Loaded plugins in configuration order."""
        names = [n for n, r in self.records.items() if r.state is PluginState.LOADED]
        rank = {n: i for i, n in enumerate(self._order)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))

    def call_each(
        self,
        hook_name: str,
        kwargs: Mapping[str, Any] | None = None,
        per_plugin: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> list[HookOutcome]:
        """Call every implementation of ``hook_name`` on its own, in configuration order.

        ``options`` is filled with each plugin's own validated options. Exceptions are
        caught and returned in the outcome, attributed to the plugin.
        """
        outcomes: list[HookOutcome] = []
        base = dict(kwargs or {})
        for name, impl in self._implementations(hook_name):
            record = self.records.get(name)
            args = dict(base)
            args["options"] = record.options if record else None
            if per_plugin is not None:
                args.update(per_plugin(name))
            token = push_log_context(plugin=name)
            try:
                result = impl.function(*[args[a] for a in impl.argnames])
            except Exception as exc:
                outcomes.append(HookOutcome(plugin=name, error=exc))
                continue
            finally:
                reset_log_context(token)
            outcomes.append(HookOutcome(plugin=name, result=result))
        return outcomes

    def _implementations(self, hook_name: str) -> list[tuple[str, Any]]:
        """``(plugin, hookimpl)`` of a hook in configuration order (kept until a reload)."""
        ordered = self._ordered.get(hook_name)
        if ordered is None:
            caller = getattr(self.pm.hook, hook_name)
            impls = {impl.plugin_name: impl for impl in caller.get_hookimpls()}
            rank = {n: i for i, n in enumerate(self._order)}
            ordered = [(n, impls[n]) for n in
                       sorted(impls, key=lambda n: (rank.get(n, len(rank)), n))]
            self._ordered[hook_name] = ordered
        return ordered

    def first_result(self, hook_name: str, kwargs: Mapping[str, Any] | None = None) -> Any:
        """The first non-None result of an isolated call (for ``firstresult`` hooks)."""
        for outcome in self.call_each(hook_name, kwargs):
            if outcome.error is not None:
                log.error(
                    "plugin %s raised in %s: %s",
                    outcome.plugin, hook_name, _short_error(outcome.error),
                )
            elif outcome.result is not None:
                return outcome.result
        return None

    def connector_specs(self) -> dict[str, tuple[str, ConnectorSpec]]:
        """Connector types offered by loaded plugins: name → (plugin, spec)."""
        specs: dict[str, tuple[str, ConnectorSpec]] = {}
        for outcome in self.call_each("nebridge_wms_connectors"):
            if outcome.error is not None:
                self._fail(
                    outcome.plugin,
                    f"nebridge_wms_connectors raised {_short_error(outcome.error)}",
                )
                continue
            for spec in outcome.result or ():
                if spec.name in specs:
                    log.error(
                        "connector %r offered by both %s and %s; keeping the first",
                        spec.name, specs[spec.name][0], outcome.plugin,
                    )
                    continue
                specs[spec.name] = (outcome.plugin, spec)
        return specs

    def failed(self) -> list[PluginRecord]:
        """Enabled plugins that failed to load or are inactive."""
        return [
            r for r in self.records.values()
            if r.state in (PluginState.FAILED, PluginState.INACTIVE)
        ]


def validate_section(
    model: type[Any],
    options: Mapping[str, Any],
    loc: tuple[str, ...],
    loaded: LoadedConfig,
) -> tuple[list[ConfigIssue], Any]:
    """Validate a config section with a pydantic model, reporting YAML paths and lines."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        issue = ConfigIssue(yaml_path(loc), "the plugin's config_model is not a pydantic model")
        return [issue], None
    try:
        return [], model.model_validate(dict(options))
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            full = (*loc, *err["loc"])
            issues.append(ConfigIssue(yaml_path(full), err["msg"], loaded.line_of(full)))
        return issues, None

