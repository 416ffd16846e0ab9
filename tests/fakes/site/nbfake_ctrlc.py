"""A plugin that raises KeyboardInterrupt itself, at import and in a hook (not the user's
Ctrl-C); ``NBFAKE_CTRLC_AT=hook`` imports it cleanly and raises in the hook instead."""

import os

from hooks import hookimpl

if os.environ.get("NBFAKE_CTRLC_AT", "import") == "import":
    raise KeyboardInterrupt


@hookimpl
def nebridge_plugin_info():
    raise SystemExit(3)
