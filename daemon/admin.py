"""Service functions behind the admin CLI (the CLI only parses and prints)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap
from sqlalchemy import Engine, func
from sqlmodel import col, select

from daemon import attention
from daemon.attention import AttentionItem, AttentionReport
from daemon.config import (
    ConfigError,
    ConfigIssue,
    DaemonConfig,
    LoadedConfig,
    parse_config,
    read_yaml,
)
from daemon.inbox import IntakeReport
from daemon.nelink import link_info
from daemon.notify import HOOK as NOTIFY_HOOK
from daemon.notify import NotifyReport, pending_by_sink
from daemon.outbox import DispatchReport, backlog_by_state
from daemon.pipeline import StageResult
from daemon.pluginmanager import PluginHost, PluginRecord, PluginState
from daemon.runtime import Runtime, build_runtime, load_plugins
from daemon.stock import check as stock_check
from daemon.store.engine import (
    Bind,
    current_revision,
    driver_problem,
    head_revision,
    make_engine,
    read_session,
)
from daemon.store.models import (
    InboxEvent,
    OutboxItem,
    OutboxState,
    RunRecord,
    utcnow,
)
from daemon.tokenguard import horizon_warning
from daemon.yamledit import (
    ConfigNotWritable,
    dump,
    set_plugin_enabled,
    set_warehouse_field,
    write_atomically,
)
from hooks.connectors import AuthorizingConnector


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
            warnings.append(f"plugin {name} has options but no `enabled:` line, so it is off; "
                            f"write `enabled: false` to keep it off on purpose, or enable it "
                            f"(`nebridge plugins enable {name}`)")
    missing_driver = driver_problem(loaded.config.resolved_database_url)
    if missing_driver:
        issues.append(ConfigIssue("database_url", missing_driver,
                                  loaded.line_of(("database_url",))))
    paused = host.paused_stages()
    for record in host.failed():
        prefix = f"plugins.{record.name}"
        if not record.enabled or any(i.path.startswith(prefix) for i in issues):
            continue  # its own problems are listed already
        stages = [s for s in record.stages() if s in paused]
        issues.append(ConfigIssue(
            f"{prefix}.enabled",
            f"plugin {record.name} is enabled but {record.state.value}: {record.error}; "
            f"{', '.join(stages) or 'no stage'} would be paused — repair the plugin or "
            f"disable it (`nebridge plugins disable {record.name}`)",
            loaded.line_of(("plugins", record.name, "enabled"))))
    return ConfigCheck(host, issues, warnings)


def change_plugin(config_path: Path, name: str, enabled: bool) -> list[str]:
    """Enable or disable a plugin in ``daemon.yaml``; refuse changes that break dependencies.

    Returns notes for the admin (e.g. how to apply the change to the running daemon).
    """
    raw = read_yaml(config_path)
    current = parse_config(raw, config_path)
    host, _ = plugin_host(current)
    if name not in host.records:
        raise AdminError(f"no installed plugin is called {name!r}; "
                         "`nebridge plugins list` shows the installed ones")
    if enabled:
        _check_can_enable(config_path, name, current)
    else:
        dependents = sorted(
            r.name for r in host.records.values()
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
        new = parse_config(raw, config_path)
    except ConfigError as exc:
        raise AdminError(str(exc)) from None
    _, issues = plugin_host(new)
    if issues:
        raise AdminError(str(ConfigError(config_path, issues)))
    _write(config_path, raw)
    state = "enabled" if enabled else "disabled"
    return [f"plugin {name} {state} in {config_path}",
            "apply it to a running daemon with `systemctl reload nebridge` (SIGHUP)"]


def _check_can_enable(config_path: Path, name: str, current: LoadedConfig) -> None:
    raw = read_yaml(config_path)
    set_plugin_enabled(raw, name, True)
    probe, _ = plugin_host(parse_config(raw, config_path))
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
    return [plugin_record(host, r.name).as_dict() for r in records
            if r.enabled or not enabled_only]


def plugin_record(host: PluginHost, name: str) -> PluginRecord:
    """The record of ``name``; for a disabled plugin, as it would load if enabled.

    The plugin is imported into a throwaway host (its module code runs, none of its hooks
    are called but ``nebridge_plugin_info``), so its summary, requirements, hooks and options
    can be shown while it stays disabled; ``enabled`` stays false. A plugin that cannot be
    imported keeps state ``disabled`` with the import error.
    """
    record = host.records.get(name)
    if record is None:
        raise AdminError(f"no installed plugin is called {name!r}; "
                         "`nebridge plugins list` shows the installed ones")
    if record.enabled:
        return record
    probe = PluginHost()
    probe.load(DaemonConfig(plugins={name: {"enabled": True}}))
    found = probe.records.get(name)
    if found is None:
        return record
    return replace(found, state=PluginState.DISABLED, enabled=False,
                   error=f"cannot be loaded: {found.error}" if found.error else "")


def plugin_details(host: PluginHost, name: str) -> dict[str, Any]:
    """Everything about one plugin, including its config JSON schema (disabled ones too)."""
    record = plugin_record(host, name)
    data = record.as_dict()
    model = record.info.config_model if record.info else None
    data["setting_ja"] = record.info.setting_ja if record.info else ""
    data["config_schema"] = model.model_json_schema() if model is not None else None
    if not record.enabled and record.info is None:
        data["note"] = (f"its summary and options cannot be shown: the plugin does not load "
                        f"({record.error or 'no plugin information'})")
    return data


# -- warehouses -------------------------------------------------------------------------------


def set_warehouse_link(config_path: Path, code: str, linked: bool) -> list[str]:
    """Set a warehouse's Next Engine link flag (拠点設定) in ``daemon.yaml``."""
    raw = read_yaml(config_path)
    if not set_warehouse_field(raw, code, "ne_linked", linked):
        codes = ", ".join(str(w.get("code")) for w in raw.get("warehouses") or [])
        raise AdminError(f"no warehouse with code {code!r} in {config_path} "
                         f"(configured: {codes or 'none'})")
    try:
        parse_config(raw, config_path)
    except ConfigError as exc:
        raise AdminError(str(exc)) from None
    _write(config_path, raw)
    effect = ("stock changes at this warehouse will now reach Next Engine" if linked
              else "stock changes at this warehouse will no longer reach Next Engine")
    return [f"warehouse {code}: ne_linked={str(linked).lower()} ({effect})",
            "apply it to a running daemon with `systemctl reload nebridge` (SIGHUP)"]


