"""The companies of a fleet: one ``<code>.yaml`` file each in ``companies_dir``.

``daemon.yaml`` keeps what every company shares (database, schedule, the Next Engine app's
``client_id``/secret and ``redirect_uri``, …); a company file holds only ``wms``,
``warehouses``, ``plugins`` and optional ``nextengine`` overrides (timeouts, page size, the
API's address). A section it holds replaces daemon.yaml's (``nextengine`` is merged key by
key), a section it leaves out is daemon.yaml's, and the result is validated exactly as
``daemon.yaml`` is: every problem with its file, line and the closest known key. Each company
gets its own ``state_dir`` (``<state_dir>/companies/<code>``) and shares the database.

- The file name is the company's code: ``[a-z0-9][a-z0-9_-]{0,62}`` plus ``.yaml`` (or
  ``.yml``); hidden files and other names (editor backups, README) are not companies.
- A file that is invalid, a symbolic link, or a second file for one code is refused alone;
  the other companies load. On :meth:`Companies.reload` a refused file keeps the company's
  last valid version running (as a web server keeps its last good configuration).
- Two companies never share a WMS folder, file or ``state_dir``: each path-like option of a
  company's effective ``wms.<connector>`` section (``inbox``, ``outbox``, ``*_dir``,
  ``*_folder``, ``*_file`` — the keys ``nebridge systemd unit`` makes writable) and its
  ``state_dir``, symbolic links resolved, is its own; a company whose path equals or lies
  inside (or around) another's is refused naming both files. A company already loaded keeps
  its path (a newcomer or a changed file is refused); at first load the first code in sort
  order wins.
- A reload that finds no company file at all while companies are loaded (a shared folder
  whose mount dropped looks like that) is refused, keeping every company, unless the file
  ``companies_dir/.empty-ok`` (:data:`EMPTY_OK`) says stopping them all is meant.
- Without ``companies_dir`` there is one implicit company, ``default``: daemon.yaml itself.
"""

from __future__ import annotations

import bisect
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import (
    ConfigError,
    ConfigIssue,
    DaemonConfig,
    LoadedConfig,
    did_you_mean,
    read_yaml,
    resolve_path,
    validate_document,
    yaml_line,
)
from daemon.systemd_unit import FOLDER_KEYS

DEFAULT_COMPANY = "default"
CODE_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
CODE_RE = re.compile(rf"^{CODE_PATTERN}$")
SUFFIXES = (".yaml", ".yml")
#: In ``companies_dir``: a reload that finds no company file may stop every company.
EMPTY_OK = ".empty-ok"
#: What a company file may hold.
COMPANY_KEYS = ("wms", "warehouses", "plugins", "nextengine")
#: ``nextengine`` keys that belong to the one Next Engine app of the fleet (daemon.yaml).
APP_KEYS = ("client_id", "client_secret", "redirect_uri", "token_file")


@dataclass(frozen=True, slots=True)
class Company:
    """One company: its code, its file (None for the implicit ``default``) and its whole
    effective configuration."""

    code: str
    path: Path | None
    config: DaemonConfig


@dataclass(frozen=True, slots=True)
class Refusal:
    """A company file that was not loaded, and why (path and line included)."""

    path: Path
    error: ConfigError

    def __str__(self) -> str:
        return str(self.error)


@dataclass(frozen=True, slots=True)
class Changes:
    """What a :meth:`Companies.reload` found, by company code."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def _plain(node: Any) -> Any:
    """ruamel's containers as plain dicts and lists."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_company(path: Path, code: str, base: LoadedConfig, raw: Any = None) -> Company:
    """Read and validate the company file ``path`` (or ``raw``, its document as edited) on
    top of ``base`` (daemon.yaml).

    Raises :class:`ConfigError` naming ``path``, each problem with its line.
    """
    raw = read_yaml(path) if raw is None else raw
    issues = []
    for key in raw:
        if key in COMPANY_KEYS:
            continue
        if key in DaemonConfig.model_fields:
            message = (
                f"`{key}` is shared by every company: set it in {base.path}, not in a "
                f"company file (a company file holds {', '.join(COMPANY_KEYS)})"
            )
        else:
            message = (
                f"unknown key `{key}`{did_you_mean(str(key), COMPANY_KEYS)} (a company "
                f"file holds {', '.join(COMPANY_KEYS)})"
            )
        issues.append(ConfigIssue(str(key), message, yaml_line(raw, (key,))))
    overrides = raw.get("nextengine")
    if isinstance(overrides, Mapping):
        for key in overrides:
            if key in APP_KEYS:
                loc = ("nextengine", str(key))
                issues.append(
                    ConfigIssue(
                        f"nextengine.{key}",
                        f"`{key}` belongs to the fleet's one Next Engine app: "
                        f"set it in {base.path}; each company signs in with `nebridge connect "
                        "--company CODE` and its tokens are kept in the database",
                        yaml_line(raw, loc),
                    )
                )
    if issues:
        raise ConfigError(path, issues)
    data = base.config.model_dump(exclude={"companies_dir"})
    data.update({k: v for k, v in _plain(raw).items() if k != "nextengine"})
    if isinstance(overrides, Mapping):
        data["nextengine"] = {**data["nextengine"], **_plain(overrides)}
    data["state_dir"] = base.config.state_dir / "companies" / code
    data["database_url"] = base.config.resolved_database_url
    return Company(code, path, validate_document(data, raw, path))


