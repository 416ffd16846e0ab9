"""The data behind ``nebridge status`` and ``nebridge attention``: read from the store and
the loaded plugins, nothing sent anywhere.

Apart from :mod:`daemon.admin` (``run --once``, which needs the whole engine) so that these
read-only commands load only the store and the plugins. ``status`` reads with plain SQL
(:mod:`daemon.store.reads`): SQLAlchemy, SQLModel and the models are imported only by
``attention``, the WMS link and a database other than the default SQLite file (#18).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daemon.attention_items import (
    AttentionItem,
    AttentionReport,
    collect_plain,
    paused_stage_items,
    report_of,
)
from daemon.config import LoadedConfig
from daemon.config_admin import AdminError, plugin_host
from daemon.linkinfo import LinkInfo, horizon_warning, link_state, token_store
from daemon.pluginmanager import PluginHost
from daemon.store.reads import Reader, current_revision, head_revision, utc
from hooks.connectors import AuthorizingConnector

if TYPE_CHECKING:
    from daemon.nextengine.tokens import TokenStore

#: How many attention items ``status`` and ``run --once`` show (every kind is counted).
ATTENTION_LIMIT = 20


def live_attention(host: PluginHost) -> list[AttentionItem]:
    """Attention items that are not stored: the stages paused by this plugin host."""
    return paused_stage_items(host)


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
    from daemon import attention
    from daemon.store import engine as store

    host, _issues = plugin_host(loaded)
    engine = store.make_engine(loaded.config.resolved_database_url, create=False)
    try:
        if store.current_revision(engine) != store.head_revision(engine):
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
    reader: Reader,
    host: PluginHost,
    *,
    store: TokenStore | None = None,
    company: str = "",
) -> dict[str, Any]:
    """The data behind ``nebridge status``, read with plain SQL in ``reader``'s one
    transaction (no ORM: the command answers at once, #18); the token pair is read from
    ``store`` (default: the token file; in fleet mode the company's row in the vault);
    ``company`` (fleet mode) makes the attention items' commands carry ``--company``."""
    current, head = current_revision(reader), head_revision(reader)
    live = live_attention(host)
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
        "attention": report_of(live, (), ATTENTION_LIMIT, None, company).as_dict(),
    }
    if current != head:
        status["problems"] = ["database not migrated: run `nebridge db upgrade`"]
        return status
    link = _link(loaded, reader, store)
    status["nextengine"] = link.as_dict()
    status["nextengine"]["warning"] = horizon_warning(link.refresh_token_end, datetime.now(UTC))
    for wh in loaded.config.warehouses:
        stages = {}
        for stage in ("import_orders", "shipments", "receipts"):
            runs = reader.rows(
                "SELECT started_at, outcome, items_in, items_out, detail FROM run_record "
                "WHERE warehouse = ? AND stage = ? ORDER BY started_at DESC LIMIT 1",
                (wh.code, stage),
            )
            stages[stage] = (
                None
                if not runs
                else {
                    "at": _at(runs[0][0]).isoformat(),
                    "outcome": runs[0][1],
                    "items_in": runs[0][2],
                    "items_out": runs[0][3],
                    "detail": runs[0][4],
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
    for kind, state, n in reader.rows(
        "SELECT kind, state, COUNT(*) FROM inbox_event GROUP BY kind, state"
    ):
        status["inbox"].setdefault(str(kind), {})[str(state)] = int(n)
    status["outbox"] = {
        str(state): int(n)
        for state, n in reader.rows("SELECT state, COUNT(*) FROM outbox_item GROUP BY state")
    }
    status["attention"] = collect_plain(
        reader, live=live, limit=ATTENTION_LIMIT, company=company
    ).as_dict()
    waiting = reader.rows(
        "SELECT sink, COUNT(*) FROM notify_delivery WHERE state IN (?, ?) GROUP BY sink",
        ("pending", "in_flight"),  # DeliveryState.PENDING, IN_FLIGHT
    )
    status["notify"] = {
        "sinks": host.notify_sinks(),
        "waiting": {str(sink): int(n) for sink, n in waiting},
    }
    order_watch: dict[str, dict[str, int]] = {}
    for warehouse, kind, n in reader.rows(
        "SELECT warehouse, kind, COUNT(*) FROM order_change GROUP BY warehouse, kind"
    ):
        order_watch.setdefault(warehouse, {})[kind] = int(n)
    status["order_watch"] = order_watch
    return status


def _at(value: Any) -> datetime:
    moment = utc(value)
    assert moment is not None  # a NOT NULL column
    return moment


def _link(loaded: LoadedConfig, reader: Reader, store: TokenStore | None) -> LinkInfo:
    """The link as :func:`daemon.nelink.link_info` gives it, the row read by ``reader``."""
    rows = reader.rows(
        "SELECT state, company_id, company_name, reason, connected_at FROM ne_link WHERE id = ?",
        (1,),
    )
    stored = (
        None
        if not rows
        else LinkInfo(
            state=rows[0][0],
            company_id=rows[0][1],
            company_name=rows[0][2],
            reason=rows[0][3],
            connected_at=utc(rows[0][4]),
        )
    )
    return link_state(stored, token_store(loaded.config) if store is None else store)
