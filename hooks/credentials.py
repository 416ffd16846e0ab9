"""Secrets kept as credential files, found the same way inside and outside systemd.

Under systemd, ``LoadCredential=NAME:FILE`` copies ``FILE`` into ``$CREDENTIALS_DIRECTORY``.
An admin command run by hand (``sudo -u nebridge nebridge connect``) has no such folder, so the
installation's credentials folder (``credentials_dir`` in ``daemon.yaml``, the same one the
generated unit's ``LoadCredential=`` lines point into) is read directly instead.
"""

from __future__ import annotations

import errno
import grp
import os
import stat
from collections.abc import Mapping
from pathlib import Path

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


class SecretUnreadable(ValueError):
    """A configured secret exists but cannot be used; the message names the file and why."""


def credential_file(
    name: str, folder: Path | None = None, env: Mapping[str, str] | None = None
) -> Path | None:
    """The file holding credential ``name``: systemd's copy first, then ``folder/name``.

    ``None`` when neither exists. A file that exists but cannot even be looked at (a folder
    this user may not enter) raises :class:`SecretUnreadable` with the fix.
    """
    env = os.environ if env is None else env
    candidates = [Path(env[CREDENTIALS_ENV]) / name] if env.get(CREDENTIALS_ENV) else []
    if folder is not None:
        candidates.append(folder / name)
    for path in candidates:
        try:
            os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                continue
            raise SecretUnreadable(_unreadable(path, exc)) from None
        return path
    return None


def read_credential(
    name: str,
    folder: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    checked: bool = False,
) -> str | None:
    """The stripped text of credential ``name`` (see :func:`credential_file`), or ``None``.

    ``checked``: a file read from ``folder`` (not systemd's copy, which systemd makes private)
    must pass :func:`exposed_credential` — for a key that guards every other secret.
    """
    path = credential_file(name, folder, env)
    if path is None:
        return None
    env = os.environ if env is None else env
    from_systemd = bool(env.get(CREDENTIALS_ENV)) and path.parent == Path(env[CREDENTIALS_ENV])
    if checked and not from_systemd:
        problem = exposed_credential(path)
        if problem is not None:
            raise SecretUnreadable(problem)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_NOFOLLOW if checked else 0))
        with os.fdopen(fd, "rb") as handle:
            value = handle.read().decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretUnreadable(
            f"the credential {path} is not UTF-8 text; write the secret alone on one line"
        ) from None
    except OSError as exc:
        raise SecretUnreadable(_unreadable(path, exc)) from None
    if not value:
        raise SecretUnreadable(f"the credential {path} is empty; write the secret into it")
    return value


def exposed_credential(path: Path) -> str | None:
    """Why the credential file ``path`` may have been read or replaced by someone else, or None.

    It must be a regular file (never a symbolic link), owned by root or this user, writable by
    its owner only and closed to other users: ``root:nebridge`` mode 0640 as the folder's other
    credentials, or the service user's own file mode 0600.
    """
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return (
            f"the credential {path} is a symbolic link; nebridge never reads this secret "
            f"through one: put the file itself there (sudo cp --remove-destination "
            f'"$(readlink -f {path})" {path})'
        )
    if not stat.S_ISREG(info.st_mode):
        return f"the credential {path} is not a regular file; write the secret into a file there"
    if info.st_uid not in (0, os.geteuid()):
        return (
            f"the credential {path} belongs to uid {info.st_uid}, neither root nor this "
            f"user (uid {os.geteuid()}); run `sudo chown root:{_group()} {path}`"
        )
    if info.st_mode & 0o027:
        return (
            f"the credential {path} is open to other users or writable by its group (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run `sudo chmod 0640 {path}`"
        )
    return None


def _group() -> str:
    """The name of this process's group: the service user's when the service reads."""
    try:
        return grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        return str(os.getegid())


def _unreadable(path: Path, exc: OSError) -> str:
    """Why ``path`` cannot be read, and how an admin makes it readable to the service user."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"the credential {path} cannot be read by this user ({reason}); let the "
            f"service user's group read it: sudo chgrp {_group()} {path.parent} {path} && "
            f"sudo chmod 0750 {path.parent} && sudo chmod 0640 {path}"
        )
    return f"the credential {path} cannot be read: {reason}"
