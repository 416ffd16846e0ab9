"""What the operator's commands read and change in fleet mode: ``companies list``, the fleet
overview of ``status``, ``connect``/``unlink --company``, the vault key rotation and
``companies forget``.

Read-only except :func:`rotate_key` and :func:`forget_company`. Every figure comes from the
database (leases by its clock); a company whose own tables cannot be read is listed with why,
never left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text

from daemon import attention
from daemon.attention_items import AttentionKind
from daemon.config import LoadedConfig
from daemon.fleet.companies import CODE_PATTERN, Companies, Company, Refusal, refused_codes
from daemon.fleet.leases import FORGET_WORKERS_AFTER, WorkerState, overview
from daemon.fleet.runtime import FleetDatabase, company_schema, schema_owner, schema_url
from daemon.fleet.vault import TokenVault, VaultError
from daemon.nelink import NEEDS_RECONNECT, link_info
from daemon.store.engine import head_revision, make_engine
from daemon.store.models import (
    AttentionProblem,
    EventState,
    InboxEvent,
    OutboxItem,
    OutboxState,
    ProblemState,
)

#: Outbox states that are work still to do (``in_doubt``/``failed`` wait for a person and are
#: counted as attention).
_OUTBOX_BACKLOG = (OutboxState.PENDING.value, OutboxState.IN_FLIGHT.value)


def company_database_url(base: LoadedConfig, code: str) -> str:
    """daemon.yaml's database with every session's ``search_path`` on company ``code``'s
    schema: what the CLI's per-company commands use, so every service that opens the
    database from the configuration (status, doctor, attention, history, …) — and any plain
    SQL — reads and writes that company's tables."""
    url = base.config.resolved_database_url
    engine = make_engine(url, create=False)
    try:
        with engine.connect() as connection:
            base_schema = str(connection.execute(text("SELECT current_schema()")).scalar_one())
    finally:
        engine.dispose()
    return schema_url(url, company_schema(code, base_schema))


def fleet_database(base: LoadedConfig) -> FleetDatabase:
    """The fleet's shared database (leases, workers, the vault; one pool for the companies'
    schemas); refused (:class:`~daemon.fleet.leases.FleetUnavailable`) on SQLite or before
    ``nebridge db upgrade``."""
    return FleetDatabase(
        base.config.resolved_database_url,
        lease_seconds=base.config.fleet_lease_seconds,
        credentials_dir=base.config.credentials_dir,
    )


@dataclass
class CompanyState:
    """One company as ``companies list`` shows it."""

    code: str
    file: str
    link: dict[str, Any] = field(default_factory=dict)
    tokens_stored: bool = False
    key_id: str | None = None
    served_by: str | None = None
    lease_seconds_left: float | None = None
    epoch: int = 0
    inbox_pending: int | None = None
    outbox_pending: int | None = None
    attention: int | None = None
    error: str | None = None
    #: Its file is refused now (``path:line: reason``); a worker may still serve the
    #: company's last valid version.
    file_refused: str | None = None
    #: Why the worker holding its lease does not serve it (its service did not start, its
    #: tables are missing); None when served or not held.
    not_started: str | None = None

    @property
    def served(self) -> bool:
        """A worker holds it and runs its service."""
        return self.served_by is not None and self.not_started is None

    def as_dict(self) -> dict[str, Any]:
        """The stable ``--json`` structure."""
        return {
            "code": self.code,
            "file": self.file,
            "link": self.link,
            "tokens_stored": self.tokens_stored,
            "key_id": self.key_id,
            "served_by": self.served_by,
            "lease_seconds_left": (
                None if self.lease_seconds_left is None else round(self.lease_seconds_left, 1)
            ),
            "epoch": self.epoch,
            "inbox_pending": self.inbox_pending,
            "outbox_pending": self.outbox_pending,
            "attention": self.attention,
            "error": self.error,
            "file_refused": self.file_refused,
            "not_started": self.not_started,
        }


