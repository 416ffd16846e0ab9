"""Hook specifications: the functions a nebridge plugin may implement.

Every plugin is a module (or object) registered under a name through the ``nebridge``
entry-point group. It implements any subset of the hooks below with ``@hookimpl``. An
implementation may accept only the arguments it needs (pluggy prunes the rest), so new
arguments can be added to a hook without breaking existing plugins.

The engine calls each plugin's implementation on its own, through pluggy (every
``wrapper=True`` implementation wraps each of those calls), so that an exception in one plugin
is recorded against that plugin, warehouse and item and never stops another plugin or
warehouse. ``options`` is always the plugin's own validated configuration (an instance of
``PluginInfo.config_model``, or ``None``). ``docs/plugins.md`` ("How hooks are called") says
the order, what ``tryfirst``/``trylast``/``firstresult`` do and which pluggy features are
refused at load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from hooks.markers import hookspec
from hooks.surface import SurfaceSpecs

if TYPE_CHECKING:
    from hooks.connectors import ConnectorSpec
    from hooks.notify import NotifyContext
    from hooks.records import (
        Action,
        FilterVerdict,
        HealthCheck,
        NeOrder,
        Notification,
        PluginInfo,
        WarehouseInfo,
        WmsReceipt,
        WmsShipment,
    )
    from hooks.surface import ConnectorInUse

#: The version of this contract (the hooks, their arguments, what they may return and how they
#: are called). The minor number grows when something is added that existing plugins need not
#: know (a new hook, a new optional argument, a new record field with a default); the major
#: number grows when something a plugin may rely on changes or goes away. A plugin states the
#: range it works with in :attr:`hooks.records.PluginInfo.hook_api`; outside it, it is refused
#: at load. 1.0: the hooks before the contract was versioned. 1.1: wrappers, ``tryfirst``,
#: ``trylast``, ``firstresult`` and hook-call monitoring honoured; ``hook_api``.
HOOK_API_VERSION = "1.1"


class PluginSpecs:
    """Hooks that describe a plugin and its health."""

    @hookspec
    def nebridge_plugin_info(self) -> PluginInfo:
        """Describe the plugin: its name, summary, required plugins, config model and the
        hook API versions it works with.

        Every plugin must implement it. The engine reads each plugin's own at load time to
        check its hook API range and validate its ``daemon.yaml`` section and its
        dependencies before anything runs.

        Example::

            @hookimpl
            def nebridge_plugin_info() -> PluginInfo:
                return PluginInfo(name="my_plugin", summary="What it does",
                                  requires=("status_update",), config_model=MyConfig)
        """

    @hookspec
    def nebridge_health_checks(
        self, options: Any, connector: ConnectorInUse | None
    ) -> Iterable[HealthCheck]:
        """Return health checks that ``nebridge doctor`` shows for this plugin.

        Called on demand, never in the pipeline. Each :class:`HealthCheck` with ``ok=False``
        makes ``doctor`` exit 1 and should carry a ``fix`` that tells the admin what to do.
        ``connector`` is the WMS connector in use (:class:`hooks.surface.ConnectorInUse`,
        with its validated ``wms.<name>`` section; ``None`` when no plugin offers it): a
        connector plugin checks its own folders, credentials or link there.
        """


class PipelineSpecs:
    """Hooks called by the per-warehouse pipeline: plugins decide, the engine executes."""

    @hookspec
    def nebridge_filter_order(
        self, order: NeOrder, warehouse: WarehouseInfo, options: Any
    ) -> FilterVerdict | None:
        """Decide whether a Next Engine order may be imported into ``warehouse``.

        Called at order import for every candidate order (status 20, not cancelled, print
        date reached). Return ``FilterVerdict(accept=False, reason=...)`` to skip it, or
        ``None`` to have no opinion. An order is imported only if no filter rejects it.
        """

    @hookspec(firstresult=True)
    def nebridge_link_code_key(self, options: Any) -> Callable[[str], str] | None:
        """Return the function that turns a goods / link code into its matching key.

        At order import the engine matches each Next Engine goods code to the WMS product
        whose link code (紐付けコード) has the same key. Without an implementation the key
        is the code itself (exact match). Two WMS products whose link codes share a key are
        reported as an ambiguity naming both; the engine never picks one silently.
        """

    @hookspec
    def nebridge_shipment_actions(
        self, shipment: WmsShipment, warehouse: WarehouseInfo, options: Any
    ) -> Iterable[Action] | None:
        """Decide what Next Engine should do about a shipment confirmed in the WMS.

        Return actions such as :class:`ShipOrder`, :class:`WriteTracking`,
        :class:`AdjustStock` or :class:`Notice`. The engine stores them in the outbox in the
        same transaction that marks the shipment processed, then executes them.
        """

    @hookspec
    def nebridge_receipt_actions(
        self, receipt: WmsReceipt, warehouse: WarehouseInfo, options: Any
    ) -> Iterable[Action] | None:
        """Decide what Next Engine should do about a receipt confirmed in the WMS.

        Typically :class:`AdjustStock` with positive deltas; stored and executed like the
        actions of :meth:`nebridge_shipment_actions`.
        """


class ConnectorSpecs:
    """Hooks that offer WMS connectors."""

    @hookspec
    def nebridge_wms_connectors(self) -> Iterable[ConnectorSpec]:
        """Offer WMS connector types, selected in ``daemon.yaml`` by ``wms.connector``.

        Each :class:`ConnectorSpec` names the connector, the factory that builds it from its
        validated ``wms.<name>`` section, and that section's config model.
        """


class NotifySpecs:
    """Hooks that tell the people who must act (e-mail, chat, webhooks …)."""

    @hookspec
    def nebridge_notify(self, notification: Notification, options: Any, ctx: NotifyContext) -> None:
        """Deliver one notification to this plugin's sink (mail server, chat room, URL).

        Every loaded plugin that implements this hook is a sink. The engine builds
        notifications from the attention items (a new problem, a reminder, a digest of many,
        the problem resolved), stores one delivery per notification × sink and calls each
        sink on its own, on the engine's notifier job. Return to mean *delivered*; raise to
        mean *not delivered*: the engine tries again later with backoff (a sink that keeps
        failing is shown in ``nebridge attention``) and never blocks the pipelines meanwhile.
        A retry carries the same ``notification.delivery_key``; pass it on (a header, the
        Message-ID) so a receiver can drop the copy a crash in mid-send may cause.

        Send only through what ``ctx`` lends (``ctx.http``), or one socket of your own that
        is closed before returning; never start threads. Bound every call with a timeout.
        Read secrets with :func:`hooks.credentials.read_credential` from
        ``ctx.credentials_dir`` and register them with ``ctx.mask_secret``.
        """


ALL_SPECS = (PluginSpecs, PipelineSpecs, ConnectorSpecs, NotifySpecs, SurfaceSpecs)