class Companies:
    """The companies of one ``daemon.yaml``, reloadable (SIGHUP, a file watch)."""

    def __init__(self, base: LoadedConfig) -> None:
        self.base = base
        self.companies: dict[str, Company] = {}
        self.refused: tuple[Refusal, ...] = ()
        self.reload()

    def __repr__(self) -> str:
        return f"Companies({len(self.companies)} loaded, {len(self.refused)} refused)"

    @property
    def fleet(self) -> bool:
        """True when daemon.yaml sets ``companies_dir`` (fleet mode)."""
        return self.base.config.companies_dir is not None

    def reload(self, base: LoadedConfig | None = None) -> Changes:
        """Read the folder again (and ``base``, a re-read daemon.yaml, if given); the codes
        added, changed and removed, and the files refused. A refused file keeps its company's
        last valid version."""
        if base is not None:
            self.base = base
        found, refused = self._scan()
        if self.fleet and self.companies and not found and not refused:
            self._refuse_emptying()
        kept = {
            code: self.companies[code]
            for code in refused_codes(refused)
            if code in self.companies and code not in found
        }
        previous = self.companies
        current = self._exclusive(found, kept, refused) if self.fleet else {**kept, **found}
        self.companies, self.refused = dict(sorted(current.items())), tuple(refused)
        return Changes(
            added=tuple(sorted(set(current) - set(previous))),
            changed=tuple(
                sorted(
                    c
                    for c in set(current) & set(previous)
                    if current[c].config != previous[c].config
                )
            ),
            removed=tuple(sorted(set(previous) - set(current))),
            refused=tuple(refused),
        )

    def _refuse_emptying(self) -> None:
        """Raise :class:`ConfigError` (every company kept) unless :data:`EMPTY_OK` is there."""
        folder = self.base.config.companies_dir
        assert folder is not None
        if os.path.lexists(folder / EMPTY_OK):
            return
        raise ConfigError(
            self.base.path,
            [
                ConfigIssue(
                    "companies_dir",
                    f"the folder {folder} holds no company file any more: applying that "
                    f"would stop all {len(self.companies)} companies, so it is refused and "
                    "they keep running. If a shared folder's mount dropped, mount it again; "
                    f"to stop every company on purpose, create {folder / EMPTY_OK} (the "
                    "workers apply it within a few seconds) or stop the workers",
                    yaml_line(self.base.raw, ("companies_dir",)),
                )
            ],
            next_step="Nothing was applied.",
        )

    def _exclusive(
        self, found: dict[str, Company], kept: dict[str, Company], refused: list[Refusal]
    ) -> dict[str, Company]:
        """``found`` and ``kept`` without a company that would share a WMS path or
        ``state_dir`` with another (refused into ``refused``, keeping its last valid version
        if it has one). Who keeps a path: the companies whose version is unchanged, then
        changed ones in code order (never onto a path another loaded company still has),
        then new ones in code order."""
        previous = self.companies
        codes = sorted(set(found) | set(kept))
        unchanged = [
            c
            for c in codes
            if c in kept or (c in previous and found[c].config == previous[c].config)
        ]
        changed = [c for c in codes if c in previous and c not in unchanged]
        settled = {c: kept.get(c) or found[c] for c in unchanged}
        owners = _Owners()
        for code in unchanged:
            owners.add(code, claimed_paths(settled[code], self.base))
        for code in changed:  # their last version's paths stay theirs until they move
            owners.add(code, claimed_paths(previous[code], self.base))
        for code in [*changed, *(c for c in codes if c not in previous)]:
            mine = claimed_paths(found[code], self.base)
            clash = owners.clash(code, mine)
            if clash is None:
                settled[code] = found[code]
                owners.remove(code)
                owners.add(code, mine)
                continue
            (field, path), other, (other_field, other_path) = clash
            owner = settled.get(other) or previous[other]
            refused.append(self._clash(found[code], field, path, owner, other_field, other_path))
            if code in previous:
                settled[code] = previous[code]
        return settled

    def _clash(
        self,
        company: Company,
        field: str,
        path: Path,
        owner: Company,
        owner_field: str,
        owner_path: Path,
    ) -> Refusal:
        """The refusal of ``company`` whose ``field`` would share ``owner``'s path."""
        assert company.path is not None
        relation = "is" if path == owner_path else "overlaps"
        inherited = ""
        if field.startswith("wms.") and company.config.wms == self.base.config.wms:
            inherited = (
                f" (its `wms` is {self.base.path}'s, which a company file without a `wms` "
                "section uses: it can serve one company at most)"
            )
        message = (
            f"{path} {relation} {owner_field} {owner_path} of company `{owner.code}` "
            f"({owner.path}){inherited}: two companies on one WMS folder, file or state "
            f"folder would take each other's files; give `{company.code}` its own "
            "(docs/fleet.md, Companies as files)"
        )
        return Refusal(company.path, ConfigError(company.path, [ConfigIssue(field, message)]))

    def _scan(self) -> tuple[dict[str, Company], list[Refusal]]:
        folder = self.base.config.companies_dir
        if folder is None:
            return {DEFAULT_COMPANY: Company(DEFAULT_COMPANY, None, self.base.config)}, []
        try:
            names = sorted(os.listdir(folder))
        except OSError as exc:
            raise ConfigError(
                self.base.path,
                [
                    ConfigIssue(
                        "companies_dir",
                        f"cannot read the folder {folder} ({exc.strerror or exc}); "
                        "create it (one <code>.yaml per company) or fix the path",
                        yaml_line(self.base.raw, ("companies_dir",)),
                    )
                ],
            ) from None
        candidates: dict[str, list[Path]] = {}
        refused: list[Refusal] = []
        for name in names:
            path = folder / name
            stem, suffix = os.path.splitext(name)
            if name.startswith(".") or suffix not in SUFFIXES:
                continue
            if not CODE_RE.match(stem):
                refused.append(
                    _refuse(
                        path,
                        (
                            f"`{stem}` is not a company code: use 1-63 lower-case letters, digits, "
                            "'_' or '-', starting with a letter or digit; rename the file"
                        ),
                    )
                )
                continue
            candidates.setdefault(stem, []).append(path)
        found: dict[str, Company] = {}
        for code, paths in candidates.items():
            for outcome in _load_files(code, paths, self.base):
                if isinstance(outcome, Company):
                    found[code] = outcome
                else:
                    refused.append(outcome)
        return found, refused


