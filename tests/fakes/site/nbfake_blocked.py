"""A plugin that leaves a trace when imported: it must never be imported while disabled."""

import os
from pathlib import Path

from hooks import hookimpl
from hooks.records import PluginInfo

marker = os.environ.get("NBFAKE_IMPORT_MARKER")
if marker:
    Path(marker).write_text("imported")


@hookimpl
def nebridge_plugin_info():
    return PluginInfo(name="fake_blocked", summary="leaves a trace on import")
