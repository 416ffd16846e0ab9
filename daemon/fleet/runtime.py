"""One company's engine in fleet mode: its own schema, its fenced commits, its vault tokens.

Every company's rows (inbox, outbox, history, the link row, …) live in a PostgreSQL schema of
its own, ``<base>__<code>`` (``public__acme``; marked with its owner, :func:`claim_schema`),
beside the shared fleet tables (``fleet_lease``, ``fleet_worker``, ``fleet_token``) in the
installation's schema. The engine's code is unchanged: a company's :class:`Runtime` uses
``engine.execution_options(schema_translate_map={None: schema})``, which shares the one
connection pool of the worker however many companies it serves.

- **Fencing.** A company runtime built with a :class:`~daemon.fleet.leases.Lease` fences
  every committing session — one ``before_commit`` event for all of them, not a check per
  call site: :func:`~daemon.fleet.leases.fence` runs in the transaction about to commit, so
  once the lease is lost (expired, released, taken over) nothing more is committed for the
  company. Every Next Engine call checks the lease first (``Runtime.fence``, read through
  :class:`~daemon.instancelock.FencedTokenStore`), and the token pair comes from the vault.
- **Migrations.** :func:`upgrade_company` creates the company's schema and migrates it (the
  fleet tables are not created there); :func:`check_company` refuses a schema that is not at
  this nebridge's migration, saying what to do.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session as OrmSession

from daemon.config import ConfigError, LoadedConfig
from daemon.fleet.companies import Company
from daemon.fleet.leases import (
    DEFAULT_LEASE_SECONDS,
    Lease,
    LeaseLost,
    check_unlocked,
    fence,
    fleet_engine,
    require_fleet_database,
)
from daemon.fleet.vault import TokenVault, VaultKeys, load_keys
from daemon.nextengine.tokens import TokenStore
from daemon.pluginload import load_plugins
from daemon.runtime import Runtime
from daemon.store.engine import head_revision, make_engine, share_health
from hooks.http import BoundedSession

#: The execution option carrying the :class:`Fence` of a fenced company engine.
FENCE_OPTION = "nebridge_fleet_fence"
#: Between the installation's schema and a company's code in the company's schema name.
SCHEMA_SEPARATOR = "__"
#: How many jobs of its companies a worker runs at once (``fleet_job_slots``).
DEFAULT_JOB_SLOTS = 8
#: PostgreSQL's longest identifier.
MAX_IDENTIFIER = 63


class CompanyNotMigrated(Exception):
    """A company's schema is missing or not at this nebridge's migration (says what to do)."""


def company_schema(code: str, base_schema: str = "public") -> str:
    """The schema of company ``code``: ``<base_schema>__<code>`` (``public__acme``).

    One name per (installation, company): an installation schema never holds ``__`` (refused
    by :func:`check_base_schema`) and a code starts with a letter or digit, so the name splits
    back at its first ``__`` only one way — ``shop``+``east_acme`` and ``shop_east``+``acme``
    differ. Names longer than PostgreSQL allows end in a digest instead; the owner marker
    (:func:`claim_schema`) refuses the unlikely collision of two digests."""
    check_base_schema(base_schema)
    name = f"{base_schema}{SCHEMA_SEPARATOR}{code}"
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_IDENTIFIER - 11]}_{digest}"


def check_base_schema(base_schema: str) -> None:
    """Refuse (:class:`CompanyNotMigrated`) an installation schema whose name would make the
    companies' schema names ambiguous."""
    if SCHEMA_SEPARATOR in base_schema:
        raise CompanyNotMigrated(
            f"the installation's schema {base_schema!r} holds {SCHEMA_SEPARATOR!r}, which "
            "separates it from a company's code in the companies' schema names: use a schema "
            "without it (search_path in `database_url`)"
        )


def schema_owner(code: str, base_schema: str) -> str:
    """The marker (the schema's comment) that says which installation's company owns it."""
    return f"nebridge company {code} of the installation in schema {base_schema}"


def claim_schema(connection: Connection, schema: str, code: str, base_schema: str) -> None:
    """Mark ``schema`` as company ``code``'s of this installation, or refuse
    (:class:`CompanyNotMigrated`) a schema another installation (or company) owns."""
    wanted = schema_owner(code, base_schema)
    found = connection.execute(
        text("SELECT obj_description(to_regnamespace(:schema), 'pg_namespace')"), {"schema": schema}
    ).scalar()
    if found is None:
        literal = "'" + wanted.replace("'", "''") + "'"  # COMMENT takes no parameters
        connection.execute(text(f'COMMENT ON SCHEMA "{schema}" IS {literal}'))
    elif found != wanted:
        raise _foreign_schema(schema, code, base_schema, found)


def _foreign_schema(schema: str, code: str, base_schema: str, owner: str) -> CompanyNotMigrated:
    return CompanyNotMigrated(
        f"schema {schema} is owned by another installation or company ({owner!r}), not by "
        f"company {code!r} of the installation in schema {base_schema}: nothing is done in "
        "it; give this installation its own schema (search_path in `database_url`) or "
        "rename the company"
    )


