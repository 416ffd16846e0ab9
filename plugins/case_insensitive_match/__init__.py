"""⑥ case_insensitive_match — 受注取り込み時、紐付けコードの大文字小文字を区別しない.

At order import, match Next Engine goods codes to WMS link codes (紐付けコード) ignoring letter
case (a mall sells ``SHOUHIN-001`` while Next Engine has ``shouhin-001``). Two WMS products
whose link codes differ only by case are reported as an ambiguity naming both — never a silent
pick. Without this plugin, codes must match exactly.
"""

from __future__ import annotations

from collections.abc import Callable

from hooks import hookimpl
from hooks.records import PluginInfo


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="case_insensitive_match",
        summary="Match Next Engine goods codes to WMS link codes ignoring letter case",
        setting_ja="受注取り込み時、紐付けコードの大文字小文字を区別しない",
    )


@hookimpl
def nebridge_link_code_key() -> Callable[[str], str]:
    """Compare codes by their case-folded form."""
    return str.casefold
