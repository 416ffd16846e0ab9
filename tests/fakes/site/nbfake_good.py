"""A well-behaved third-party plugin: notes every shipment it sees."""

from pydantic import BaseModel, ConfigDict

from hooks import hookimpl
from hooks.records import Notice, PluginInfo


class GoodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hello"
    limit: int = 5


@hookimpl
def nebridge_plugin_info():
    return PluginInfo(name="fake_good", summary="test plugin", config_model=GoodConfig)


@hookimpl
def nebridge_shipment_actions(shipment, options):
    return [Notice(f"{options.greeting} {shipment.shipment_id}")]
