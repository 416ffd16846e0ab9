"""The pluggy markers for project ``nebridge``."""

from __future__ import annotations

import pluggy

PROJECT_NAME = "nebridge"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
