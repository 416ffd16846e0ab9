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
import signal
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from daemon.config import (
    ConfigIssue,
    DaemonConfig,
    LoadedConfig,
    did_you_mean,
    model_keys,
    unknown_key,
    validation_issues,
    yaml_path,
)
from daemon.logsetup import push_log_context, reset_log_context
from hooks.connectors import ConnectorSpec
from hooks.markers import PROJECT_NAME
from hooks.records import PluginInfo
from hooks.specs import ALL_SPECS

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME
CONNECTOR_PREFIX = "wms_"

#: The pipeline stage each hook takes part in. While an enabled plugin is not loaded, every
#: stage it takes part in is paused; one that could not even be imported (its hooks are
#: unknown) is taken to take part in every stage. Keys are ``daemon.pipeline.Stage`` values.
STAGE_HOOKS: dict[str, tuple[str, ...]] = {
    "import_orders": ("nebridge_filter_order", "nebridge_link_code_key"),
    "shipments": ("nebridge_shipment_actions",),
    "receipts": ("nebridge_receipt_actions",),
}


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

    def stages(self) -> list[str]:
        """The pipeline stages this plugin takes part in (all of them when unknown)."""
        if not self.hooks:
            return list(STAGE_HOOKS)
        return [stage for stage, hooks in STAGE_HOOKS.items()
                if any(h in self.hooks for h in hooks)]

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


#: Seconds a plugin's import may take before a warning names it (an import that hangs would
#: otherwise hang every command without a word; it is not cut off: that is not safe).
SLOW_IMPORT_SECONDS = 10.0


def _still_importing(name: str) -> None:
    log.warning("still importing plugin %s after %.0f s: its module code has not returned; "
                "if it hangs, stop this command and disable the plugin "
                "(`nebridge plugins disable %s`)", name, SLOW_IMPORT_SECONDS, name)


_sigints = 0  # real SIGINTs (Ctrl-C) seen while :func:`_count_sigint` is the handler


def _count_sigint(signum: int, frame: Any) -> None:
    """Python's own Ctrl-C handler that also counts, so a real Ctrl-C can be told apart from
    a ``KeyboardInterrupt`` a plugin raises itself."""
    global _sigints
    _sigints += 1
    signal.default_int_handler(signum, frame)


