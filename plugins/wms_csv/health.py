"""``nebridge doctor`` for the CSV connector: its inbox and outbox folders exist and nebridge
may write there (it moves files out of the inbox and writes order files to the outbox)."""

from __future__ import annotations

import os
from pathlib import Path

from hooks.records import HealthCheck
from hooks.surface import ConnectorInUse
from plugins.wms_csv.config import CsvConnectorConfig


def folder_checks(connector: ConnectorInUse | None) -> list[HealthCheck]:
    """One check per folder of ``wms.csv`` (none when another connector is in use or the
    section is invalid: ``doctor`` shows that under ``config``)."""
    if connector is None or not isinstance(connector.options, CsvConnectorConfig):
        return []
    config = connector.options
    return [
        _writable(f"wms.{connector.name}.{key}", folder)
        for key, folder in (("inbox", config.inbox), ("outbox", config.outbox))
    ]


def _writable(name: str, folder: Path) -> HealthCheck:
    """A folder nebridge must write in: there, a folder, writable by this user."""
    make = f"mkdir -p {folder} && chown nebridge: {folder}"
    if not folder.exists():
        return HealthCheck(name, False, f"{folder} is missing", make)
    if not folder.is_dir():
        return HealthCheck(
            name, False, f"{folder} is not a folder", f"move that file away, then {make}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return HealthCheck(
            name,
            False,
            f"{folder} is not writable by this user",
            f"chown nebridge: {folder} (run doctor as the service user)",
        )
    return HealthCheck(name, True, f"{folder} is writable")