#: What a watched file looks like to ``stat``: (inode, mtime, ctime, size); None: absent.
Stamp = tuple[int, int, int, int] | None


class FileWatch:
    """Notices added, changed and removed company files and a changed daemon.yaml by polling
    ``stat`` (no dependency; 18–28 ms a look for 1,000 files on a 2-core machine).

    :meth:`poll` answers True once what it sees differs from the last :meth:`mark` *and* has
    not changed since the previous poll: a file an editor is still writing (its size or time
    still moving) is applied one poll after it stands still, not half-written.
    """

    def __init__(self, companies: Companies) -> None:
        self.companies = companies
        self._applied = self.snapshot()
        self._seen = self._applied

    def __repr__(self) -> str:
        return f"FileWatch({len(self._applied)} files)"

    def snapshot(self) -> dict[str, Stamp]:
        """daemon.yaml's and every candidate company file's stamp, by path."""
        base = self.companies.base
        files: dict[str, Stamp] = {str(base.path): _stamp(base.path, follow=True)}
        folder = base.config.companies_dir
        if folder is None:
            return files
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.name.endswith(SUFFIXES):
                        continue
                    files[entry.path] = _stamp(Path(entry.path), follow=False)
        except OSError as exc:  # the folder gone or closed: a reload says so, with the fix
            files[str(folder)] = (-1, exc.errno or 0, 0, 0)
        files[str(folder / EMPTY_OK)] = _stamp(folder / EMPTY_OK, follow=False)
        return files

    def mark(self) -> None:
        """What is on disk now is being applied (a reload is about to read it)."""
        self._applied = self._seen = self.snapshot()

    def poll(self) -> bool:
        """True when the files differ from the last :meth:`mark` and stood still since the
        previous poll: time to reload."""
        now = self.snapshot()
        settled = now == self._seen
        self._seen = now
        return settled and now != self._applied


def _stamp(path: Path, *, follow: bool) -> Stamp:
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)


