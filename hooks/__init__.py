"""The public plugin contract of nebridge.

Third-party plugins import only from here::

    from hooks import hookimpl
    from hooks.records import WmsShipment, ShipOrder, PluginInfo

The contract is versioned with nebridge; see ``docs/plugins.md``.
"""

from hooks.markers import PROJECT_NAME, hookimpl, hookspec

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]
