"""The data behind ``nebridge status`` and ``nebridge attention``: read from the store and
the loaded plugins, nothing sent anywhere.

Apart from :mod:`daemon.admin` (``run --once``, which needs the whole engine) so that these
read-only commands load only the store and the plugins.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import col, select

from daemon import attention, orderwatch
from daemon.attention import AttentionItem, AttentionReport
from daemon.config import LoadedConfig
from daemon.config_admin import AdminError, plugin_host
from daemon.nelink import link_info
from daemon.nextengine.tokens import TokenStore
from daemon.notify import pending_by_sink
from daemon.outbox import backlog_by_state
from daemon.pluginmanager import PluginHost
from daemon.store.engine import current_revision, head_revision, make_engine, read_session
from daemon.store.models import InboxEvent, RunRecord, utcnow
from daemon.tokenguard import horizon_warning
from hooks.connectors import AuthorizingConnector

#: How many attention items ``status`` and ``run --once`` show (every kind is counted).
ATTENTION_LIMIT = 20


def live_attention(host: PluginHost) -> list[AttentionItem]:
    """Attention items that are not stored: the stages paused by this plugin host."""
    return attention.paused_stage_items(host)


def attention_report(
    loaded: LoadedConfig,
    limit: int = ATTENTION_LIMIT,
    warehouse: str | None = None,
    company: str = "",
) -> AttentionReport:
    """Everything that waits for a person under this configuration (``nebridge attention``;
    ``company``, in fleet mode, makes each fix's commands carry ``--company``).

    Paused stages come from loading the configured plugins as the daemon would; the rest
    from the database, which must exist and be migrated.
    """
    host, _issues = plugin_host(loaded)
    engine = make_engine(loaded.config.resolved_database_url, create=False)
    try:
        if current_revision(engine) != head_revision(engine):
            raise AdminError(
                "the database is not migrated (or does not exist yet): run `nebridge db upgrade`"
            )
        return attention.collect(
            engine, live=live_attention(host), limit=limit, warehouse=warehouse, company=company
        )
    finally:
        engine.dispose()


def wms_link(loaded: LoadedConfig, connector: object) -> dict[str, str] | None:
    """The WMS authorisation state, for connectors that need one (None otherwise).

    ``connector`` is the one :func:`~daemon.pluginload.load_plugins` built (None when the
    configuration has none that works); only an authorising one builds the engine to ask it.
    """
    if not isinstance(connector, AuthorizingConnector):
        return None
    from daemon.runtime import build_runtime  # the whole engine: only for this connector

    try:
        runtime = build_runtime(loaded=loaded)
    except Exception:  # an invalid config or database is reported by the other checks
        return None
    try:
        engine_connector: object = runtime.connector
        if not isinstance(engine_connector, AuthorizingConnector):
            return None
        link = engine_connector.link_status(runtime.connector_context())
        return {
            "connector": loaded.config.wms.connector,
            "state": link.state,
            "detail": link.detail,
        }
    finally:
        runtime.close()


def collect_status(
    loaded: LoadedConfig,
    engine: Engine,
    host: PluginHost,
    *,
    store: TokenStore | None = None,
    company: str = "",
) -> dict[str, Any]:
    """The data behind ``nebridge status``; the token pair is read from ``store`` (default:
    the token file; in fleet mode the company's row in the vault); ``company`` (fleet mode)
    makes the attention items' commands carry ``--company``."""
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
        "attention": attention.collect(
            None, live=live_attention(host), limit=ATTENTION_LIMIT, company=company
        ).as_dict(),
    }
    if current != head:
        status["problems"] = ["database not migrated: run `nebridge db upgrade`"]
        return status
    link = link_info(loaded.config, engine, store=store)
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
                stages[stage] = (
                    None
                    if run is None
                    else {
                        "at": run.started_at.isoformat(),
                        "outcome": run.outcome,
                        "items_in": run.items_in,
                        "items_out": run.items_out,
                        "detail": run.detail,
                    }
                )
            status["warehouses"].append(
                {
                    "code": wh.code,
                    "name": wh.name,
                    "ne_linked": wh.ne_linked,
                    "import_orders": wh.import_orders,
                    "stages": stages,
                }
            )
        rows = session.execute(
            select(col(InboxEvent.kind), col(InboxEvent.state), func.count()).group_by(
                col(InboxEvent.kind), col(InboxEvent.state)
            )
        ).all()
    for kind, state, n in rows:
        status["inbox"].setdefault(str(kind), {})[str(state)] = int(n)
    status["outbox"] = backlog_by_state(engine)
    status["attention"] = attention.collect(
        engine, live=live_attention(host), limit=ATTENTION_LIMIT, company=company
    ).as_dict()
    status["notify"] = {"sinks": host.notify_sinks(), "waiting": pending_by_sink(engine)}
    status["order_watch"] = orderwatch.counts(engine)
    return status