def refusal_dict(refusal: Refusal) -> list[dict[str, Any]]:
    """A refused company file as one entry per problem, each with path and line."""
    return [
        {
            "path": str(refusal.path),
            "line": issue.line,
            "field": issue.path,
            "message": issue.message,
        }
        for issue in refusal.error.issues
    ]


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


#: Schemas per statement when every company's figures are read in one (UNION ALL).
_SCHEMAS_PER_QUERY = 500


def _per_schema(fleet: FleetDatabase, codes: list[str], select_one: str) -> dict[str, Any]:
    """``select_one`` (SQL with ``{schema}`` for a company's quoted schema, one row of
    columns) run for every company in a few UNION ALL statements: one round trip per
    :data:`_SCHEMAS_PER_QUERY` companies, not one per company; ``{code: row}``."""
    quote = fleet.engine.dialect.identifier_preparer.quote
    found: dict[str, Any] = {}
    with fleet.engine.connect() as connection:
        for start in range(0, len(codes), _SCHEMAS_PER_QUERY):
            chunk = codes[start : start + _SCHEMAS_PER_QUERY]
            sql = " UNION ALL ".join(
                f"SELECT CAST(:c{n} AS text) AS code, "
                + select_one.format(schema=quote(fleet.schema(code)))
                for n, code in enumerate(chunk)
            )
            params = {f"c{n}": code for n, code in enumerate(chunk)}
            found.update((row.code, row) for row in connection.execute(text(sql), params))
    return found


def _schema_problems(fleet: FleetDatabase, codes: list[str]) -> dict[str, str]:
    """Why each company's tables cannot be read (no schema yet, another migration), by code;
    the companies at this nebridge's migration are absent."""
    head = head_revision(fleet.engine)
    schemas = {fleet.schema(code): code for code in codes}
    with fleet.engine.connect() as connection:
        migrated = {
            schemas[name]
            for name in connection.execute(
                text(
                    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace "
                    "WHERE c.relname = 'alembic_version' AND n.nspname = ANY(CAST(:names AS "
                    "text[]))"
                ),
                {"names": list(schemas)},
            ).scalars()
        }
    versions = _per_schema(
        fleet,
        sorted(migrated),
        "(SELECT max(version_num) FROM {schema}.alembic_version) AS version",
    )
    problems = {}
    for code in codes:
        schema = fleet.schema(code)
        current = versions[code].version if code in migrated else None
        if current == head:
            continue
        problems[code] = (
            f"no tables yet (schema {schema}): run `nebridge db upgrade`"
            if current is None
            else f"schema {schema} is at migration {current}, this nebridge needs {head}: run "
            f"`nebridge db upgrade` (if {current} is newer, upgrade nebridge on this host)"
        )
    return problems


def _fill_backlogs(
    rows: list[CompanyState],
    companies: dict[str, Company],
    fleet: FleetDatabase,
    vault: TokenVault | None,
) -> None:
    """Each company's backlog, attention count and link from its own tables; a company whose
    tables cannot be read gets why, the others are listed regardless."""
    problems = _schema_problems(fleet, [row.code for row in rows])
    readable = [row.code for row in rows if row.code not in problems]
    backlog = _per_schema(
        fleet,
        readable,
        (
            f"(SELECT count(*) FROM {{schema}}.{InboxEvent.__tablename__} WHERE state = "
            f"'{EventState.PENDING.value}') AS inbox, (SELECT count(*) FROM "
            f"{{schema}}.{OutboxItem.__tablename__} WHERE state IN "
            f"({', '.join(repr(state) for state in _OUTBOX_BACKLOG)})) AS outbox, "
            f"(SELECT reason FROM {{schema}}.{AttentionProblem.__tablename__} WHERE kind = "
            f"'{AttentionKind.SERVICE_NOT_STARTED.value}' AND state = "
            f"'{ProblemState.OPEN.value}' LIMIT 1) AS not_started"
        ),
    )
    for row in rows:
        if row.code in problems:
            row.error = problems[row.code]
            if row.served_by is not None:  # no worker can serve a company without tables
                row.not_started = problems[row.code]
            continue
        row.inbox_pending = int(backlog[row.code].inbox)
        row.outbox_pending = int(backlog[row.code].outbox)
        if row.served_by is not None and backlog[row.code].not_started is not None:
            row.not_started = str(backlog[row.code].not_started)
        engine = fleet.company_engine(row.code)
        try:
            row.attention = attention.collect(engine, limit=1).total
            if vault is not None and row.code in companies:
                row.link = link_info(
                    companies[row.code].config, engine, store=vault.store(row.code)
                ).as_dict()
        except Exception as exc:  # one company's rows unreadable: say so, list the others
            row.error = _first_line(exc)