def warehouse_rows(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """Rows for ``warehouses list``."""
    return [
        {"code": w.code, "name": w.name, "ne_linked": w.ne_linked,
         "import_orders": w.import_orders, "shop_ids": list(w.shop_ids)}
        for w in loaded.config.warehouses
    ]


# -- run once ---------------------------------------------------------------------------------


@dataclass
class RunOnceReport:
    """Everything one ``run --once`` pass did (or, dry, would do)."""

    intake: IntakeReport | None = None
    stages: list[StageResult] = field(default_factory=list)
    dispatch: DispatchReport | None = None
    dispatch_plan: list[str] = field(default_factory=list)
    attention: AttentionReport = field(default_factory=AttentionReport)
    problems: list[str] = field(default_factory=list)
    notify: NotifyReport | None = None

    @property
    def ok(self) -> bool:
        """Nothing failed, was paused or crashed, and nothing waits for a person."""
        return not self.problems and not self.attention.total


def run_once(
    runtime: Runtime, dry_run: bool = False, progress: Callable[[str], None] = lambda _m: None
) -> RunOnceReport:
    """Intake, every warehouse pipeline once, then drain the outbox as far as it can.

    A dry run goes through the same steps inside one database transaction that is rolled
    back, takes no file away, sends nothing to the WMS and makes no Next Engine call that
    changes anything; it reports what it would have done.
    """
    if dry_run:
        with runtime.dry() as view:
            return _run_once(view, True, progress)
    return _run_once(runtime, False, progress)


def _run_once(runtime: Runtime, dry_run: bool, progress: Callable[[str], None]) -> RunOnceReport:
    report = RunOnceReport()
    if runtime.connector is not None:
        if not dry_run:
            runtime.connector.recover(runtime.connector_context())
        intake = runtime.intake()
        if intake is not None:
            progress("reading WMS input")
            report.intake = intake.run_once(dry_run=dry_run)
            report.problems.extend(f"rejected {s}" for s in report.intake.rejected)
            report.problems.extend(report.intake.failures)
    for pipeline in runtime.pipelines():
        progress(f"warehouse {pipeline.warehouse.code}")
        results = pipeline.run_once(dry_run=dry_run)
        report.stages.extend(results)
        for r in results:
            report.problems.extend(f"{r.warehouse}/{r.stage.value}: {f}" for f in r.failures)
            if r.paused_reason:
                report.problems.append(f"{r.warehouse}/{r.stage.value}: paused")
    if not dry_run and report.intake is not None and report.intake.stock_snapshots:
        progress("comparing stock with Next Engine")
        try:
            stock_check(runtime, take=False)
        except Exception as exc:  # Next Engine down: the next snapshot or schedule compares
            report.problems.append(f"stock comparison failed: {exc}; `nebridge stock diff` "
                                   "runs it by hand")
    if dry_run:
        report.dispatch_plan = describe_pending(runtime.db)
    else:
        progress("dispatching to Next Engine")
        report.dispatch = runtime.dispatcher().run_once()
        report.problems.extend(f"dispatcher: {e}" for e in report.dispatch.errors)
        progress("sending notifications")
        notifier = runtime.notifier()
        notifier.recover()  # this process holds the instance lock: nothing else is sending
        report.notify = notifier.run_once()
    report.attention = attention.collect(runtime.db, live=live_attention(runtime.host),
                                         limit=ATTENTION_LIMIT)
    return report


#: How many attention items ``status`` and ``run --once`` show (every kind is counted).
ATTENTION_LIMIT = 20


def live_attention(host: PluginHost) -> list[AttentionItem]:
    """Attention items that are not stored: the stages paused by this plugin host."""
    return attention.paused_stage_items(host)


def attention_report(
    loaded: LoadedConfig, limit: int = ATTENTION_LIMIT, warehouse: str | None = None
) -> AttentionReport:
    """Everything that waits for a person under this configuration (``nebridge attention``).

    Paused stages come from loading the configured plugins as the daemon would; the rest
    from the database, which must exist and be migrated.
    """
    host, _issues = plugin_host(loaded)
    engine = make_engine(loaded.config.resolved_database_url, create=False)
    try:
        if current_revision(engine) != head_revision(engine):
            raise AdminError("the database is not migrated (or does not exist yet): run "
                             "`nebridge db upgrade`")
        return attention.collect(engine, live=live_attention(host), limit=limit,
                                 warehouse=warehouse)
    finally:
        engine.dispose()


def describe_pending(engine: Bind) -> list[str]:
    """One line per pending outbox item (what a dispatch would send)."""
    with read_session(engine) as session:
        items = list(session.scalars(
            select(OutboxItem).where(col(OutboxItem.state) == OutboxState.PENDING.value)
            .order_by(col(OutboxItem.id))
        ))
    return [f"{i.kind} {i.subject} (warehouse {i.warehouse}, from {i.plugin}): {i.payload}"
            for i in items]


# -- status -----------------------------------------------------------------------------------


def wms_link(loaded: LoadedConfig) -> dict[str, str] | None:
    """The WMS authorisation state, for connectors that need one (None otherwise)."""
    try:
        runtime = build_runtime(loaded=loaded)
    except Exception:  # an invalid config or database is reported by the other checks
        return None
    try:
        connector: object = runtime.connector
        if not isinstance(connector, AuthorizingConnector):
            return None
        link = connector.link_status(runtime.connector_context())
        return {"connector": loaded.config.wms.connector, "state": link.state,
                "detail": link.detail}
    finally:
        runtime.close()


def collect_status(loaded: LoadedConfig, engine: Engine, host: PluginHost) -> dict[str, Any]:
    """The data behind ``nebridge status``."""
    current, head = current_revision(engine), head_revision(engine)
    status: dict[str, Any] = {
        "config": str(loaded.path),
        "database": {"revision": current, "latest": head, "up_to_date": current == head},
        "plugins": {
            "loaded": host.loaded_names(),
            "needs_attention": [
                {"name": r.name, "state": r.state.value, "error": r.error} for r in host.failed()
            ],
        },
        "warehouses": [],
        "inbox": {},
        "outbox": {},
        "paused_stages": host.paused_stages(),
        "attention": attention.collect(None, live=live_attention(host),
                                       limit=ATTENTION_LIMIT).as_dict(),
    }
    if current != head:
        status["problems"] = ["database not migrated: run `nebridge db upgrade`"]
        return status
    link = link_info(loaded.config, engine)
    status["nextengine"] = link.as_dict()
    status["nextengine"]["warning"] = horizon_warning(link.refresh_token_end, utcnow())
    with read_session(engine) as session:
        for wh in loaded.config.warehouses:
            stages = {}
            for stage in ("import_orders", "shipments", "receipts"):
                run = session.scalars(
                    select(RunRecord)
                    .where(col(RunRecord.warehouse) == wh.code)
                    .where(col(RunRecord.stage) == stage)
                    .order_by(col(RunRecord.started_at).desc())
                    .limit(1)
                ).first()
                stages[stage] = None if run is None else {
                    "at": run.started_at.isoformat(), "outcome": run.outcome,
                    "items_in": run.items_in, "items_out": run.items_out,
                    "detail": run.detail,
                }
            status["warehouses"].append(
                {"code": wh.code, "name": wh.name, "ne_linked": wh.ne_linked,
                 "import_orders": wh.import_orders, "stages": stages}
            )
        rows = session.execute(
            select(col(InboxEvent.kind), col(InboxEvent.state), func.count())
            .group_by(col(InboxEvent.kind), col(InboxEvent.state))
        ).all()
    for kind, state, n in rows:
        status["inbox"].setdefault(str(kind), {})[str(state)] = int(n)
    status["outbox"] = backlog_by_state(engine)
    status["attention"] = attention.collect(engine, live=live_attention(host),
                                            limit=ATTENTION_LIMIT).as_dict()
    status["notify"] = {"sinks": host.implementers(NOTIFY_HOOK),
                        "waiting": pending_by_sink(engine)}
    return status
