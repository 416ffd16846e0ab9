"""⑧ stock_reconcile — 倉庫の在庫とネクストエンジンの在庫を突き合わせる.

After each stock snapshot the WMS delivers (a ``stock-*.csv``; for Logikura, read every
``schedule_hours``, default daily), compare Next Engine stock with the linked warehouses
(``nebridge stock diff``). Every goods whose drift nebridge cannot explain waits in
``nebridge attention`` (and the notifications) until it is gone. Only with
``auto_correct: true`` are drifts of at most ``max_auto_correct`` units per goods corrected
without a person (``nebridge stock reconcile --apply`` does it on request); larger ones wait.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from hooks import hookimpl
from hooks.records import PluginInfo


class StockReconcileConfig(BaseModel):
    """Options of ``plugins.stock_reconcile``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auto_correct: bool = Field(
        default=False,
        description="Correct drifts in Next Engine without a person (up to max_auto_correct)",
    )
    max_auto_correct: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Largest drift (units per goods) corrected automatically; larger ones wait",
    )
    schedule_hours: float = Field(
        default=24.0,
        ge=0.25,
        le=24.0 * 31,
        description="How often an API WMS (Logikura) is read and compared, in hours",
    )


@hookimpl
def nebridge_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return PluginInfo(
        name="stock_reconcile",
        summary="Compare Next Engine stock with the warehouses' counts; report or correct drift",
        config_model=StockReconcileConfig,
        setting_ja="倉庫の在庫とネクストエンジンの在庫を突き合わせる",
    )