def _heartbeats(fleet: FleetDatabase) -> dict[str, tuple[datetime, float, float | None]]:
    """Each worker's last heartbeat, seconds since it (the database's clock), and seconds
    since its heartbeat expired (None while it is live), by worker id."""
    with fleet.engine.connect() as connection:
        return {
            str(row.worker_id): (
                row.heartbeat_at,
                float(row.ago),
                None if row.dead_for is None else float(row.dead_for),
            )
            for row in connection.execute(
                text(
                    "SELECT worker_id, heartbeat_at, "
                    "extract(epoch FROM clock_timestamp() - heartbeat_at) AS ago, "
                    "CASE WHEN expires_at <= clock_timestamp() THEN "
                    "extract(epoch FROM clock_timestamp() - expires_at) END AS dead_for "
                    "FROM fleet_worker"
                )
            )
        }


def fleet_overview(base: LoadedConfig, *, backlog: bool = True) -> dict[str, Any]:
    """Every company (link, lease, backlog, attention), the workers, the unserved companies,
    the refused files and the totals: ``companies list`` and ``status`` in fleet mode."""
    companies = Companies(base)
    fleet = fleet_database(base)
    try:
        leases, workers = overview(fleet.engine)
        heartbeats = _heartbeats(fleet)
        with fleet.engine.connect() as connection:
            stored = {
                str(r.company): str(r.key_id)
                for r in connection.execute(text("SELECT company, key_id FROM fleet_token"))
            }
        try:
            vault: TokenVault | None = fleet.vault
            vault_note = None
        except VaultError as exc:
            vault, vault_note = None, str(exc)
        by_code = {lease.company: lease for lease in leases}
        rows = []
        for code, company in companies.companies.items():
            row = CompanyState(
                code=code,
                file=str(company.path or base.path),
                tokens_stored=code in stored,
                key_id=stored.get(code),
            )
            lease = by_code.get(code)
            if lease is not None:
                row.served_by, row.epoch = lease.holder, lease.epoch
                row.lease_seconds_left = lease.expires_in_seconds
            rows.append(row)
        for refusal in companies.refused:  # known to the fleet, its file broken since
            code = refused_codes([refusal]).pop()
            lease = by_code.get(code)
            if code in companies.companies or lease is None:
                continue
            first = refusal.error.issues[0] if refusal.error.issues else None
            where = f"{refusal.path}:{first.line}" if first and first.line else str(refusal.path)
            note = f"{where}: {first.message}" if first else str(refusal.path)
            existing = next((r for r in rows if r.code == code), None)
            if existing is not None:  # a second file for one code: one row, both notes
                existing.file_refused = f"{existing.file_refused}; {note}"
                continue
            rows.append(
                CompanyState(
                    code=code,
                    file=str(refusal.path),
                    tokens_stored=code in stored,
                    key_id=stored.get(code),
                    served_by=lease.holder,
                    epoch=lease.epoch,
                    lease_seconds_left=lease.expires_in_seconds,
                    file_refused=note,
                )
            )
        rows.sort(key=lambda row: row.code)
        leftovers = company_leftovers(
            fleet, set(companies.companies) | refused_codes(list(companies.refused))
        )
        if backlog:
            _fill_backlogs(rows, companies.companies, fleet, vault)
        for row in rows:
            if not row.link:
                row.link = {"state": "connected" if row.tokens_stored else "not_connected"}
    finally:
        fleet.close()
    live = [w for w in workers if w.live]
    unserved = [r.code for r in rows if r.served_by is None]
    not_started = [r.code for r in rows if r.served_by is not None and not r.served]
    shown: list[dict[str, Any]] = []
    gone: list[dict[str, Any]] = []
    for w in workers:
        beat = heartbeats.get(w.worker_id)
        entry = {
            "worker_id": w.worker_id,
            "host": w.host,
            "pid": w.pid,
            "live": w.live,
            "companies": w.holds,
            "heartbeat_at": None if beat is None else beat[0].isoformat(),
            "seconds_since_heartbeat": None if beat is None else round(beat[1], 1),
        }
        dead_for = None if beat is None else beat[2]
        (gone if dead_for is not None and dead_for > FORGET_WORKERS_AFTER else shown).append(entry)
    return {
        "config": str(base.path),
        "companies_dir": str(base.config.companies_dir),
        "companies": [r.as_dict() for r in rows],
        "refused": [entry for refusal in companies.refused for entry in refusal_dict(refusal)],
        "workers": shown,
        "workers_gone": gone,
        "unserved": unserved,
        "not_started": not_started,
        "leftovers": leftovers,
        "vault": {
            "key_id": None if vault is None else vault.keys.current.key_id,
            "problem": vault_note,
        },
        "totals": {
            "companies": len(rows),
            "refused_files": len(companies.refused),
            "workers_live": len(live),
            "workers_gone": len(gone),
            "needs_reconnect": sum(1 for r in rows if r.link.get("state") == NEEDS_RECONNECT),
            "served": sum(1 for r in rows if r.served),
            "unserved": len(unserved),
            "not_started": len(not_started),
            "not_connected": sum(1 for r in rows if not r.tokens_stored),
            "inbox_pending": sum(r.inbox_pending or 0 for r in rows),
            "outbox_pending": sum(r.outbox_pending or 0 for r in rows),
            "attention": sum(r.attention or 0 for r in rows),
            "unreadable": sum(1 for r in rows if r.error),
            "leftovers": len(leftovers),
        },
    }


