"""Who owns an installation's files, in words an admin can paste into a command.

The daemon runs as a service user; admins run commands as root or as themselves. Fixes for a
file one of them cannot use name the real owner (the user the state folder belongs to),
never a guessed ``nebridge`` or the user who happens to run the command.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path


def user_name(uid: int) -> str:
    """The login name of ``uid`` (the uid itself if it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def owner_of(path: Path) -> str | None:
    """The name of the owner of ``path``, or of its nearest existing parent; None if none
    can be looked at."""
    for level in (path, *path.parents):
        try:
            return user_name(os.stat(level).st_uid)
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def me() -> str:
    """The name of the user running this process."""
    return user_name(os.geteuid())


def not_yours_fix(path: Path, owner: str) -> str:
    """The fix for ``path`` that this process may not use while ``owner`` runs the service:
    run the command as the owner, or give the file back to it if root took it over."""
    current = me()
    if current == owner:
        return f"give it back to {owner}: `sudo chown {owner}: {path}`"
    return (
        f"run nebridge as {owner}, the owner of this installation (`sudo -u {owner} nebridge "
        f"…`); only if it really belongs to {current}: `sudo chown {current}: {path}`"
    )
