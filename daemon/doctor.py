"""``nebridge doctor``: is this installation able to do its job, and if not, what to do.

Every check returns a :class:`~hooks.records.HealthCheck` with a fix for the admin; plugins add
their own through ``nebridge_health_checks``.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests

from daemon import USER_AGENT
from daemon.attention import collect, paused_stage_items
from daemon.config import ConfigError, ConfigIssue, LoadedConfig, load_config
from daemon.config_admin import check_config
from daemon.nelink import CONNECTED, RECONNECT_HINT, link_info, make_client, token_store
from daemon.nextengine.errors import NeReauthRequired, NextEngineError
from daemon.nextengine.tokens import TokenStore
from daemon.pluginload import load_plugins
from daemon.pluginmanager import HookResultError, PluginHost
from daemon.status import wms_link
from daemon.store.engine import (
    DatabaseNotMigrated,
    current_revision,
    head_revision,
    human_duration,
    make_engine,
)
from daemon.store.models import utcnow
from daemon.surface import connector_in_use
from hooks.records import HealthCheck
from hooks.surface import ConnectorInUse

MAX_CLOCK_SKEW = timedelta(minutes=2)
HORIZON_WARN = timedelta(hours=24)


@dataclass
class Diagnosis:
    """What ``doctor`` found: checks (a failed one makes it exit 1) and warnings (exit 0)."""

    checks: list[HealthCheck] = field(default_factory=list)
    warnings: list[HealthCheck] = field(default_factory=list)

    @property
    def failed(self) -> list[HealthCheck]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]


def diagnose(
    config_path: Path,
    offline: bool = False,
    *,
    loaded: LoadedConfig | None = None,
    store: TokenStore | None = None,
) -> Diagnosis:
    """Every check, then a warning while anything waits for a person. ``loaded`` is the
    configuration already read (in fleet mode a company's) and ``store`` where its token
    pair lives (default: the token file; in fleet mode the vault)."""
    if loaded is None:
        try:
            loaded = load_config(config_path)
        except ConfigError as exc:
            return Diagnosis(
                [
                    HealthCheck(
                        "config",
                        False,
                        str(exc),
                        "fix the listed problems, then run `nebridge doctor` again",
                    )
                ]
            )
    found = check_config(loaded)
    checks = run_checks(loaded, found.host, found.issues, offline, store=store)
    warnings = [
        HealthCheck("config", False, w, "repair the plugin or remove its options")
        for w in found.warnings
    ]
    if all(c.ok for c in checks if c.name == "database"):
        warnings.extend(_attention(loaded))
    return Diagnosis(checks, warnings)


def _attention(loaded: LoadedConfig) -> list[HealthCheck]:
    """A warning naming what waits for a person (paused stages are a failed check)."""
    engine = make_engine(loaded.config.resolved_database_url, create=False)
    try:
        report = collect(engine, limit=1)
    finally:
        engine.dispose()
    if not report.total:
        return []
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(report.counts.items()))
    newest = report.items[0]
    return [
        HealthCheck(
            "attention",
            False,
            f"{counts} wait for a person (newest: {newest.reason})",
            "`nebridge attention` lists each with its fix",
        )
    ]


def run_checks(
    loaded: LoadedConfig,
    host: PluginHost,
    issues: list[ConfigIssue],
    offline: bool = False,
    *,
    store: TokenStore | None = None,
) -> list[HealthCheck]:
    """Every check, in the order an admin would fix things."""
    checks = [
        HealthCheck(
            "config",
            not issues,
            "daemon.yaml is valid" if not issues else "; ".join(str(i) for i in issues),
            "" if not issues else "fix the listed problems (`nebridge config check` shows lines)",
        )
    ]
    failed = host.failed()
    checks.append(
        HealthCheck(
            "plugins",
            not failed,
            f"{len(host.loaded_names())} loaded"
            if not failed
            else "; ".join(f"{r.name} {r.state.value}: {r.error}" for r in failed),
            ""
            if not failed
            else "reinstall or disable the failed plugin (`nebridge plugins disable NAME`)",
        )
    )
    paused = paused_stage_items(host)
    checks.append(
        HealthCheck(
            "paused stages",
            not paused,
            "; ".join(p.reason for p in paused) if paused else "no stage is paused",
            paused[0].fix if paused else "",
        )
    )
    checks.extend(_database(loaded))
    if checks[-1].ok:
        checks.extend(_nextengine(loaded, offline, store))
    link = wms_link(loaded, load_plugins(loaded)[2])
    if link is not None:
        checks.append(
            HealthCheck(
                f"wms link ({link['connector']})",
                link["state"] == "connected",
                link["detail"],
                "" if link["state"] == "connected" else "run `nebridge wms connect`",
            )
        )
    checks.extend(_plugin_checks(host, connector_in_use(loaded, host)))
    return checks


def _database(loaded: LoadedConfig) -> list[HealthCheck]:
    try:
        engine = make_engine(loaded.config.resolved_database_url, create=False)
    except DatabaseNotMigrated as exc:  # a missing SQLite file: doctor creates nothing
        return [HealthCheck("database", False, str(exc), "run `nebridge db upgrade`")]
    try:
        current, head = current_revision(engine), head_revision(engine)
    except Exception as exc:
        return [
            HealthCheck(
                "database",
                False,
                f"cannot open the database: {exc}",
                "check `database_url` and that the database server is running",
            )
        ]
    finally:
        engine.dispose()
    return [
        HealthCheck(
            "database",
            current == head,
            f"at migration {current or '(empty)'}; latest is {head}",
            "" if current == head else "run `nebridge db upgrade`",
        )
    ]


def _nextengine(
    loaded: LoadedConfig, offline: bool, store: TokenStore | None = None
) -> list[HealthCheck]:
    config = loaded.config
    engine = make_engine(config.resolved_database_url)
    try:
        info = link_info(config, engine, store=store)
    finally:
        engine.dispose()
    if info.state != CONNECTED:
        detail = f"state {info.state}" + (f": {info.reason}" if info.reason else "")
        return [
            HealthCheck(
                "nextengine link",
                False,
                detail,
                info.fix
                or (RECONNECT_HINT if info.state != "not_connected" else "run `nebridge connect`"),
            )
        ]
    checks = [
        HealthCheck(
            "nextengine link", True, f"connected to {info.company_name} ({info.company_id})"
        )
    ]
    if store is None:
        path = token_store(config).path
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0
        checks.append(
            HealthCheck(
                "token file",
                mode == 0o600,
                f"{path} mode {mode:o}",
                "" if mode == 0o600 else f"chmod 600 {path}",
            )
        )
    now = utcnow()
    left = (info.refresh_token_end - now) if info.refresh_token_end else None
    checks.append(
        HealthCheck(
            "refresh-token horizon",
            left is not None and left > HORIZON_WARN,
            _horizon(info.refresh_token_end, now, config.timezone),
            ""
            if left is not None and left > HORIZON_WARN
            else "keep the daemon running and Next Engine reachable (it renews the token); if it "
            f"already lapsed, {RECONNECT_HINT}",
        )
    )
    if offline:
        return checks
    client = make_client(config, store=store)
    try:
        company = client.company_info()
        checks.append(
            HealthCheck(
                "nextengine reachable",
                True,
                f"{config.nextengine.api_base} answered for {company.get('company_name')}",
            )
        )
    except NextEngineError as exc:
        checks.append(HealthCheck("nextengine reachable", False, exc.what(), exc.hint()))
        if isinstance(exc, NeReauthRequired):  # the stored link is dead, whatever its record says
            checks[0] = HealthCheck(
                "nextengine link",
                False,
                f"{info.company_name} ({info.company_id}): Next Engine refuses the stored "
                "token pair",
                RECONNECT_HINT,
            )
    finally:
        client.close()
    checks.append(_clock(config.nextengine.api_base, now))
    return checks


def _horizon(end: datetime | None, now: datetime, timezone: str | None) -> str:
    """How long the refresh token lasts, and until when in the zone the CLI shows times in
    (``timezone`` of daemon.yaml, else the system's): ``valid for 13d 23h, until
    2026-12-17T10:00:00+09:00``."""
    if end is None:
        return "unknown"
    until = end.astimezone(ZoneInfo(timezone) if timezone else None).isoformat(timespec="seconds")
    if end <= now:
        return f"refresh token lapsed at {until}"
    return f"refresh token valid for {human_duration((end - now).total_seconds())}, until {until}"


def _clock(api_base: str, now: datetime) -> HealthCheck:
    """Compare this machine's clock with the Date header of Next Engine's API host."""
    try:
        response = requests.head(api_base, timeout=10, headers={"User-Agent": USER_AGENT})
        remote = parsedate_to_datetime(response.headers["Date"])
    except (requests.RequestException, KeyError, TypeError, ValueError) as exc:
        return HealthCheck(
            "clock",
            False,
            f"cannot read the time of {api_base}: {exc}",
            "check the network; then make sure NTP runs (`timedatectl`)",
        )
    skew = abs(remote - now)
    return HealthCheck(
        "clock",
        skew <= MAX_CLOCK_SKEW,
        f"{skew.total_seconds():.0f} s off {api_base}",
        ""
        if skew <= MAX_CLOCK_SKEW
        else "enable time synchronisation (`timedatectl set-ntp true`)",
    )


def _plugin_checks(host: PluginHost, connector: ConnectorInUse | None) -> list[HealthCheck]:
    checks: list[HealthCheck] = []
    for outcome in host.health_checks(connector):
        if outcome.error is not None:
            what = (
                str(outcome.error)
                if isinstance(outcome.error, HookResultError)
                else f"health check raised {type(outcome.error).__name__}: {outcome.error}"
            )
            checks.append(
                HealthCheck(
                    f"plugin {outcome.plugin}",
                    False,
                    what,
                    "report it to the plugin's authors, or disable the "
                    f"plugin (`nebridge plugins disable {outcome.plugin}`)",
                )
            )
            continue
        for check in outcome.result or ():
            checks.append(
                HealthCheck(f"{outcome.plugin}: {check.name}", check.ok, check.detail, check.fix)
            )
    return checks


def as_dict(check: HealthCheck, warning: bool = False) -> dict[str, Any]:
    """JSON view of one check; a warning counts as ``ok`` (it does not fail ``doctor``)."""
    status = "warn" if warning else "ok" if check.ok else "fail"
    return {
        "name": check.name,
        "ok": check.ok or warning,
        "status": status,
        "detail": check.detail,
        "fix": check.fix,
    }