def company_leftovers(fleet: FleetDatabase, known: set[str]) -> list[dict[str, Any]]:
    """What the database keeps of companies that have no file (not in ``known``): a sealed
    token pair, a lease row, a schema marked as this installation's company — each code
    once, with what is left (``companies forget CODE`` removes it)."""
    marker = re.compile(
        re.escape(schema_owner("CODE", fleet.base_schema)).replace("CODE", f"({CODE_PATTERN})")
    )
    found: dict[str, dict[str, Any]] = {}
    with fleet.control.connect() as connection:
        for (code,) in connection.execute(text("SELECT company FROM fleet_token")):
            found.setdefault(str(code), {})["tokens"] = True
        for (code,) in connection.execute(text("SELECT company FROM fleet_lease")):
            found.setdefault(str(code), {})["lease"] = True
        for name, owner in connection.execute(
            text(
                "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace "
                "WHERE obj_description(oid, 'pg_namespace') LIKE :like"
            ),
            {"like": "nebridge company % of the installation in schema %"},
        ):
            mark = marker.fullmatch(str(owner))
            if mark and company_schema(mark[1], fleet.base_schema) == name:
                found.setdefault(mark[1], {})["schema"] = str(name)
    return [
        {
            "code": code,
            "tokens": bool(left.get("tokens")),
            "lease": bool(left.get("lease")),
            "schema": left.get("schema"),
        }
        for code, left in sorted(found.items())
        if code not in known
    ]


class ForgetRefused(Exception):
    """``companies forget`` would remove a company still in use; the message says why and
    what to do."""


