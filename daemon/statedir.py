"""A connector's records in the state folder belong to one database: never fork them.

A connector that keeps records in ``state_dir`` which must not be lost or forked — Logikura's
"this order's schedule request was sent" rows, which keep an order from being sent twice —
declares ``ConnectorSpec(keeps_state=True)``. Its database then remembers which state folder
those records are in: a marker file (``.nebridge-state-id``, a random id) in the folder and
the same id in the database. A start on a folder without that marker — a fleet worker or a
standby on another host whose ``state_dir`` is not the shared folder, or a folder restored
from an old backup — is refused before the connector does anything, saying what to do,
instead of sending again what the other folder's records say was sent.

The first start records the folder. If the folder is lost for good, ``nebridge wms
adopt-state-folder`` records the present one after saying what that risks.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from daemon.store.engine import Bind, read_session, write_session
from daemon.store.models import Cursor
from hooks.files import write_private

#: The marker file in the state folder, and the cursor holding its id in the database.
MARKER = ".nebridge-state-id"
CURSOR_NAME = "engine.state_folder_id"


class StateFolderMismatch(Exception):
    """The state folder is not the one the database's connector records are in."""


def marker_of(state_dir: Path) -> str | None:
    """The id in the folder's marker file, or None without one."""
    path = state_dir / MARKER
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def _mark(state_dir: Path) -> str:
    """Write a new marker into ``state_dir`` (0600); its id."""
    marker = secrets.token_hex(16)
    write_private(state_dir / MARKER, f"{marker}\n".encode())
    return marker


def recorded(engine: Bind) -> str | None:
    """The id of the state folder the database recorded, or None before the first start."""
    with read_session(engine) as session:
        row = session.get(Cursor, CURSOR_NAME)
    return None if row is None else row.value


def claim(engine: Bind, state_dir: Path, connector: str) -> None:
    """Record ``state_dir`` as the folder of ``connector``'s records (first start), or check
    that it is; raise :class:`StateFolderMismatch` naming the fix otherwise."""
    expected = recorded(engine)
    present = marker_of(state_dir)
    if expected is None:
        present = present or _mark(state_dir)
        try:
            with write_session(engine) as session:
                session.add(Cursor(name=CURSOR_NAME, value=present))
        except IntegrityError:  # another process recorded its folder meanwhile
            expected = recorded(engine)
        else:
            return
    if present == expected:
        return
    raise StateFolderMismatch(
        f"the state folder {state_dir} is not the one where the {connector} connector's "
        f"records for this database are kept (its marker {MARKER} "
        f"{'is missing' if present is None else 'differs'}): the records say what was already "
        "sent to the WMS, and starting without them would send it again. On several hosts "
        "(fleet workers, a standby) `state_dir` must be storage every host shares — mount "
        f"the shared folder at {state_dir} and start again; if the folder is lost for good, "
        "`nebridge wms adopt-state-folder` records this one (read what it risks first)"
    )


def adopt(engine: Bind, state_dir: Path) -> str:
    """Record ``state_dir`` (marked now if it is not) as the folder of the connector's
    records, whatever was recorded before; returns its id."""
    present = marker_of(state_dir) or _mark(state_dir)
    with write_session(engine) as session:
        row = session.get(Cursor, CURSOR_NAME)
        if row is None:
            session.add(Cursor(name=CURSOR_NAME, value=present))
        else:
            row.value = present
    return present
