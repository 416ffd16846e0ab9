"""Rendering the systemd unit for the current installation (``nebridge systemd unit``).

Every path in the unit is absolute (systemd ignores relative ones), every secret the
configuration needs is loaded with ``LoadCredential=`` from ``credentials_dir`` (the same
files ``nebridge connect`` reads when run by hand), and files the daemon writes for the WMS
are group-readable (``UMask=0027``) so a WMS in ``--wms-group`` can read them; secrets, the
database and the state folder are private (0600/0700) whatever the umask.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon.config import CLIENT_SECRET_CREDENTIAL, DaemonConfig, resolve_path

TEMPLATE = Path(__file__).resolve().parent / "resources" / "nebridge.service"
#: Where systemd's ``StateDirectory=`` and ``ConfigurationDirectory=`` live.
STATE_BASE = Path("/var/lib")
CONFIG_BASE = Path("/etc")
#: Folders the unit's ``PrivateTmp=yes`` replaces with the service's own.
PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))
#: Keys of a connector's section naming folders it writes (``*_dir``/``*_folder`` too), and
#: files it writes (``*_file``: their folder is made writable).
FOLDER_KEYS = ("inbox", "outbox")


@dataclass(frozen=True)
class UnitSettings:
    """What the unit is rendered with (all paths absolute)."""

    executable: Path
    config: Path
    credentials_dir: Path
    user: str = "nebridge"
    group: str = "nebridge"
    credentials: tuple[str, ...] = (CLIENT_SECRET_CREDENTIAL,)
    extra_writable: tuple[Path, ...] = ()
    wms_group: str | None = None
    #: ``companies_dir`` in fleet mode (the unit then says how to run it on several hosts).
    companies_dir: Path | None = None
    #: ``fleet_lease_seconds``: how soon a dead host's companies are taken over (fleet mode).
    lease_seconds: float = 30.0
    #: ``state_dir``: ``StateDirectory=`` when under /var/lib, else one of ``extra_writable``.
    state_dir: Path = Path("/var/lib/nebridge")
    #: Writable folders that hold secrets (the state folder, the token file's, the
    #: database's): created 0700, as ``nebridge run`` requires.
    private: tuple[Path, ...] = ()


def managed_folder(folder: Path, base: Path) -> str | None:
    """``folder`` relative to ``base`` (/var/lib, /etc) if systemd can manage it there
    (``StateDirectory=``, ``ConfigurationDirectory=``), else None."""
    folder = folder.absolute()
    if folder == base or not folder.is_relative_to(base):
        return None
    return str(folder.relative_to(base))


def installed_executable() -> Path:
    """The ``nebridge`` script of this installation (its virtual environment's bin/)."""
    beside = Path(sys.executable).parent / "nebridge"
    if beside.exists():
        return beside.absolute()
    found = shutil.which("nebridge")
    return Path(found).absolute() if found else beside.absolute()


def private_paths(config: DaemonConfig) -> tuple[Path, ...]:
    """The folders of secrets: the state folder, the token file's and the SQLite database's."""
    paths = [config.state_dir, config.token_file.parent]
    from daemon.store.engine import sqlite_path  # SQLAlchemy: not for `status` (#18)

    database = sqlite_path(config.resolved_database_url)
    if database is not None:
        paths.append(database.parent)
    return tuple(dict.fromkeys(p.absolute() for p in paths))


def writable_paths(
    config: DaemonConfig,
    config_path: Path,
    connector_options: Mapping[str, object],
    managed: Path | None,
) -> tuple[Path, ...]:
    """Absolute folders outside ``managed`` (the unit's ``StateDirectory=``) the daemon
    must write.

    The WMS folders and token files of the connector's section (relative paths resolve next
    to ``daemon.yaml``, as the daemon resolves them), the state folder, the Next Engine token
    file's folder and the SQLite database's folder.
    """
    paths = list(private_paths(config))
    for key, value in connector_options.items():
        if not isinstance(value, str | Path) or not str(value):
            continue
        if key in FOLDER_KEYS or key.endswith(("_dir", "_folder")):
            paths.append(resolve_path(value, config_path))
        elif key.endswith("_file"):
            paths.append(resolve_path(value, config_path).parent)
    absolute = (p.absolute() for p in paths)
    return outermost(p for p in absolute if managed is None or not p.is_relative_to(managed))


def outermost(paths: Iterable[Path]) -> tuple[Path, ...]:
    """``paths`` without duplicates and without folders inside another listed one."""
    unique = list(dict.fromkeys(paths))
    return tuple(p for p in unique if not any(o in p.parents for o in unique))


def _quote(value: Path | str) -> str:
    """One word of a systemd setting: double-quoted (with escapes) if it holds a space."""
    text = str(value).replace("%", "%%")
    if not any(c in text for c in " \t\"'\\"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: The comment block of a unit in fleet mode: the same unit on every host (issue #19).
FLEET_NOTE = """\
#
# Fleet mode (companies_dir: {companies_dir}). Run this same unit on as many hosts as you
# like: install nebridge (one version everywhere), this file, {config},
# the companies folder and the credentials (the same nebridge-vault-key on every host) on each,
# all pointing at the one PostgreSQL database. Every host's `nebridge run` joins the fleet:
# each company is served by exactly one worker at a time, companies spread evenly, and the
# companies of a host that stops or dies are taken over within the lease time ({lease_seconds:g} s).
# - Add, change or remove a company file on every host: each worker applies it by itself
#   within seconds (companies_watch_seconds; `systemctl reload nebridge`, SIGHUP, applies it
#   at once); the other companies keep running.
# - Several workers on one host: install this file as /etc/systemd/system/nebridge@.service
#   and, with metrics.port set, give each worker its own port under [Service]:
#   Environment=NEBRIDGE_METRICS_PORT=947%i
#   then `systemctl enable --now nebridge@1 nebridge@2` (ports 9471, 9472).
# - Upgrading: stop the workers one by one, upgrade nebridge and run `nebridge db upgrade` on
#   one host, then start them again (a worker refuses a database or company newer than it).
# - `nebridge companies list` shows who serves which company; `nebridge status` the fleet.
# - Rotating the vault key (docs/fleet.md): first the new key as nebridge-vault-key-previous
#   on every host, then swap, then `nebridge companies rotate-key` once, then drop the old key;
#   this unit loads nebridge-vault-key-previous while that file is in the credentials folder:
#   generate it again at each step.
"""


def render_unit(settings: UnitSettings) -> str:
    """The unit text with paths, user, credentials and writable folders filled in."""
    writable = ""
    if settings.extra_writable:
        joined = " ".join(_quote(p) for p in settings.extra_writable)
        writable = f"# WMS folders and state systemd does not manage\nReadWritePaths={joined}\n"
    credentials = "".join(
        f"LoadCredential={name}:{settings.credentials_dir / name}\n"
        for name in settings.credentials
    )
    groups = (
        (
            f"# Files for the WMS (orders, error reports) are readable by this group.\n"
            f"SupplementaryGroups={settings.wms_group}\n"
        )
        if settings.wms_group
        else ""
    )
    under_home = any(
        str(p).startswith(("/home/", "/root/"))
        for p in (settings.executable, settings.config, *settings.extra_writable)
    )
    readme = Path(__file__).resolve().parents[1] / "README.md"  # in a source checkout
    fleet = (
        ""
        if settings.companies_dir is None
        else FLEET_NOTE.format(
            companies_dir=settings.companies_dir,
            config=settings.config,
            lease_seconds=settings.lease_seconds,
        )
    )
    return TEMPLATE.read_text(encoding="utf-8").format(
        directories=_directories(settings),
        fleet=fleet,
        documentation=f"Documentation=file://{readme}\n" if readme.is_file() else "",
        user=settings.user,
        group=settings.group,
        executable=_quote(settings.executable),
        config=_quote(settings.config),
        config_env=_quote(f"NEBRIDGE_CONFIG={settings.config}"),
        credentials=credentials,
        supplementary_groups=groups,
        read_write_paths=writable,
        protect_home="read-only" if under_home else "yes",
    )


def _directories(settings: UnitSettings) -> str:
    """``StateDirectory=`` for a state folder under /var/lib and ``ConfigurationDirectory=``
    for daemon.yaml's folder under /etc, each derived from this installation: systemd
    creates them and gives the state folder to ``User=`` at every start, so a name not this
    installation's would take over another one's folder."""
    lines = []
    state = managed_folder(settings.state_dir, STATE_BASE)
    if state is not None:
        lines += [
            f"# {STATE_BASE / state} (database, tokens): created 0700 for {settings.user} by "
            "systemd.",
            f"StateDirectory={_quote(state)}",
            "StateDirectoryMode=0700",
        ]
    configuration = managed_folder(settings.config.parent, CONFIG_BASE)
    if configuration is not None:
        lines += [
            f"# {CONFIG_BASE / configuration} (daemon.yaml), created by systemd if missing.",
            f"ConfigurationDirectory={_quote(configuration)}",
            "ConfigurationDirectoryMode=0750",
        ]
    return "".join(f"{line}\n" for line in lines)


def unit_notes(settings: UnitSettings) -> list[str]:
    """What would keep the rendered unit from starting, each with the fix (printed to stderr).

    A credential file or a writable folder that is missing (systemd refuses to start the
    service without them), and a writable folder under /tmp or /var/tmp (``PrivateTmp=yes``
    gives the service its own).
    """
    notes = []
    for name in settings.credentials:
        path = settings.credentials_dir / name
        if not path.exists():
            notes.append(
                f"{path} does not exist yet; the service starts only once it does: "
                f"sudo install -m 0640 -o root -g {settings.group} /dev/stdin {path} "
                "<<< 'SECRET'"
            )
    for folder in settings.extra_writable:
        if not folder.is_dir():
            mode = "0700" if folder in settings.private else "0750"  # secrets: `run` checks
            notes.append(
                f"{folder} does not exist yet; systemd cannot start a service whose "
                f"ReadWritePaths= is missing: sudo install -d -m {mode} -o "
                f"{settings.user} -g {settings.group} {folder}"
            )
        tmp = next((t for t in PRIVATE_TMP if t == folder or t in folder.parents), None)
        if tmp is not None:
            notes.append(
                f"{folder} is under {tmp}, which the service sees as its own "
                "private, empty folder (PrivateTmp=yes); move it elsewhere (e.g. "
                "/srv/wms)"
            )
    return notes