def forget_company(base: LoadedConfig, code: str, *, drop_schema: bool) -> dict[str, Any]:
    """Remove what the database keeps of company ``code`` whose file is gone: its sealed
    token pair and lease row, and with ``drop_schema`` its schema (its tables and rows).
    Refused (:class:`ForgetRefused`) while its file exists here or a worker holds its lease
    — a host still having the file would serve it again. Returns what was removed and what
    remains."""
    from daemon.fleet.companies import load_one
    from daemon.fleet.leases import forget_lease

    here = load_one(base, code)
    if here is not None:
        raise ForgetRefused(
            f"company {code!r} still has its file {here.path}: `nebridge unlink --company "
            f"{code}` first (it exports unfinished work), then remove the file on every host, "
            f"then run `nebridge companies forget {code}` again"
        )
    fleet = fleet_database(base)
    schema = fleet.schema(code)
    try:
        with fleet.control.begin() as connection:
            lease_deleted, holder = forget_lease(connection, code)
            if holder is not None:
                raise ForgetRefused(
                    f"company {code!r} is served by worker {holder}: its file is still on that "
                    "worker's host; remove it there (the worker lets the company go within "
                    f"seconds, `companies_watch_seconds`), then run `nebridge companies forget "
                    f"{code}` again; nothing was changed"
                )
            tokens_deleted = bool(
                connection.execute(
                    text("DELETE FROM fleet_token WHERE company = :company"), {"company": code}
                ).rowcount
            )
            owner = connection.execute(
                text("SELECT obj_description(to_regnamespace(:schema), 'pg_namespace')"),
                {"schema": schema},
            ).scalar()
            exists = connection.execute(
                text("SELECT to_regnamespace(:schema) IS NOT NULL"), {"schema": schema}
            ).scalar_one()
            dropped = False
            if drop_schema and exists:
                if owner != schema_owner(code, fleet.base_schema):
                    raise ForgetRefused(
                        f"schema {schema} is not marked as company {code!r} of this "
                        f"installation ({owner!r}): it is not dropped; nothing was changed"
                    )
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                dropped = True
    finally:
        fleet.close()
    return {
        "company": code,
        "tokens_deleted": tokens_deleted,
        "lease_deleted": lease_deleted,
        "schema": schema,
        "schema_dropped": dropped,
        "schema_left": bool(exists) and not dropped,
        "state_dir": str(base.config.state_dir / "companies" / code),
    }


class WorkersLackKey(VaultError):
    """Live workers do not seal with the current vault key: a rotation now would be undone
    by their token refreshes. The message names them and the fix."""

    def __init__(self, current: str, workers: list[WorkerState]) -> None:
        self.workers = workers
        super().__init__(
            f"{len(workers)} live worker(s) do not seal with the current vault key {current}: "
            + "; ".join(f"{w.worker_id} on {w.host} {_key_note(w, current)}" for w in workers)
            + " — their token refreshes would seal pairs with the old key again. On "
            f"{', '.join(sorted({w.host for w in workers}))}: install the new key as "
            "nebridge-vault-key (the old one as nebridge-vault-key-previous) and run "
            "`systemctl restart nebridge`, then `nebridge companies rotate-key` again "
            "(`--force` rotates anyway; nothing was changed)"
        )


def _key_note(worker: WorkerState, current: str) -> str:
    if worker.vault_key_id is None:
        return "has loaded no vault key (an older nebridge, or not started yet)"
    if current in worker.vault_key_ids:
        return f"seals with key {worker.vault_key_id} (has {current} only as the previous key)"
    return f"seals with key {worker.vault_key_id} and does not have {current}"


def rotate_key(
    base: LoadedConfig,
    progress: Callable[[str, int, int], None] = lambda code, done, total: None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Seal every company's pair again with the current vault key (docs/fleet.md, "Rotating
    the key"); ``progress(company, done, total)`` after each. Returns the key ids' use
    before and after. Refused (:class:`WorkersLackKey`) while a live worker seals with
    another key, unless ``force``."""
    fleet = fleet_database(base)
    try:
        vault = fleet.vault
        current = vault.keys.current.key_id
        lagging = [w for w in overview(fleet.control)[1] if w.live and w.vault_key_id != current]
        if lagging and not force:
            raise WorkersLackKey(current, lagging)
        before = vault.key_use()
        rotated = vault.rotate(progress=progress)
        after = vault.key_use()
    finally:
        fleet.close()
    return {
        "current_key_id": current,
        "rotated": rotated,
        "before": before,
        "after": after,
        "left_on_old_keys": sum(n for key_id, n in after.items() if key_id != current),
        "workers_without_current_key": [w.worker_id for w in lagging],
    }
