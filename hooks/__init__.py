"""The public plugin contract of nebridge.

Third-party plugins import only from here::

    from hooks import hookimpl
    from hooks.records import WmsShipment, ShipOrder, PluginInfo

The contract carries its own version, :data:`HOOK_API_VERSION`; a plugin declares the range it
works with in ``PluginInfo.hook_api`` (see "How hooks are called" in ``docs/plugins.md``).
"""

from hooks.markers import PROJECT_NAME, hookimpl, hookspec
from hooks.specs import HOOK_API_VERSION

__all__ = ["HOOK_API_VERSION", "PROJECT_NAME", "hookimpl", "hookspec"]
