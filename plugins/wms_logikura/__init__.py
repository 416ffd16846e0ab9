"""Built-in WMS connector ``logikura``: Logikura (ロジクラ) over its REST API.

Configured by ``wms.logikura`` (:class:`LogikuraConfig`); authorised once with
``nebridge wms connect`` (OAuth 2 authorisation-code flow, tokens in the state folder, mode
0600). What it does:

* **Product master**: ``/api/v1/product_variants`` (商品コード = the WMS product code) and the
  variants' 紐付け links to the Next Engine account (= the link codes), cached and read again
  every ``products_refresh_seconds``.
* **Order instructions**: each imported Next Engine order becomes one shipping schedule with
  its consignee, items, mapped delivery method and ``sales_order.order_number`` = the Next
  Engine order id — never two, even after a crash (:mod:`.outbound`).
* **Shipments / receipts**: shipping and receiving histories, polled by date window with
  overlap; a shipment whose order number is an imported Next Engine order is "from Next
  Engine" (:mod:`.inbound`).
* **Limits**: ≤ 100 requests a minute across processes, 429 and 499 both mean "slow down",
  ``Link`` paging to the end (:mod:`.client`).

The Logikura sandbox for demos and tests is :mod:`plugins.wms_logikura.sandbox`, served by
``nebridge sandbox serve logikura`` (:mod:`.serve`); ``nebridge demo --wms logikura`` plays the
seed scenario through both sandboxes (:mod:`.demo`). Both are imported only when used.
"""

from __future__ import annotations

from hooks import hookimpl
from hooks.connectors import ConnectorSpec
from hooks.records import HealthCheck, PluginInfo
from hooks.surface import ConnectorInUse, DemoContext, DemoSpec, SandboxSpec
from plugins.wms_logikura.config import CLIENT_SECRET_CREDENTIAL, LogikuraConfig
from plugins.wms_logikura.connector import LogikuraConnector
from plugins.wms_logikura.health import logikura_checks
from plugins.wms_logikura.serve import DEFAULT_PORT, DEFAULT_SEED_SIZE, serve_sandbox

__all__ = [
    "LogikuraConfig",
    "LogikuraConnector",
    "nebridge_demos",
    "nebridge_health_checks",
    "nebridge_plugin_info",
    "nebridge_sandboxes",
    "nebridge_wms_connectors",
]

_SUMMARY = "Logikura (ロジクラ) over its REST API: shipping schedules out, histories in"


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin that provides the ``logikura`` WMS connector."""
    return PluginInfo(
        name="wms_logikura",
        summary=_SUMMARY,
        setting_ja="ロジクラとAPIで連携する（出荷予定の登録、出荷・入荷実績の取り込み）",
    )


@hookimpl
def nebridge_wms_connectors() -> list[ConnectorSpec]:
    """Offer the ``logikura`` connector, configured by ``wms.logikura`` in ``daemon.yaml``."""
    return [
        ConnectorSpec(
            name="logikura",
            factory=LogikuraConnector,
            config_model=LogikuraConfig,
            summary=_SUMMARY,
            credentials=(CLIENT_SECRET_CREDENTIAL,),
            keeps_state=True,  # which schedules were requested: logikura.sqlite3
        )
    ]


@hookimpl
def nebridge_sandboxes() -> list[SandboxSpec]:
    """Offer ``nebridge sandbox serve logikura``: Logikura's OAuth host and REST API."""
    return [
        SandboxSpec(
            name="logikura",
            summary="Logikura (ロジクラ): OAuth host, REST API and a control API",
            serve=serve_sandbox,
            default_port=DEFAULT_PORT,
            default_seed_size=DEFAULT_SEED_SIZE,
        )
    ]


def _run_demo(ctx: DemoContext) -> None:
    """The seed scenario through both sandboxes (imported only when the demo runs)."""
    from plugins.wms_logikura.demo import run_demo

    run_demo(ctx)


@hookimpl
def nebridge_demos() -> list[DemoSpec]:
    """Offer ``nebridge demo --wms logikura``."""
    return [
        DemoSpec(
            name="logikura",
            summary="Logikura sandbox ⇄ nebridge ⇄ Next Engine sandbox, checked against both",
            run=_run_demo,
        )
    ]


@hookimpl
def nebridge_health_checks(connector: ConnectorInUse | None) -> list[HealthCheck]:
    """``doctor``: the client secret can be read; the token file is mode 0600."""
    return logikura_checks(connector)
