"""A slow plugin: each shipment takes a while (used to test draining on SIGTERM)."""

import time
from pathlib import Path

from pydantic import BaseModel

from hooks import hookimpl
from hooks.records import PluginInfo


class SlowConfig(BaseModel):
    seconds: float = 0.5
    started_marker: str = ""


@hookimpl
def nebridge_plugin_info():
    return PluginInfo(name="fake_slow", summary="sleeps per shipment", config_model=SlowConfig)


@hookimpl
def nebridge_shipment_actions(shipment, options):
    if options.started_marker:
        Path(options.started_marker).write_text(shipment.shipment_id)
    time.sleep(options.seconds)
    return []
