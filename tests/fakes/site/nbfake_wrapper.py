"""A third-party wrapper plugin: keeps every other plugin's stock changes out of Next Engine."""

from pydantic import BaseModel, ConfigDict

from hooks import hookimpl
from hooks.records import AdjustStock, Notice, PluginInfo


class WrapperConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = "stock is counted elsewhere"


@hookimpl
def nebridge_plugin_info():
    return PluginInfo(
        name="fake_wrapper",
        summary="test wrapper plugin",
        config_model=WrapperConfig,
        hook_api=">=1.1,<2",
    )


@hookimpl(wrapper=True)
def nebridge_shipment_actions(shipment, options):
    actions = list((yield) or ())
    dropped = [a for a in actions if isinstance(a, AdjustStock)]
    kept = [a for a in actions if not isinstance(a, AdjustStock)]
    if dropped:
        kept.append(
            Notice(
                f"{shipment.shipment_id}: {len(dropped)} stock change(s) left out: {options.reason}"
            )
        )
    return kept