def _watch_sigint() -> None:
    """Count real Ctrl-Cs from now on (main thread, while Python's default handler is set)."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _count_sigint)


def users_interrupt(exc: BaseException, sigints_before: int) -> bool:
    """Whether ``exc``, raised out of plugin code, is the user's real Ctrl-C.

    Everything else a plugin raises — ``SystemExit`` (``sys.exit()`` at import), its own
    ``KeyboardInterrupt``, any ``BaseException`` — is that plugin's failure, like an
    ``ImportError``: it must never end the command or the daemon (fail closed, not exit 0).
    A real Ctrl-C only ever arrives as an exception on the main thread, through Python's
    default handler (counted once :func:`_watch_sigint` ran); the daemon's own handler
    stops it gracefully and raises nothing.
    """
    if not isinstance(exc, KeyboardInterrupt):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    handler = signal.getsignal(signal.SIGINT)
    if handler is _count_sigint:
        return _sigints != sigints_before
    return handler is signal.default_int_handler


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
        #: When the plugins were loaded (the start of a paused stage, for attention).
        self.loaded_at = datetime.now(UTC)
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
        self.loaded_at = datetime.now(UTC)
        self._order = list(wanted)
        self._ordered.clear()
        _watch_sigint()
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
            log.debug("loading plugin %s (%s)", name, record.source)
            before = _sigints
            slow = threading.Timer(SLOW_IMPORT_SECONDS, _still_importing, (name,))
            slow.daemon = True
            slow.start()
            try:
                plugin = extra[name] if name in extra else ep.load()  # type: ignore[union-attr]
                self.pm.register(plugin, name=name)
            except BaseException as exc:  # a broken plugin must never stop the daemon
                if users_interrupt(exc, before):
                    raise
                record.state = PluginState.FAILED
                record.error = _short_error(exc)
                log.error("plugin %s failed to load: %s", name, record.error)
                continue
            finally:
                slow.cancel()
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
                        "no installed plugin has this name"
                        f"{did_you_mean(name, self.records) or '; check the spelling'} — "
                        "or install it (`nebridge plugins list --all` shows what is "
                        "installed)",
                        loaded.line_of(("plugins", name)),
                    )
                )
        issues.extend(self._wms_section_issues(loaded))
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
            option_issues = self._validate_options(
                record, config.plugin_options(name), ("plugins", name), loaded)
            if option_issues and record.state is PluginState.LOADED:
                self._fail(name, "its options are invalid: "
                           + "; ".join(str(i) for i in option_issues))
            issues.extend(option_issues)
        self._deactivate_broken_dependents()
        for stage, reason in self.paused_stages().items():
            log.error("stage %s is paused for every warehouse: %s", stage, reason)
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
            return [
                ConfigIssue(yaml_path((*loc, key)),
                            f"unknown key `{key}`: plugin {record.name} takes no options"
                            f"{did_you_mean(str(key), ['enabled'])}", loaded.line_of((*loc, key)))
                for key in options
            ]
        issues, value = validate_section(model, options, loc, loaded, also=("enabled",))
        if not issues:
            record.options = value
        return issues

    def check_disabled_options(
        self, loaded: LoadedConfig, entry_points: Mapping[str, md.EntryPoint] | None = None
    ) -> tuple[list[ConfigIssue], list[str]]:
        """Validate the options kept in the sections of disabled plugins (issues, warnings).

        The engine never imports a disabled plugin; this does, in a throwaway host, only for
        ``config check`` and ``doctor`` — so a typo waiting in a disabled plugin's section is
        found before the plugin is switched on. A plugin that cannot be imported gives a
        warning: its options could not be checked.
        """
        issues: list[ConfigIssue] = []
        warnings: list[str] = []
        config = loaded.config
        for name in config.plugins:
            record = self.records.get(name)
            options = config.plugin_options(name)
            if record is None or record.enabled or not options:
                continue
            probe = PluginHost()
            probe.load(config.model_copy(update={"plugins": {name: {"enabled": True}}}),
                       entry_points=entry_points)
            found = probe.records.get(name)
            if found is None or found.state is not PluginState.LOADED:
                warnings.append(f"the options of disabled plugin {name} were not checked: it "
                                f"cannot be loaded ({found.error if found else 'not found'})")
                continue
            issues.extend(probe._validate_options(found, options, ("plugins", name), loaded))
        return issues, warnings

    def _wms_section_issues(self, loaded: LoadedConfig) -> list[ConfigIssue]:
        """``wms:`` holds ``connector`` and sections named after installed connectors only."""
        connectors = [n.removeprefix(CONNECTOR_PREFIX) for n in self.records
                      if n.startswith(CONNECTOR_PREFIX)]
        known = ["connector", *connectors]
        issues = []
        for key in loaded.config.wms.model_extra or {}:
            if key not in known:
                issues.append(ConfigIssue(f"wms.{key}", unknown_key(str(key), known),
                                          loaded.line_of(("wms", key))))
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
        only: str | None = None,
    ) -> list[HookOutcome]:
        """Call every implementation of ``hook_name`` on its own, in configuration order.

        ``options`` is filled with each plugin's own validated options. Exceptions are
        caught and returned in the outcome, attributed to the plugin. ``only`` calls that one
        plugin alone.
        """
        outcomes: list[HookOutcome] = []
        base = dict(kwargs or {})
        for name, impl in self._implementations(hook_name):
            if only is not None and name != only:
                continue
            record = self.records.get(name)
            args = dict(base)
            args["options"] = record.options if record else None
            if per_plugin is not None:
                args.update(per_plugin(name))
            token = push_log_context(plugin=name)
            before = _sigints
            try:
                result = impl.function(*[args[a] for a in impl.argnames])
            except BaseException as exc:  # sys.exit() in a hook is that plugin's failure
                if users_interrupt(exc, before):
                    raise
                outcomes.append(HookOutcome(plugin=name, error=exc))
                continue
            finally:
                reset_log_context(token)
            outcomes.append(HookOutcome(plugin=name, result=result))
        return outcomes

    def implementers(self, hook_name: str) -> list[str]:
        """The loaded plugins that implement ``hook_name``, in configuration order."""
        return [name for name, _impl in self._implementations(hook_name)]

    def call_one(self, hook_name: str, plugin: str,
                 kwargs: Mapping[str, Any] | None = None) -> HookOutcome | None:
        """Call ``plugin``'s implementation of ``hook_name`` alone (None: it has none)."""
        for outcome in self.call_each(hook_name, kwargs, only=plugin):
            return outcome
        return None

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

    def stage_blockers(self) -> dict[str, list[PluginRecord]]:
        """Stage → the enabled plugins that are not loaded and take part in it."""
        blockers: dict[str, list[PluginRecord]] = {}
        for record in self.failed():
            if record.enabled:
                for stage in record.stages():
                    blockers.setdefault(stage, []).append(record)
        return blockers

    def paused_stages(self) -> dict[str, str]:
        """Stage → why it is paused (fail closed: running a stage without an enabled plugin
        that takes part in it would change what happens, e.g. import orders a filter refuses).
        """
        return {
            stage: "; ".join(f"plugin {r.name} is enabled but {r.state.value}: {r.error}"
                             for r in records)
            for stage, records in self.stage_blockers().items()
        }


def validate_section(
    model: type[Any],
    options: Mapping[str, Any],
    loc: tuple[str, ...],
    loaded: LoadedConfig,
    also: Sequence[str] = (),
) -> tuple[list[ConfigIssue], Any]:
    """Validate a config section with a pydantic model, reporting YAML paths and lines.

    A key the model does not read is an error whatever the model's own ``extra`` setting
    (pydantic ignores unknown keys by default, which would hide a typo), unless the model
    explicitly allows extra keys. ``also`` names keys of the section that are not options.
    """
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        issue = ConfigIssue(yaml_path(loc), "the plugin's config_model is not a pydantic model")
        return [issue], None
    issues: list[ConfigIssue] = []
    if model.model_config.get("extra") not in ("allow", "forbid"):
        known = [*model_keys(model), *also]
        accepted = set(known) | set(model.model_fields)
        issues = [ConfigIssue(yaml_path((*loc, key)), unknown_key(str(key), known),
                              loaded.line_of((*loc, key)))
                  for key in options if key not in accepted]
    try:
        value = model.model_validate(dict(options))
    except ValidationError as exc:
        return issues + validation_issues(exc, model, loaded.raw, loc, also), None
    return issues, None if issues else value