def schema_url(url: str, schema: str) -> str:
    """``url`` with every session's ``search_path`` set to ``schema`` only (for migrating it)."""
    parsed = make_url(url)
    options = str(parsed.query.get("options", ""))
    wanted = f"{options} -csearch_path={schema}".strip()
    return parsed.update_query_dict({"options": wanted}).render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class Fence:
    """What fences a company runtime: its lease, and the event set once the lease is found
    taken over or released (the runtime's ``stop_event``: its jobs stop starting at once,
    before the worker's next round stops the company). A lease that only ran out is not
    final: the worker's next renewal may keep it."""

    lease: Lease
    lost: threading.Event = field(default_factory=threading.Event, compare=False)


class FleetDatabase:
    """What every company served by one process shares: the installation's schema, the token
    vault (its keys read when first needed) and two bounded pools — ``engine`` for the
    companies' own tables (about two connections per running job: the work and notification
    threads of :meth:`~daemon.scheduler.JobHost.for_worker`), ``control`` for the
    leases, the fences of Next Engine calls and the vault, so that busy companies never hold
    up a lease renewal, and a call waiting for its company's token lock never waits for a
    connection a waiting job holds."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        job_slots: int = DEFAULT_JOB_SLOTS,
        keys: VaultKeys | Callable[[], VaultKeys] | None = None,
        credentials_dir: Any = None,
    ) -> None:
        self.url = url
        self.engine = fleet_engine(
            url, lease_seconds=lease_seconds, pool_size=job_slots, max_overflow=2 * job_slots + 4
        )
        self.control = fleet_engine(
            url, lease_seconds=lease_seconds, pool_size=2, max_overflow=job_slots + 4
        )
        try:
            require_fleet_database(self.engine)
            with self.engine.connect() as connection:
                self.base_schema = str(
                    connection.execute(text("SELECT current_schema()")).scalar_one()
                )
        except Exception:
            self.close()
            raise
        self._keys = keys if keys is not None else (lambda: load_keys(credentials_dir))
        self._vault: TokenVault | None = None
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"FleetDatabase(schema {self.base_schema!r})"

    @property
    def vault(self) -> TokenVault:
        """The token vault (its keys are loaded on first use: reading needs none)."""
        with self._guard:
            if self._vault is None:
                keys = self._keys() if callable(self._keys) else self._keys
                self._vault = TokenVault(self.control, keys)
            return self._vault

    def schema(self, code: str) -> str:
        """The schema of company ``code`` in this installation."""
        return company_schema(code, self.base_schema)

    def company_engine(self, code: str, lease: Lease | Fence | None = None) -> Engine:
        """The shared engine with the company's tables in its schema; with ``lease``, every
        committing session is fenced by it (see :func:`_fence_commit`)."""
        options: dict[str, Any] = {"schema_translate_map": {None: self.schema(code)}}
        if lease is not None:
            options[FENCE_OPTION] = lease if isinstance(lease, Fence) else Fence(lease)
        engine = self.engine.execution_options(**options)
        share_health(engine, self.engine)
        return engine

    def lost_reason(self, fenced: Fence) -> str | None:
        """Why nothing may be sent for the fenced company now, or None (no row lock; under
        the company's token lock, the lease row read with the token pair)."""
        try:
            check_unlocked(self.control, fenced.lease.company, fenced.lease.epoch)
        except LeaseLost as exc:
            if exc.final:
                fenced.lost.set()
            return str(exc)
        return None

    def close(self) -> None:
        """Close the pools (after every company runtime using them is closed)."""
        self.engine.dispose()
        self.control.dispose()


@event.listens_for(OrmSession, "before_commit")
def _fence_commit(session: OrmSession) -> None:
    """Fence the transaction about to commit, if its engine is a fenced company engine: the
    lease row stays locked until the commit, so it commits before any takeover or not at all."""
    bind = session.bind
    fenced = None if bind is None else bind.get_execution_options().get(FENCE_OPTION)
    if fenced is not None:
        try:
            fence(session.connection(), fenced.lease.company, fenced.lease.epoch)
        except LeaseLost as exc:
            if exc.final:  # taken over or released: stop now; expired: it may be renewed
                fenced.lost.set()
            raise


def check_company(engine: Engine, schema: str, code: str) -> None:
    """Raise :class:`CompanyNotMigrated` unless the company's schema is at the latest
    migration this nebridge ships."""
    head = head_revision(engine)
    with engine.connect() as connection:
        base_schema = str(connection.execute(text("SELECT current_schema()")).scalar_one())
        owner = connection.execute(
            text("SELECT obj_description(to_regnamespace(:schema), 'pg_namespace')"),
            {"schema": schema},
        ).scalar()
        if owner is not None and owner != schema_owner(code, base_schema):
            raise _foreign_schema(schema, code, base_schema, owner)
        exists = connection.execute(
            text("SELECT to_regclass(:table)"), {"table": f'"{schema}".alembic_version'}
        ).scalar()
        current = (
            None
            if exists is None
            else connection.execute(
                text(f'SELECT max(version_num) FROM "{schema}".alembic_version')
            ).scalar()
        )
    if current == head:
        return
    if current is None:
        raise CompanyNotMigrated(
            f"company {code!r} has no tables yet (schema {schema}); run `nebridge db upgrade`, "
            "which creates and migrates the schema of every company"
        )
    raise CompanyNotMigrated(
        f"company {code!r} (schema {schema}) is at migration {current} but this nebridge "
        f"needs {head}; run `nebridge db upgrade` — or, if {current} is newer, this host runs "
        "an older nebridge than the one that migrated it: upgrade nebridge here"
    )


def upgrade_company(url: str, code: str) -> tuple[str | None, str | None]:
    """Create company ``code``'s schema if needed and migrate it to the head; returns the
    revision before and after. The fleet tables are not created in it (migration 0006).

    Two upgrades of one company at once (two hosts running ``db upgrade``) take turns on a
    PostgreSQL advisory lock for the company, held on a connection of its own (the server
    drops it if the process dies): the second finds the schema made and migrated, instead of
    failing on the first's ``CREATE SCHEMA`` or ``alembic_version``."""
    from alembic import command

    from daemon.store.engine import _alembic_config, current_revision

    base = make_engine(url, create=False)
    try:
        with base.connect() as guard:
            base_schema = str(guard.execute(text("SELECT current_schema()")).scalar_one())
            key = {"space": _schema_oid(guard), "name": f"nebridge upgrade {code}"}
            guard.execute(text("SELECT pg_advisory_lock(:space, hashtext(:name))"), key)
            guard.commit()
            try:
                schema = company_schema(code, base_schema)
                with base.begin() as connection:
                    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                    claim_schema(connection, schema, code, base_schema)
                engine = make_engine(schema_url(url, schema), create=False)
                try:
                    before = current_revision(engine)
                    config = _alembic_config(engine)
                    config.attributes["fleet_company"] = code
                    command.upgrade(config, "head")
                    return before, current_revision(engine)
                finally:
                    engine.dispose()
            finally:
                guard.rollback()  # a failed statement above must not keep the unlock out
                guard.execute(text("SELECT pg_advisory_unlock(:space, hashtext(:name))"), key)
                guard.commit()
    finally:
        base.dispose()


def _schema_oid(connection: Connection) -> int:
    """The installation schema's oid (31 bits): the advisory lock space of its companies, so
    two installations in one database never wait for each other."""
    oid = connection.execute(
        text("SELECT oid FROM pg_namespace WHERE nspname = current_schema()")
    ).scalar_one()
    return int(oid) & 0x7FFFFFFF


def _vault_store(fleet: FleetDatabase, code: str) -> Callable[[], TokenStore]:
    return lambda: fleet.vault.store(code)


def company_runtime(
    loaded: LoadedConfig,
    company: Company,
    *,
    lease: Lease | None = None,
    fleet: FleetDatabase | None = None,
    entry_points: Mapping[str, md.EntryPoint] | None = None,
) -> Runtime:
    """A :class:`Runtime` for one company of the fleet of ``loaded`` (daemon.yaml).

    Its configuration is the company's effective one, its tables are in the company's
    schema, its Next Engine tokens are in the vault, its ``state_dir`` is its own. With
    ``lease``, every commit and every Next Engine call is fenced by it. ``fleet`` is the
    process's shared database (made, and closed with the runtime, when not given);
    ``entry_points`` the installed plugins, found once by a worker for all its companies
    (found again when not given). Raises :class:`ConfigError` (plugins),
    :class:`CompanyNotMigrated`, or :class:`~daemon.fleet.leases.FleetUnavailable`.
    """
    own = fleet is None
    shared = (
        fleet
        if fleet is not None
        else FleetDatabase(
            loaded.config.resolved_database_url, credentials_dir=loaded.config.credentials_dir
        )
    )
    try:
        company_loaded = LoadedConfig(path=company.path or loaded.path, config=company.config)
        host, issues, connector, connector_error = load_plugins(company_loaded, entry_points)
        if issues:
            raise ConfigError(company_loaded.path, issues)
        check_company(shared.engine, shared.schema(company.code), company.code)
    except Exception:
        if own:
            shared.close()
        raise
    stop_event = threading.Event()
    fenced = None if lease is None else Fence(lease, stop_event)
    runtime = Runtime(
        loaded=company_loaded,
        host=host,
        stop_event=stop_event,
        engine=shared.company_engine(company.code, fenced),
        connector=connector,
        connector_error=connector_error,
        http=BoundedSession(company.config.http.limits()),
        token_store=_vault_store(shared, company.code),
        on_close=shared.close if own else _keep_engine,
        company=company.code,
    )
    runtime.key_missing = lambda session: shared.vault.store(company.code).missing_key(session)
    if fenced is not None:
        runtime.fence = lambda: shared.lost_reason(fenced)
    return runtime


def _keep_engine() -> None:
    """A company runtime closes without closing the pool the other companies share."""
