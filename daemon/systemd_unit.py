"""Rendering the systemd unit for the current installation (``nebridge systemd unit``)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from daemon.config import DaemonConfig

TEMPLATE = Path(__file__).resolve().parent / "resources" / "nebridge.service"
DEFAULT_CONFIG = Path("/etc/nebridge/daemon.yaml")
DEFAULT_CREDENTIAL = Path("/etc/nebridge/credentials/nextengine-client-secret")
STATE_ROOT = Path("/var/lib/nebridge")


@dataclass(frozen=True)
class UnitSettings:
    """What the unit is rendered with."""

    executable: Path
    config: Path
    user: str = "nebridge"
    group: str = "nebridge"
    credential: Path = DEFAULT_CREDENTIAL
    extra_writable: tuple[Path, ...] = ()


def installed_executable() -> Path:
    """The ``nebridge`` script of this installation (its virtual environment's bin/)."""
    beside = Path(sys.executable).parent / "nebridge"
    if beside.exists():
        return beside
    found = shutil.which("nebridge")
    return Path(found) if found else beside


def writable_paths(config: DaemonConfig, connector_options: dict[str, object]) -> tuple[Path, ...]:
    """Folders outside the state directory that the daemon must write (WMS folders)."""
    paths = []
    for key in ("inbox", "outbox"):
        value = connector_options.get(key)
        if value:
            path = Path(str(value))
            if STATE_ROOT not in path.parents and path != STATE_ROOT:
                paths.append(path)
    if config.state_dir != STATE_ROOT and STATE_ROOT not in config.state_dir.parents:
        paths.append(config.state_dir)
    return tuple(dict.fromkeys(paths))


def render_unit(settings: UnitSettings) -> str:
    """The unit text with paths, user and writable folders filled in."""
    writable = ""
    if settings.extra_writable:
        joined = " ".join(str(p) for p in settings.extra_writable)
        writable = f"# WMS folders and state outside /var/lib/nebridge\nReadWritePaths={joined}"
    under_home = any(str(p).startswith(("/home/", "/root/"))
                     for p in (settings.executable, settings.config, *settings.extra_writable))
    return TEMPLATE.read_text(encoding="utf-8").format(
        docs=Path(__file__).resolve().parents[1] / "README.md",
        user=settings.user,
        group=settings.group,
        executable=settings.executable,
        config=settings.config,
        credential=settings.credential,
        read_write_paths=writable,
        protect_home="read-only" if under_home else "yes",
    )
