"""⑤ tag_filter — 受注分類タグに「ロジクラ受注取込対象」タグがある受注伝票のみ取り込む.

At order import, take only orders whose order classification tag (受注分類タグ,
``receive_order_gruoping_tag``, a string like ``[A][B]``) contains the configured tag as a
whole ``[tag]`` token. Look-alikes do not match: ``[ロジクラ受注取込対象外]`` is a different
tag, and the name inside another tag (``[旧ロジクラ受注取込対象]``) or without brackets is not
the tag.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from hooks import hookimpl
from hooks.records import FilterVerdict, NeOrder, PluginInfo

_TOKEN = re.compile(r"\[([^\[\]]*)\]")


class TagFilterConfig(BaseModel):
    """Options of ``plugins.tag_filter``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: str = Field(
        default="ロジクラ受注取込対象",
        min_length=1,
        pattern=r"^[^\[\]]+$",
        description="Tag name (without brackets) an order must carry to be imported",
    )


def tags_of(grouping_tag: str | None) -> list[str]:
    """The tag names in a ``[A][B]`` string, in order."""
    return _TOKEN.findall(grouping_tag or "")


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="tag_filter",
        summary="Import only orders carrying the configured order classification tag",
        config_model=TagFilterConfig,
        setting_ja="受注分類タグに「ロジクラ受注取込対象」タグがある受注伝票のみ取り込む",
    )


@hookimpl
def nebridge_filter_order(order: NeOrder, options: TagFilterConfig) -> FilterVerdict:
    """Accept the order only if one of its tags is exactly the configured tag."""
    if options.tag in tags_of(order.grouping_tag):
        return FilterVerdict(accept=True)
    return FilterVerdict(accept=False, reason=f"order has no [{options.tag}] tag")
