"""Finding, loading, validating and calling plugins.

Built-in and third-party plugins are found the same way, through the ``nebridge`` entry-point
group. Loading is fail-soft: a plugin that fails to import is recorded as failed and the
daemon starts without it. Plugins not enabled in ``daemon.yaml`` are blocked before import, so
their code never runs; a plugin that asks for a pluggy feature the host does not honour, or a
hook API version this nebridge does not provide, is refused at load.

The engine calls hooks through typed methods of :class:`PluginHost` (``filter_order``,
``shipment_actions`` …), never by a name string. Each method calls the hook through pluggy one
plugin implementation at a time — every ``wrapper=True`` implementation around each one, with
hook-call monitoring seeing each call — so an exception in one plugin is attributed to it and
never stops another, and each plugin receives its own ``options``.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata as md
import logging
import signal
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import pluggy
from pluggy import HookImpl
from pluggy._callers import _multicall
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
from daemon.logsetup import push_plugin_context, reset_log_context
from hooks.connectors import ConnectorSpec
from hooks.markers import PROJECT_NAME
from hooks.records import FilterVerdict, HealthCheck, PluginInfo, WmsShipment
from hooks.specs import (
    ALL_SPECS,
    HOOK_API_VERSION,
    ConnectorSpecs,
    NotifySpecs,
    PipelineSpecs,
    PluginSpecs,
)
from hooks.surface import CliCommand, DemoSpec, SandboxSpec, SurfaceSpecs

if TYPE_CHECKING:
    from pathlib import Path

    from hooks.notify import NotifyContext
    from hooks.records import (
        Action,
        NeOrder,
        Notification,
        WarehouseInfo,
        WmsReceipt,
    )
    from hooks.surface import ConnectorInUse

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME
CONNECTOR_PREFIX = "wms_"

R = TypeVar("R")


class Hook(Generic[R]):
    """A hook named by its spec function: engine code never spells a hook's name, and mypy
    knows what each implementation returns (``R``, from the spec's annotation)."""

    __slots__ = ("name",)

    def __init__(self, spec: Callable[..., R]) -> None:
        self.name: str = spec.__name__

    def __repr__(self) -> str:
        return f"Hook({self.name})"


PLUGIN_INFO = Hook(PluginSpecs.nebridge_plugin_info)
HEALTH_CHECKS = Hook(PluginSpecs.nebridge_health_checks)
FILTER_ORDER = Hook(PipelineSpecs.nebridge_filter_order)
LINK_CODE_KEY = Hook(PipelineSpecs.nebridge_link_code_key)
SHIPMENT_ACTIONS = Hook(PipelineSpecs.nebridge_shipment_actions)
RECEIPT_ACTIONS = Hook(PipelineSpecs.nebridge_receipt_actions)
WMS_CONNECTORS = Hook(ConnectorSpecs.nebridge_wms_connectors)
NOTIFY = Hook(NotifySpecs.nebridge_notify)
CLI_COMMANDS = Hook(SurfaceSpecs.nebridge_cli_commands)
SANDBOXES = Hook(SurfaceSpecs.nebridge_sandboxes)
DEMOS = Hook(SurfaceSpecs.nebridge_demos)

#: The pipeline stage each hook takes part in. While an enabled plugin is not loaded, every
#: stage it takes part in is paused; one that could not even be imported (its hooks are
#: unknown) is taken to take part in every stage. Keys are ``daemon.pipeline.Stage`` values.
STAGE_HOOKS: dict[str, tuple[Hook[Any], ...]] = {
    "import_orders": (FILTER_ORDER, LINK_CODE_KEY),
    "shipments": (SHIPMENT_ACTIONS,),
    "receipts": (RECEIPT_ACTIONS,),
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
        return [
            stage
            for stage, hooks in STAGE_HOOKS.items()
            if any(h.name in self.hooks for h in hooks)
        ]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view for ``plugins list --json``."""
        return {
            "name": self.name,
            "state": self.state.value,
            "enabled": self.enabled,
            "summary": self.info.summary if self.info else "",
            "requires": list(self.info.requires) if self.info else [],
            "hook_api": self.info.hook_api if self.info else "",
            "source": self.source,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class HookOutcome(Generic[R]):
    """The result of calling one plugin's implementation of a hook (``result`` is None when
    it raised: ``error``)."""

    plugin: str
    result: R | None = None
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
                ep.name,
                found[ep.name].value,
                ep.value,
            )
            continue
        found[ep.name] = ep
    return found


@functools.lru_cache(maxsize=64)
def distribution_label(dist: md.Distribution) -> tuple[str, str]:
    """A distribution's name and version, read once: its metadata file (with the whole
    README as long description) is parsed anew on every ``dist.name``/``dist.version``, and
    every entry point of one discovery shares its distribution object."""
    metadata = dist.metadata
    return metadata["Name"], metadata["Version"]


#: Seconds a plugin's import may take before a warning names it (an import that hangs would
#: otherwise hang every command without a word; it is not cut off: that is not safe).
SLOW_IMPORT_SECONDS = 10.0
#: Seconds one plugin's health checks may take before ``doctor`` warns, naming it.
SLOW_HEALTH_CHECK_SECONDS = 10.0


def _still_importing(name: str) -> None:
    log.warning(
        "still importing plugin %s after %.0f s: its module code has not returned; "
        "if it hangs, stop this command and disable the plugin "
        "(`nebridge plugins disable %s`)",
        name,
        SLOW_IMPORT_SECONDS,
        name,
    )


def _still_calling(name: str, hook: str, seconds: float) -> None:
    log.warning(
        "still waiting for plugin %s's %s after %.0f s: it has not returned; if it "
        "hangs, stop this command and disable the plugin "
        "(`nebridge plugins disable %s`)",
        name,
        hook,
        seconds,
        name,
    )


_sigints = 0  # real SIGINTs (Ctrl-C) seen while :func:`_count_sigint` is the handler


def _count_sigint(signum: int, frame: Any) -> None:
    """Python's own Ctrl-C handler that also counts, so a real Ctrl-C can be told apart from
    a ``KeyboardInterrupt`` a plugin raises itself."""
    global _sigints
    _sigints += 1
    signal.default_int_handler(signum, frame)


def _watch_sigint() -> None:
    """Count real Ctrl-Cs from now on (main thread, while Python's default handler is set)."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
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


def _tier(impl: HookImpl) -> int:
    """``tryfirst`` implementations come first and ``trylast`` ones last, whatever the
    configured order."""
    return 0 if impl.tryfirst else 2 if impl.trylast else 1


def _with_own_options(wrapper: HookImpl, record: PluginRecord) -> HookImpl:
    """``wrapper`` taking its OWN plugin's ``options`` (pluggy would hand every
    implementation of one call the same arguments: those of the plugin it wraps)."""
    function = wrapper.function
    if "options" in wrapper.argnames:
        at = wrapper.argnames.index("options")

        def own(*args: Any, **kwargs: Any) -> Any:
            return function(*args[:at], record.options, *args[at:], **kwargs)
    elif "options" in wrapper.kwargnames:

        def own(*args: Any, **kwargs: Any) -> Any:
            return function(*args, **{**kwargs, "options": record.options})
    else:
        return wrapper
    own.__wrapped__ = function  # type: ignore[attr-defined]  # its frames are the plugin's
    bound = copy.copy(wrapper)
    object.__setattr__(bound, "function", own)
    object.__setattr__(bound, "argnames", tuple(a for a in wrapper.argnames if a != "options"))
    object.__setattr__(bound, "kwargnames", tuple(a for a in wrapper.kwargnames if a != "options"))
    return bound


def _code(function: Callable[..., Any]) -> object:
    """The code object whose frames are ``function``'s (a wrapper's own, not its binding's)."""
    return getattr(getattr(function, "__wrapped__", function), "__code__", None)


@dataclass(frozen=True, slots=True)
class _Call:
    """One plugin's implementation of a hook with every wrapper around it, as pluggy's
    ``_hookexec`` takes them (it runs the list from its end: outermost wrapper last)."""

    plugin: str
    record: PluginRecord
    chain: tuple[HookImpl, ...]

    @property
    def alone(self) -> bool:
        """No wrapper, and every argument positional: what pluggy's ``_multicall`` would do
        is exactly ``function(*args)``."""
        return len(self.chain) == 1 and not self.chain[0].kwargnames

    def culprit(self, exc: BaseException) -> str:
        """The plugin whose code raised ``exc``: the implementation when its frame is on
        the traceback, else the innermost wrapper that is, else the implementation."""
        owners = {_code(impl.function): impl.plugin_name for impl in self.chain[1:]}
        own = _code(self.chain[0].function)
        found = ""
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code is own:
                return self.plugin
            found = owners.get(code, found)
            tb = tb.tb_next
        return found or self.plugin


class HookResultError(TypeError):
    """A hook implementation returned something its hook does not accept (``42`` from a
    filter): that plugin's failure, like an exception it raised — never read as a verdict."""


def _describe(value: object) -> str:
    text = repr(value)
    return (
        f"{text[:60]}… ({type(value).__name__})"
        if len(text) > 60
        else f"{text} ({type(value).__name__})"
    )


#: Checks (and shapes) one implementation's result inside its isolated call; raises
#: :class:`HookResultError` for a result of the wrong type.
ResultCheck = Callable[[str, Any], Any]


def verdict_or_none(hook: str, result: Any) -> Any:
    """A filter's result: a :class:`FilterVerdict` or None (anything else is no verdict)."""
    if result is None or isinstance(result, FilterVerdict):
        return result
    raise HookResultError(f"{hook} returned {_describe(result)}, not a FilterVerdict or None")


def callable_or_none(hook: str, result: Any) -> Any:
    """A function (or None)."""
    if result is None or callable(result):
        return result
    raise HookResultError(f"{hook} returned {_describe(result)}, not a function or None")


def nothing(hook: str, result: Any) -> Any:
    """A hook whose result means nothing must not return one (``False`` is no "failed")."""
    if result is None:
        return None
    raise HookResultError(
        f"{hook} returned {_describe(result)}; it must return None "
        "(raise an exception to report a failure)"
    )


def items_of(*types: type, optional: bool = False) -> ResultCheck:
    """An iterable read to its end now (so an error halfway through is the plugin's), each
    item one of ``types`` (none given: any)."""
    names = " or ".join(t.__name__ for t in types) or "item"

    def check(hook: str, result: Any) -> Any:
        if result is None and optional:
            return None
        if isinstance(result, str | bytes) or not isinstance(result, Iterable):
            raise HookResultError(f"{hook} returned {_describe(result)}, not a list of {names}")
        items = list(result)
        for item in items:
            if types and not isinstance(item, types):
                raise HookResultError(
                    f"{hook} returned a list holding {_describe(item)}, not a {names}"
                )
        return items

    return check


_ACTIONS = items_of(optional=True)


#: What a wrapped implementation itself returned, in this thread (:func:`_recording`).
_returned = threading.local()
_NOTHING = object()


def _recording(impl: HookImpl) -> HookImpl:
    """``impl`` noting what it returns, so that a wrong result a wrapper made of a right one
    is blamed on the wrapper."""
    function = impl.function

    def recorded(*args: Any, **kwargs: Any) -> Any:
        _returned.value = result = function(*args, **kwargs)
        return result

    recorded.__wrapped__ = function  # type: ignore[attr-defined]  # its frames are the plugin's
    bound = copy.copy(impl)
    object.__setattr__(bound, "function", recorded)
    return bound


def _wrong_result_culprit(call: _Call, hook: str, check: ResultCheck, exc: HookResultError) -> str:
    """Who returned the wrong result: the implementation, unless its own result was right
    and one wrapper changed it (several: the message names them)."""
    wrappers = list(dict.fromkeys(impl.plugin_name for impl in call.chain[1:]))
    if not wrappers:
        return call.plugin
    own = getattr(_returned, "value", _NOTHING)
    if own is _NOTHING or _iter_once(own):  # unknown, or reading it again would run its code
        exc.args = (
            f"{exc} (wrapped by {', '.join(wrappers)}: one of them may have changed the result)",
        )
        return call.plugin
    try:
        check(hook, own)
    except HookResultError:
        return call.plugin  # its own result was wrong already
    if len(wrappers) == 1:
        exc.args = (f"{exc} (a wrapper around plugin {call.plugin}, whose own result was right)",)
        return wrappers[0]
    exc.args = (
        f"{exc} (plugin {call.plugin}'s own result was right; one of the wrappers "
        f"{', '.join(wrappers)} changed it)",
    )
    return call.plugin


def _iter_once(value: object) -> bool:
    """Whether ``value`` is an iterator (reading it consumes it)."""
    return isinstance(value, Iterator)


@dataclass(frozen=True, slots=True)
class _HookPlan:
    """How one hook is called: each implementation in order, and whether it is
    ``firstresult``. Built once per hook until the set of plugins changes."""

    #: Each call, with its implementation when nothing wraps it (see :attr:`_Call.alone`).
    calls: tuple[tuple[_Call, HookImpl | None], ...]
    firstresult: bool

    @classmethod
    def of(
        cls, caller: pluggy.HookCaller, order: Sequence[str], records: Mapping[str, PluginRecord]
    ) -> _HookPlan:
        rank = {n: i for i, n in enumerate(order)}

        def key(impl: HookImpl) -> tuple[int, int, str]:
            return _tier(impl), rank.get(impl.plugin_name, len(rank)), impl.plugin_name

        impls = caller.get_hookimpls()
        wrappers = sorted((i for i in impls if i.wrapper), key=key)  # outermost first
        around = tuple(_with_own_options(w, records[w.plugin_name]) for w in reversed(wrappers))
        calls = [
            _Call(
                impl.plugin_name,
                records[impl.plugin_name],
                (_recording(impl) if around else impl, *around),
            )
            for impl in sorted((i for i in impls if not i.wrapper), key=key)
        ]
        return cls(
            tuple((call, call.chain[0] if call.alone else None) for call in calls),
            bool(caller.spec and caller.spec.opts.get("firstresult")),
        )


def _refusal(caller: pluggy.HookCaller, impl: HookImpl) -> str:
    """Why nebridge refuses this hook implementation ("" when it is fine)."""
    if caller.spec is None:
        if impl.optionalhook:
            return ""
        return (
            f"implements {caller.name}, which is not a hook of this nebridge (hook API "
            f"{HOOK_API_VERSION}; `docs/plugins.md` lists them): fix the name, or mark it "
            "@hookimpl(optionalhook=True) if it is meant for a newer nebridge"
        )
    if impl.hookwrapper:
        return (
            f"implements {caller.name} as an old-style hookwrapper=True, which nebridge "
            "does not run: make it @hookimpl(wrapper=True) (`result = yield` gives the "
            "wrapped plugin's result; return what the call should return)"
        )
    return ""


def _api_mismatch(wanted: str) -> str:
    """Why a plugin that declares ``hook_api=wanted`` cannot run here ("" when it can)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import Version

    try:
        if not wanted.strip():  # an empty SpecifierSet accepts every version
            raise InvalidSpecifier(wanted)
        accepted = SpecifierSet(wanted)
    except InvalidSpecifier:
        return (
            f"declares hook_api={wanted!r}, which is not a version range; write it like "
            f"'>=1.1,<2' (this nebridge provides hook API {HOOK_API_VERSION})"
        )
    if Version(HOOK_API_VERSION) in accepted:
        return ""
    return (
        f"needs hook API {wanted} but this nebridge provides hook API {HOOK_API_VERSION}: "
        "install a version of the plugin made for this hook API, or a nebridge whose "
        "hook API it accepts (`pip install -U` the plugin; its README names the versions)"
    )


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
        self._plans: dict[str, _HookPlan] = {}

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
        self._plans.clear()
        _watch_sigint()
        for name in sorted(set(eps) | set(extra)):
            enabled = name in wanted
            ep = eps.get(name)
            distribution, version = distribution_label(ep.dist) if ep and ep.dist else ("", "")
            record = PluginRecord(
                name=name,
                state=PluginState.DISABLED,
                enabled=enabled,
                source=ep.value if ep else "registered object",
                distribution=distribution,
                version=version,
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
            callers = self.pm.get_hookcallers(plugin) or []
            record.hooks = sorted(caller.name for caller in callers if caller.spec)
            refusals = [
                why
                for caller in callers
                for impl in caller.get_hookimpls()
                if impl.plugin is plugin and (why := _refusal(caller, impl))
            ]
            if refusals:
                self._fail(name, "; ".join(refusals))
        self._plans.clear()
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
            self._plans.clear()
        log.error("plugin %s failed: %s", name, error)

    def _read_infos(self) -> None:
        """Read each plugin's :class:`PluginInfo`; refuse a plugin without a valid one or
        whose hook API range excludes :data:`hooks.HOOK_API_VERSION`."""
        for outcome in self._call_each(PLUGIN_INFO, {}):
            record = self.records[outcome.plugin]
            if outcome.error is not None:
                self._fail(
                    outcome.plugin, f"nebridge_plugin_info raised {_short_error(outcome.error)}"
                )
            elif not isinstance(outcome.result, PluginInfo):
                self._fail(outcome.plugin, "nebridge_plugin_info must return a PluginInfo")
            elif outcome.result.name != outcome.plugin:
                self._fail(
                    outcome.plugin,
                    f"calls itself {outcome.result.name!r} but is registered as "
                    f"{outcome.plugin!r}; the entry-point name must equal PluginInfo.name",
                )
            elif mismatch := _api_mismatch(outcome.result.hook_api):
                record.info = outcome.result
                self._fail(outcome.plugin, mismatch)
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
                record, config.plugin_options(name), ("plugins", name), loaded
            )
            if option_issues and record.state is PluginState.LOADED:
                self._fail(
                    name, "its options are invalid: " + "; ".join(str(i) for i in option_issues)
                )
            issues.extend(option_issues)
        self._deactivate_broken_dependents()
        self._log_paused_stages()
        return issues

    def _log_paused_stages(self) -> None:
        """One line per set of not-loaded plugins naming the stages they pause (each
        plugin's error was logged once already, when it failed)."""
        paused: dict[tuple[str, ...], list[str]] = {}
        for stage, records in self.stage_blockers().items():
            paused.setdefault(tuple(r.name for r in records), []).append(stage)
        for names, stages in paused.items():
            log.error(
                "%s %s %s paused for every warehouse while %s %s not loaded "
                "(`nebridge plugins list` says why): fix or disable %s",
                "stage" if len(stages) == 1 else "stages",
                ", ".join(stages),
                "is" if len(stages) == 1 else "are",
                f"plugin {names[0]}" if len(names) == 1 else f"plugins {', '.join(names)}",
                "is" if len(names) == 1 else "are",
                "it" if len(names) == 1 else "them",
            )

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
                ConfigIssue(
                    yaml_path((*loc, key)),
                    f"unknown key `{key}`: plugin {record.name} takes no options"
                    f"{did_you_mean(str(key), ['enabled'])}",
                    loaded.line_of((*loc, key)),
                )
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
            probe.load(
                config.model_copy(update={"plugins": {name: {"enabled": True}}}),
                entry_points=entry_points,
            )
            found = probe.records.get(name)
            if found is None or found.state is not PluginState.LOADED:
                warnings.append(
                    f"the options of disabled plugin {name} were not checked: it "
                    f"cannot be loaded ({found.error if found else 'not found'})"
                )
                continue
            issues.extend(probe._validate_options(found, options, ("plugins", name), loaded))
        return issues, warnings

    def _wms_section_issues(self, loaded: LoadedConfig) -> list[ConfigIssue]:
        """``wms:`` holds ``connector`` and sections named after installed connectors only."""
        connectors = [
            n.removeprefix(CONNECTOR_PREFIX) for n in self.records if n.startswith(CONNECTOR_PREFIX)
        ]
        known = ["connector", *connectors]
        issues = []
        for key in loaded.config.wms.model_extra or {}:
            if key not in known:
                issues.append(
                    ConfigIssue(
                        f"wms.{key}", unknown_key(str(key), known), loaded.line_of(("wms", key))
                    )
                )
        return issues

    def _deactivate_broken_dependents(self) -> None:
        changed = True
        while changed:
            changed = False
            for record in self.records.values():
                if record.state is not PluginState.LOADED or record.info is None:
                    continue
                missing = [
                    r
                    for r in record.info.requires
                    if self.records.get(r) is None
                    or self.records[r].state is not PluginState.LOADED
                ]
                if missing:
                    record.state = PluginState.INACTIVE
                    record.error = f"requires {', '.join(missing)}, which is not available"
                    plugin = self.pm.get_plugin(record.name)
                    if plugin is not None:
                        self.pm.unregister(plugin)
                        self._plans.clear()
                    changed = True

    # -- calling ----------------------------------------------------------------------------

    def loaded_names(self) -> list[str]:
        """Loaded plugins in configuration order."""
        names = [n for n, r in self.records.items() if r.state is PluginState.LOADED]
        rank = {n: i for i, n in enumerate(self._order)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))

    def _plan(self, hook: Hook[Any]) -> _HookPlan:
        """How ``hook`` is called (kept until the set of plugins changes)."""
        plan = self._plans.get(hook.name)
        if plan is None:
            plan = self._plans[hook.name] = _HookPlan.of(
                getattr(self.pm.hook, hook.name), self._order, self.records
            )
        return plan

    def _call_each(
        self,
        hook: Hook[R],
        kwargs: Mapping[str, Any],
        only: str | None = None,
        check: ResultCheck | None = None,
        slow_after: float | None = None,
    ) -> list[HookOutcome[R]]:
        """Call each plugin's implementation of ``hook`` on its own, through pluggy.

        Order: ``tryfirst`` implementations, then plain ones, then ``trylast`` ones, each tier
        in configuration order. Every ``wrapper=True`` implementation wraps each call, and
        hook-call monitoring (``pm.add_hookcall_monitoring``) sees each call. ``options`` is
        the called plugin's own validated options. An exception — from the plugin or from a
        wrapper around it — is caught and returned in the outcome of the plugin whose code
        raised it. For a ``firstresult`` hook the calls stop at the first non-None result.
        ``only`` calls that one plugin alone.

        When nothing wraps an implementation and nothing monitors hook calls, pluggy's
        ``_multicall`` of that one implementation is exactly ``function(*args)``: the host
        makes that call itself, one frame less on the per-event path (issue #18).

        ``check`` validates (and shapes: an iterable is read to its end) each result inside
        the isolated call: a wrong type is a :class:`HookResultError` in that plugin's outcome
        (fail closed), or in the wrapper's when the implementation's own result was right
        and the one wrapper around it changed it. ``slow_after`` seconds into one call, a
        warning names the plugin (the call is not cut off: that is not safe).
        """
        plan = self._plan(hook)
        hookexec = self.pm._hookexec  # what pluggy's own HookCaller calls (monitoring included)
        unobserved = self.pm._inner_hookexec is _multicall  # no monitoring, no tracing
        outcomes: list[HookOutcome[R]] = []
        for call, direct in plan.calls:
            if only is not None and call.plugin != only:
                continue
            token = push_plugin_context(call.plugin)
            before = _sigints
            args = {**kwargs, "options": call.record.options}
            if direct is None:
                _returned.value = _NOTHING  # set by the implementation, if it returns
            slow = None
            if slow_after is not None:
                slow = threading.Timer(
                    slow_after, _still_calling, (call.plugin, hook.name, slow_after)
                )
                slow.daemon = True
                slow.start()
            try:
                if unobserved and direct is not None:  # _multicall's own steps, one frame less
                    result = direct.function(*[args[name] for name in direct.argnames])
                else:
                    result = hookexec(hook.name, call.chain, args, True)
                if check is not None:
                    result = check(hook.name, result)
            except HookResultError as exc:
                culprit = (
                    _wrong_result_culprit(call, hook.name, check, exc) if check else call.plugin
                )
                outcomes.append(HookOutcome(culprit, error=exc))
                continue
            except BaseException as exc:  # sys.exit() in a hook is that plugin's failure
                if users_interrupt(exc, before):
                    raise
                outcomes.append(HookOutcome(call.culprit(exc), error=exc))
                continue
            finally:
                reset_log_context(token)
                if slow is not None:
                    slow.cancel()
            outcomes.append(HookOutcome(call.plugin, cast(R, result)))
            if plan.firstresult and result is not None:
                break
        return outcomes

    def _logged_first(
        self, hook: Hook[R], kwargs: Mapping[str, Any], check: ResultCheck | None = None
    ) -> R | None:
        """The first non-None result of a ``firstresult`` hook; failures are logged."""
        for outcome in self._call_each(hook, kwargs, check=check):
            if outcome.error is not None:
                log.error(
                    "plugin %s raised in %s: %s",
                    outcome.plugin,
                    hook.name,
                    _short_error(outcome.error),
                )
            elif outcome.result is not None:
                return outcome.result
        return None

    # -- the hooks, typed (engine code calls these, never a hook by its name) -----------------

    def filter_order(
        self, order: NeOrder, warehouse: WarehouseInfo
    ) -> list[HookOutcome[FilterVerdict | None]]:
        """Every filter plugin's verdict on importing ``order`` into ``warehouse``."""
        return self._call_each(
            FILTER_ORDER, {"order": order, "warehouse": warehouse}, check=verdict_or_none
        )

    def link_code_key(self) -> Callable[[str], str] | None:
        """The link-code matching key of the first plugin that offers one (None: exact)."""
        return self._logged_first(LINK_CODE_KEY, {}, check=callable_or_none)

    def shipment_actions(
        self, shipment: WmsShipment, warehouse: WarehouseInfo
    ) -> list[HookOutcome[Iterable[Action] | None]]:
        """Every plugin's actions for a shipment confirmed in the WMS."""
        return self._call_each(
            SHIPMENT_ACTIONS, {"shipment": shipment, "warehouse": warehouse}, check=_ACTIONS
        )

    def receipt_actions(
        self, receipt: WmsReceipt, warehouse: WarehouseInfo
    ) -> list[HookOutcome[Iterable[Action] | None]]:
        """Every plugin's actions for a receipt confirmed in the WMS."""
        return self._call_each(
            RECEIPT_ACTIONS, {"receipt": receipt, "warehouse": warehouse}, check=_ACTIONS
        )

    def event_actions(
        self, event: WmsShipment | WmsReceipt, warehouse: WarehouseInfo
    ) -> list[HookOutcome[Iterable[Action] | None]]:
        """:meth:`shipment_actions` or :meth:`receipt_actions`, by the kind of ``event``."""
        if isinstance(event, WmsShipment):
            return self.shipment_actions(event, warehouse)
        return self.receipt_actions(event, warehouse)

    def health_checks(
        self, connector: ConnectorInUse | None
    ) -> list[HookOutcome[Iterable[HealthCheck]]]:
        """Every plugin's health checks for ``nebridge doctor``."""
        return self._call_each(
            HEALTH_CHECKS,
            {"connector": connector},
            check=items_of(HealthCheck),
            slow_after=SLOW_HEALTH_CHECK_SECONDS,
        )

    def cli_commands(self, config_path: Path) -> list[HookOutcome[Iterable[CliCommand]]]:
        """Every plugin's commands for the root ``nebridge`` group."""
        return self._call_each(
            CLI_COMMANDS, {"config_path": config_path}, check=items_of(CliCommand)
        )

    def sandboxes(self) -> list[HookOutcome[Iterable[SandboxSpec]]]:
        """Every plugin's local sandboxes (``nebridge sandbox serve NAME``)."""
        return self._call_each(SANDBOXES, {}, check=items_of(SandboxSpec))

    def demos(self, plugin: str) -> list[HookOutcome[Iterable[DemoSpec]]]:
        """The demos ``plugin`` offers (``nebridge demo --wms NAME``)."""
        return self._call_each(DEMOS, {}, only=plugin, check=items_of(DemoSpec))

    def notify_sinks(self) -> list[str]:
        """The loaded plugins that deliver notifications, in calling order."""
        return [call.plugin for call, _direct in self._plan(NOTIFY).calls]

    def notify(
        self, sink: str, notification: Notification, ctx: NotifyContext
    ) -> HookOutcome[None] | None:
        """Deliver ``notification`` to one sink (None: ``sink`` delivers no notifications)."""
        for outcome in self._call_each(
            NOTIFY, {"notification": notification, "ctx": ctx}, only=sink, check=nothing
        ):
            return outcome
        return None

    def connector_specs(self) -> dict[str, tuple[str, ConnectorSpec]]:
        """Connector types offered by loaded plugins: name → (plugin, spec)."""
        specs: dict[str, tuple[str, ConnectorSpec]] = {}
        for outcome in self._call_each(WMS_CONNECTORS, {}, check=items_of(ConnectorSpec)):
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
                        spec.name,
                        specs[spec.name][0],
                        outcome.plugin,
                    )
                    continue
                specs[spec.name] = (outcome.plugin, spec)
        return specs

    def failed(self) -> list[PluginRecord]:
        """Enabled plugins that failed to load or are inactive."""
        return [
            r
            for r in self.records.values()
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
            stage: "; ".join(
                f"plugin {r.name} is enabled but {r.state.value}: {r.error}" for r in records
            )
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
        issues = [
            ConfigIssue(
                yaml_path((*loc, key)), unknown_key(str(key), known), loaded.line_of((*loc, key))
            )
            for key in options
            if key not in accepted
        ]
    try:
        value = model.model_validate(dict(options))
    except ValidationError as exc:
        return issues + validation_issues(exc, model, loaded.raw, loc, also), None
    return issues, None if issues else value