def load_one(base: LoadedConfig, code: str) -> Company | Refusal | None:
    """Company ``code`` alone, checked as :meth:`Companies.reload` checks it, without reading
    the other files (a per-company command of a large fleet); None when it has no file."""
    folder = base.config.companies_dir
    if folder is None or not CODE_RE.match(code):
        return None
    paths = [
        folder / f"{code}{suffix}"
        for suffix in SUFFIXES
        if os.path.lexists(folder / f"{code}{suffix}")
    ]
    outcomes = _load_files(code, paths, base)
    return next((o for o in outcomes if isinstance(o, Refusal)), outcomes[0] if outcomes else None)


def _load_files(code: str, paths: list[Path], base: LoadedConfig) -> list[Company | Refusal]:
    """The files found for ``code``: its company, or why each is refused (none: removed)."""
    if len(paths) > 1:
        return [
            _refuse(
                path,
                (
                    f"company `{code}` has {len(paths)} files ({', '.join(p.name for p in paths)}"
                    "); keep one of them"
                ),
            )
            for path in paths
        ]
    if not paths:
        return []
    path = paths[0]
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return []  # removed while we looked
    if stat.S_ISLNK(info.st_mode):
        return [
            _refuse(
                path,
                (
                    "is a symbolic link; nebridge reads no configuration through one: put the "
                    f'file itself there (`cp --remove-destination "$(readlink -f {path})" '
                    f"{path}`)"
                ),
            )
        ]
    if not stat.S_ISREG(info.st_mode):
        return [_refuse(path, "is not a regular file; remove it")]
    try:
        return [load_company(path, code, base)]
    except ConfigError as exc:
        return [Refusal(path, exc)]


#: A company's path-like setting: its name (``wms.csv.inbox``, ``state_dir``) and real path.
Claim = tuple[str, Path]


def claimed_paths(company: Company, base: LoadedConfig) -> list[Claim]:
    """What ``company`` must have to itself: its ``state_dir`` and the path-like options of
    its effective ``wms.<connector>`` section (relative ones next to its file, as its runtime
    reads them), symbolic links resolved."""
    config = company.config
    paths: list[Claim] = [("state_dir", config.state_dir)]
    origin = company.path or base.path
    for key, value in config.wms.connector_section().items():
        if not isinstance(value, str | Path) or not str(value):
            continue
        if key in FOLDER_KEYS or key.endswith(("_dir", "_folder", "_file")):
            paths.append((f"wms.{config.wms.connector}.{key}", resolve_path(value, origin)))
    return [(field, Path(os.path.realpath(path))) for field, path in paths]


class _Owners:
    """Who holds which path (see :func:`claimed_paths`), answering in a few dictionary and
    bisect look-ups whether a path equals, lies inside or holds another company's: 0.18 s
    for 1,000 companies, most of it resolving their paths, beside 2.5 s to read their files
    (2-core development machine, shared)."""

    def __init__(self) -> None:
        self._by_path: dict[str, list[tuple[str, str]]] = {}
        self._sorted: list[str] = []
        self._claims: dict[str, list[Claim]] = {}

    def add(self, code: str, claims: list[Claim]) -> None:
        self._claims[code] = claims
        for field, path in claims:
            key = str(path)
            if key not in self._by_path:
                bisect.insort(self._sorted, key)
            self._by_path.setdefault(key, []).append((code, field))

    def remove(self, code: str) -> None:
        for field, path in self._claims.pop(code, []):
            key = str(path)
            holders = self._by_path[key]
            holders.remove((code, field))
            if not holders:
                del self._by_path[key]
                del self._sorted[bisect.bisect_left(self._sorted, key)]

    def clash(self, code: str, claims: list[Claim]) -> tuple[Claim, str, Claim] | None:
        """The first of ``claims`` equal to, inside or around another company's path:
        (that claim, the other company's code, its claim); None when all are free."""
        for field, path in claims:
            near = [str(p) for p in (path, *path.parents)]
            prefix = str(path).rstrip("/") + "/"
            at = bisect.bisect_left(self._sorted, prefix)
            while at < len(self._sorted) and self._sorted[at].startswith(prefix):
                near.append(self._sorted[at])
                at += 1
            for key in near:
                for other, other_field in self._by_path.get(key, []):
                    if other != code:
                        return (field, path), other, (other_field, Path(key))
        return None


def refused_codes(refused: list[Refusal]) -> set[str]:
    """The company codes of refused files (their stems)."""
    return {os.path.splitext(r.path.name)[0] for r in refused}


def _refuse(path: Path, message: str) -> Refusal:
    return Refusal(path, ConfigError(path, [ConfigIssue("", message)]))
