"""``nebridge doctor`` for the CSV connector: its inbox and outbox folders exist and nebridge
may write there (it moves files out of the inbox and writes order files to the outbox)."""

from __future__ import annotations

import os
import pwd
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
    owner = _service_user(connector.state_dir)
    return [
        _writable(f"wms.{connector.name}.{key}", folder, owner)
        for key, folder in (("inbox", config.inbox), ("outbox", config.outbox))
    ]


def _service_user(state_dir: Path) -> str:
    """The user the daemon runs as: the owner of the state folder (``<service-user>`` before
    the folder exists), never a guessed name."""
    try:
        return pwd.getpwuid(state_dir.stat().st_uid).pw_name
    except KeyError:
        return str(state_dir.stat().st_uid)
    except OSError:
        return "<service-user>"


def _writable(name: str, folder: Path, owner: str) -> HealthCheck:
    """A folder nebridge must write in: there, a folder, writable by this user."""
    make = f"mkdir -p {folder} && chown {owner}: {folder}"
    if not folder.exists():
        return HealthCheck(
            name,
            False,
            f"{folder} is missing",
            f"start the service (`nebridge run` creates it), or {make}",
        )
    if not folder.is_dir():
        return HealthCheck(
            name, False, f"{folder} is not a folder", f"move that file away, then {make}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return HealthCheck(
            name,
            False,
            f"{folder} is not writable by this user",
            f"chown {owner}: {folder} (run doctor as the service user, {owner})",
        )
    return HealthCheck(name, True, f"{folder} is writable")
