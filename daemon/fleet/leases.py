"""Per-company leases on PostgreSQL: each company is served by exactly one worker at a time.

Every worker keeps a heartbeat row (``fleet_worker``) and holds some companies' leases
(``fleet_lease``: holder, fencing epoch, ``expires_at``). All times come from the database's
clock (``clock_timestamp()``), never the workers' own, so skewed hosts agree on who holds what.

- **Fair share.** With W live workers (heartbeat not expired) and C companies, a worker holds
  at most ⌈C/W⌉: it releases the surplus when a worker joins and takes free or expired leases
  up to its share (``SELECT … FOR UPDATE SKIP LOCKED``: workers never wait on each other).
- **Renewal.** :class:`LeaseKeeper` renews its leases and heartbeat every third of the lease
  time; a worker that stops releases its leases at once, one that dies leaves them to expire.
- **Takeover.** Taking a lease, free or expired, increases its epoch. The epoch is the fencing
  token: :func:`fence` — called inside every transaction that changes inbox, outbox or link
  state, and (through :meth:`LeaseKeeper.lost_reason`) before every Next Engine call — refuses
  once the lease expired or another worker took it. It locks the row ``FOR KEY SHARE`` until
  the transaction ends, and a takeover needs ``FOR UPDATE``: a fenced transaction commits
  before a takeover or not at all. A worker paused past its lease (SIGSTOP, a long GC, a
  network partition) therefore commits nothing for a company it lost when it resumes.
- **Stuck transactions.** :func:`fleet_engine` sets ``idle_in_transaction_session_timeout`` to
  the lease time, so a worker paused inside a fenced transaction cannot hold its company's row
  lock (and so the company) forever: the server ends that session.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import OperationalError

from daemon.store.engine import (
    DatabaseUnavailable,
    check_migrated,
    database_health,
    describe_database,
    make_engine,
)

log = logging.getLogger(__name__)

#: Seconds a lease (and a heartbeat) lasts unless renewed.
DEFAULT_LEASE_SECONDS = 20.0
#: Renewals per lease time: two may fail before anything expires.
RENEWALS_PER_LEASE = 3
#: Heartbeat rows of workers gone longer than this are deleted (seconds).
FORGET_WORKERS_AFTER = 3600.0


class FleetUnavailable(Exception):
    """Fleet mode cannot run on this database; the message says why and what to do."""


class LeaseLost(OperationalError):
    """This worker no longer holds ``company``'s lease: nothing may be committed or sent.

    An :class:`~sqlalchemy.exc.OperationalError`, as :class:`DatabaseUnavailable` is: the
    engine treats it as it treats a database that went away — no item or file is blamed
    (an intake never rejects the WMS file whose commit it refused), the work stops, and the
    worker that holds the lease now does it.
    """

    def __init__(self, company: str, epoch: int, reason: str, *, final: bool = True) -> None:
        #: False while the lease only ran out unrenewed: this worker may still renew it.
        self.final = final
        self.message = (
            f"company {company!r}: this worker's lease (epoch {epoch}) is no longer valid: "
            f"{reason}; nothing was committed or sent for it — the worker that holds the "
            "lease now does the work (see `fleet_lease`)"
        )
        super().__init__(None, None, ConnectionError(self.message))
        self.company, self.epoch, self.reason = company, epoch, reason

    def __str__(self) -> str:
        return self.message

    def warn(self, logger: logging.Logger) -> None:
        """Log this as the expected event it is: one WARNING line (no traceback) per company
        and lease in this process, however many of its jobs find the lease gone and whether
        the keeper found it first (one more if a lease that had run out is then taken over).

        For a job runner's ``except LeaseLost as exc: exc.warn(log)`` — a worker resumed
        after a pause past its lease, or cut off from the database, meets it in every job.
        """
        warn_once(logger, self.company, self.epoch, self.final, self.message)


def warn_once(logger: logging.Logger, company: str, epoch: int, final: bool, message: str) -> None:
    """Log ``message`` as a WARNING unless this loss of ``company``'s lease at ``epoch`` was
    logged already in this process — by a job's :meth:`LeaseLost.warn` or by the keeper that
    found it gone: an operator reads one line per company and loss, whoever saw it first."""
    with _WARNED_GUARD:
        if (company, epoch, final) in _WARNED:
            return
        _WARNED.add((company, epoch, final))
    logger.warning("%s", message)


#: (company, epoch, final) of every LeaseLost already logged by :meth:`LeaseLost.warn`.
_WARNED: set[tuple[str, int, bool]] = set()
_WARNED_GUARD = threading.Lock()


@dataclass(frozen=True, slots=True)
class Lease:
    """A company's lease as one worker took it: the epoch fences everything it does."""

    company: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Balance:
    """What one :meth:`LeaseKeeper.tick` did, and the state it left."""

    acquired: tuple[Lease, ...]
    lost: tuple[str, ...]
    released: tuple[str, ...]
    held: tuple[str, ...]
    workers: int
    share: int


def fair_share(companies: int, workers: int) -> int:
    """The most companies one of ``workers`` live workers holds: ⌈companies / workers⌉."""
    return math.ceil(companies / max(workers, 1))


def require_fleet_database(engine: Engine) -> None:
    """Refuse (:class:`FleetUnavailable`) unless ``engine`` is a PostgreSQL database at this
    nebridge's schema version with the fleet tables."""
    if engine.dialect.name != "postgresql":
        raise FleetUnavailable(
            f"fleet mode (`companies_dir` in daemon.yaml) needs PostgreSQL, and "
            f"`database_url` is the {describe_database(engine.url)}: point `database_url` at "
            "a PostgreSQL database (postgresql+psycopg://user@host/db, `pip install "
            "'nebridge[fleet]'`) and run `nebridge db upgrade`, or remove `companies_dir` "
            "to run one company on SQLite"
        )
    try:
        check_migrated(engine)
    except Exception as exc:  # DatabaseNotMigrated, or the server's own refusal
        raise FleetUnavailable(f"fleet mode cannot start: {exc}") from None
    with engine.connect() as conn:
        found = conn.execute(text("SELECT to_regclass('fleet_lease')")).scalar()
    if found is None:
        raise FleetUnavailable(
            f"the {describe_database(engine.url)} has no fleet tables although it is at the "
            "latest migration (it was migrated on SQLite's path?); run `nebridge db upgrade` "
            "against PostgreSQL"
        )


def fleet_engine(
    url: str,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    pool_size: int = 5,
    max_overflow: int = 10,
) -> Engine:
    """An engine for a fleet worker: sessions idle inside a transaction longer than the lease
    time are ended by the server, so a paused worker cannot keep a company's row lock."""
    engine = make_engine(url, create=False, pool_size=pool_size, max_overflow=max_overflow)
    timeout_ms = str(max(int(lease_seconds * 1000), 1000))

    @event.listens_for(engine, "connect")
    def _bound_idle_transactions(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, false)", (timeout_ms,)
            )
        dbapi_connection.commit()

    return engine


def fence(connection: Connection, company: str, epoch: int, *, lock: bool = True) -> None:
    """Raise :class:`LeaseLost` unless the lease of ``company`` taken at ``epoch`` is still
    held and unexpired; call it in the transaction about to commit the company's changes.

    The row stays locked ``FOR KEY SHARE`` until that transaction ends, so no other worker
    takes the company over before it commits. ``lock=False`` only checks (before a Next
    Engine call, where there is nothing to commit): no row lock, so no write and no fsync.
    """
    row = connection.execute(
        text(
            "SELECT holder, epoch, expires_at > clock_timestamp() AS live FROM fleet_lease "
            f"WHERE company = :company{' FOR KEY SHARE' if lock else ''}"
        ),
        {"company": company},
    ).first()
    check_lease(
        None if row is None else LeaseRow(row.holder, int(row.epoch), bool(row.live)),
        company,
        epoch,
    )


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A company's ``fleet_lease`` row as read at one moment (``live``: unexpired then, by the
    database's clock)."""

    holder: str | None
    epoch: int
    live: bool


def check_lease(row: LeaseRow | None, company: str, epoch: int) -> None:
    """Raise :class:`LeaseLost` unless ``row`` (None: the company has no lease row) shows the
    lease of ``company`` taken at ``epoch`` still held and unexpired."""
    if row is None:
        raise LeaseLost(company, epoch, "the company has no lease row (removed from the fleet)")
    if row.epoch != epoch:
        raise LeaseLost(company, epoch, f"it was taken over (now epoch {row.epoch})")
    if row.holder is None:
        raise LeaseLost(company, epoch, "it was released")
    if not row.live:
        raise LeaseLost(
            company,
            epoch,
            "it expired before it was renewed (this worker was "
            "paused or cut off from the database)",
            final=False,
        )


#: Lease rows read under a company's token lock by this thread (see :func:`note_lease_read`).
_READ_UNDER_TOKEN_LOCK = threading.local()


def _lease_reads() -> dict[tuple[str, str], LeaseRow | None]:
    reads: dict[tuple[str, str], LeaseRow | None] | None = getattr(
        _READ_UNDER_TOKEN_LOCK, "rows", None
    )
    if reads is None:
        reads = _READ_UNDER_TOKEN_LOCK.rows = {}
    return reads


def _lease_key(engine: Engine, company: str) -> tuple[str, str]:
    """Rows read through engines of one URL are rows of one ``fleet_lease`` table."""
    return (engine.url.render_as_string(), company)


def note_lease_read(engine: Engine, company: str, row: LeaseRow | None) -> None:
    """Hand the lease row of ``company`` (None: it has none), read through ``engine`` in the
    statement right after this thread took the company's token lock
    (:meth:`~daemon.fleet.vault.TokenVault.company_lock`), to the lease check of the Next
    Engine call made under that lock: the check then costs no round trip of its own. Used
    once (by :func:`check_unlocked`); :func:`forget_lease_read` drops it when the lock ends."""
    _lease_reads()[_lease_key(engine, company)] = row


def forget_lease_read(engine: Engine, company: str) -> None:
    """Drop the lease row :func:`note_lease_read` handed over, if it was not used."""
    _lease_reads().pop(_lease_key(engine, company), None)


def check_unlocked(engine: Engine, company: str, epoch: int) -> None:
    """:func:`fence` without a row lock, before a Next Engine call (nothing to commit): with
    the lease row this thread read right after it took the company's token lock, while it
    holds that lock and the row is unused, else with the row read now. Raises
    :class:`LeaseLost`."""
    reads, key = _lease_reads(), _lease_key(engine, company)
    if key in reads:
        check_lease(reads.pop(key), company, epoch)
        return
    with engine.connect() as connection:
        fence(connection, company, epoch, lock=False)


@dataclass(frozen=True, slots=True)
class CompanyLease:
    """One company's lease as the database shows it (for ``companies list``, ``status``)."""

    company: str
    holder: str | None
    epoch: int
    expires_in_seconds: float | None


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One worker's heartbeat as the database shows it."""

    worker_id: str
    host: str
    pid: int
    live: bool
    holds: int
    #: The vault key it seals with, and every key it can read (None, (): it loaded none).
    vault_key_id: str | None = None
    vault_key_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VaultKeyIds:
    """The ids of the vault keys a process has loaded: the one it seals with, all it reads."""

    current: str
    readable: tuple[str, ...]


_loaded_keys: VaultKeyIds | None = None


def note_vault_keys(keys: VaultKeyIds) -> None:
    """Record the vault keys this process has loaded (a :class:`TokenVault` does, when made);
    every heartbeat of its workers names them, for ``companies rotate-key``."""
    global _loaded_keys
    _loaded_keys = keys


def loaded_vault_keys() -> VaultKeyIds | None:
    """The vault keys this process has loaded, or None."""
    return _loaded_keys


def overview(engine: Engine) -> tuple[list[CompanyLease], list[WorkerState]]:
    """Every company's lease (holder None when free or expired) and every known worker, by
    the database's clock; read-only."""
    with engine.connect() as connection:
        leases = [
            CompanyLease(
                row.company,
                row.holder if row.live else None,
                int(row.epoch),
                float(row.left) if row.live else None,
            )
            for row in connection.execute(
                text(
                    "SELECT company, holder, epoch, expires_at > clock_timestamp() AS live, "
                    "extract(epoch FROM expires_at - clock_timestamp()) AS left "
                    "FROM fleet_lease ORDER BY company"
                )
            )
        ]
        workers = [
            WorkerState(
                row.worker_id,
                row.host,
                int(row.pid),
                bool(row.live),
                int(row.holds),
                row.vault_key_id,
                tuple(row.vault_key_ids or ()),
            )
            for row in connection.execute(
                text(
                    "SELECT w.worker_id, w.host, w.pid, w.expires_at > clock_timestamp() "
                    "AS live, w.vault_key_id, w.vault_key_ids, (SELECT count(*) FROM "
                    "fleet_lease l WHERE l.holder = w.worker_id AND l.expires_at > "
                    "clock_timestamp()) AS holds "
                    "FROM fleet_worker w ORDER BY w.worker_id"
                )
            )
        ]
    return leases, workers


def default_worker_id() -> str:
    """``host:pid:random`` — unique per process start, readable in ``fleet_worker``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:200]


def log_round_failure(engine: Engine, exc: Exception, message: str) -> None:
    """Log a failed round of the fleet's every-few-seconds work: a database outage through
    ``engine``'s :class:`~daemon.store.engine.DatabaseHealth`, as the single-company daemon
    does (one ERROR, "still unavailable" every 5 minutes, one line when it is back), anything
    else at ERROR with ``message`` (its ``%s``: the error's first line)."""
    health = database_health(engine)
    outage = isinstance(exc, OperationalError) and health.down_since is not None
    if isinstance(exc, DatabaseUnavailable) or outage:
        health.available()
        return
    log.error(message, (str(exc).splitlines() or [type(exc).__name__])[0])


class LeaseKeeper:
    """One worker's leases: heartbeat, fair share, renewal, takeover and release.

    ``before_release(company)`` runs before a held lease is given up (rebalancing, a company
    removed, stop) and must return only when the worker's work for it has stopped (the other
    leases are renewed meanwhile, between two such calls);
    ``on_lost(company, reason)`` runs when a renewal finds the lease taken over.
    ``vault_keys()`` names the vault keys the worker has loaded, in every heartbeat.
    """

    def __init__(
        self,
        engine: Engine,
        companies: Iterable[str],
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        worker_id: str | None = None,
        before_release: Callable[[str], None] = lambda company: None,
        on_lost: Callable[[str, str], None] = lambda company, reason: None,
        vault_keys: Callable[[], VaultKeyIds | None] = loaded_vault_keys,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be greater than 0")
        require_fleet_database(engine)
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id or default_worker_id()
        self.before_release = before_release
        self.on_lost = on_lost
        self.vault_keys = vault_keys
        self._held: dict[str, int] = {}
        self._companies: frozenset[str] = frozenset()
        self._guard = threading.Lock()
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed_at = time.monotonic()
        #: Renewals done and leases found taken over since it started (the worker's metrics).
        self.renewals = 0
        self.losses = 0
        self.set_companies(companies)

    def __repr__(self) -> str:
        return f"LeaseKeeper({self.worker_id!r}, {len(self._held)}/{len(self._companies)})"

    # -- what is held -------------------------------------------------------------------------

    def held(self) -> dict[str, int]:
        """The companies this worker believes it holds, with their epochs."""
        with self._guard:
            return dict(self._held)

    def lease(self, company: str) -> Lease | None:
        """The lease of ``company`` this worker holds, if any."""
        with self._guard:
            epoch = self._held.get(company)
        return None if epoch is None else Lease(company, epoch)

    def fence(self, connection: Connection, company: str, *, lock: bool = True) -> None:
        """:func:`fence` with this worker's epoch (:class:`LeaseLost` if it holds none)."""
        lease = self.lease(company)
        if lease is None:
            raise LeaseLost(company, 0, "this worker does not hold it")
        fence(connection, company, lease.epoch, lock=lock)

    def lost_reason(self, company: str) -> str | None:
        """Why this worker may not act for ``company`` now, or None (checked in the database:
        the fence of Next Engine calls, as ``FencedTokenStore(…, fence=…)`` expects)."""
        lease = self.lease(company)
        try:
            if lease is None:
                raise LeaseLost(company, 0, "this worker does not hold it")
            check_unlocked(self.engine, company, lease.epoch)
        except LeaseLost as exc:
            return str(exc)
        return None

    # -- the companies of the fleet -----------------------------------------------------------

    def set_companies(self, companies: Iterable[str]) -> None:
        """The companies this worker may serve (after a reload); new ones get a lease row,
        leases of removed ones are released at the next tick."""
        codes = frozenset(companies)
        if codes:
            with self.engine.begin() as connection:
                connection.execute(
                    text(
                        "INSERT INTO fleet_lease (company) SELECT unnest(CAST(:codes AS text[])) "
                        "ON CONFLICT (company) DO NOTHING"
                    ),
                    {"codes": sorted(codes)},
                )
        with self._guard:
            self._companies = codes

    # -- one round ----------------------------------------------------------------------------

    def tick(self) -> Balance:
        """Heartbeat, renew, then release the surplus over the fair share or take free and
        expired leases up to it. Safe to call from several threads (one runs at a time)."""
        with self._tick_lock:
            with self._guard:
                companies, believed = self._companies, dict(self._held)
            workers = self._heartbeat()
            renewed = self._renew()
            lost = tuple(sorted(c for c in believed if renewed.get(c) != believed[c]))
            self.losses += len(lost)
            for company in lost:
                reason = (
                    "taken over by another worker"
                    if company not in renewed
                    else "taken again at another epoch"
                )
                warn_once(
                    log,
                    company,
                    believed[company],
                    True,
                    f"company {company}: lease lost ({reason}); its work stops here — the "
                    "worker that holds it now does the work",
                )
                self.on_lost(company, reason)
                self.keep_renewed()
            kept = {c: e for c, e in renewed.items() if c in believed}
            share = fair_share(len(companies), workers)
            surplus = [c for c in kept if c not in companies]
            extra = len(kept) - len(surplus) - share
            if extra > 0:
                surplus += sorted((c for c in kept if c in companies), reverse=True)[:extra]
            surplus += [c for c in renewed if c not in believed]  # not ours to keep
            released = self._release(surplus)
            for company in released:
                kept.pop(company, None)
            acquired: tuple[Lease, ...] = ()
            room = share - len(kept)
            if room > 0 and companies:
                acquired = self._acquire(companies, room)
                kept.update((lease.company, lease.epoch) for lease in acquired)
            with self._guard:
                self._held = kept
            return Balance(acquired, lost, tuple(released), tuple(sorted(kept)), workers, share)

    def _heartbeat(self) -> int:
        """Renew this worker's heartbeat (with the vault keys it has loaded); the number of
        live workers (this one included)."""
        keys = self.vault_keys()
        with self.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO fleet_worker (worker_id, host, pid, started_at, heartbeat_at, "
                    "expires_at, vault_key_id, vault_key_ids) VALUES (:worker, :host, :pid, "
                    "clock_timestamp(), clock_timestamp(), "
                    "clock_timestamp() + make_interval(secs => :lease), :key, "
                    "CAST(:keys AS varchar[])) "
                    "ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, "
                    "expires_at = EXCLUDED.expires_at, vault_key_id = EXCLUDED.vault_key_id, "
                    "vault_key_ids = EXCLUDED.vault_key_ids"
                ),
                {
                    "worker": self.worker_id,
                    "host": socket.gethostname()[:255],
                    "pid": os.getpid(),
                    "lease": self.lease_seconds,
                    "key": keys.current if keys else None,
                    "keys": list(keys.readable) if keys else None,
                },
            )
            connection.execute(
                text(
                    "DELETE FROM fleet_worker WHERE expires_at < clock_timestamp() - "
                    "make_interval(secs => :forget)"
                ),
                {"forget": FORGET_WORKERS_AFTER},
            )
            return int(
                connection.execute(
                    text("SELECT count(*) FROM fleet_worker WHERE expires_at > clock_timestamp()")
                ).scalar_one()
            )

    def _renew(self) -> dict[str, int]:
        """Extend every lease this worker holds in the database; ``{company: epoch}``."""
        with self.engine.begin() as connection:
            rows = connection.execute(
                text(
                    "UPDATE fleet_lease SET expires_at = clock_timestamp() + "
                    "make_interval(secs => :lease) WHERE holder = :worker "
                    "RETURNING company, epoch"
                ),
                {"worker": self.worker_id, "lease": self.lease_seconds},
            ).all()
        self._renewed_at = time.monotonic()
        with self._guard:  # the round thread and the renewal thread both renew
            self.renewals += 1
        return {str(row.company): int(row.epoch) for row in rows}

    def keep_renewed(self) -> None:
        """Renew the leases and the heartbeat again if a round is due: a slow stop of one
        company's work (``on_lost``, ``before_release``, a drain) or a slow start of many must
        not let the leases this worker keeps run out, nor show it as dead meanwhile."""
        if time.monotonic() - self._renewed_at > self.lease_seconds / RENEWALS_PER_LEASE:
            self._beat()
            self._renew()

    def _beat(self) -> None:
        """Extend this worker's heartbeat row (between rounds: no insert, no count)."""
        with self.engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE fleet_worker SET heartbeat_at = clock_timestamp(), "
                    "expires_at = clock_timestamp() + make_interval(secs => :lease) "
                    "WHERE worker_id = :worker"
                ),
                {"worker": self.worker_id, "lease": self.lease_seconds},
            )

    def _release(self, companies: Iterable[str]) -> list[str]:
        """Give up ``companies`` (each after ``before_release``); the ones released."""
        codes = list(companies)
        if not codes:
            return []
        for company in codes:
            self.before_release(company)
            with self._guard:
                self._held.pop(company, None)
            self.keep_renewed()
        with self.engine.begin() as connection:
            released = sorted(
                connection.execute(
                    text(
                        "UPDATE fleet_lease SET holder = NULL, expires_at = NULL "
                        "WHERE company = ANY(CAST(:codes AS text[])) AND holder = :worker "
                        "RETURNING company"
                    ),
                    {"codes": codes, "worker": self.worker_id},
                ).scalars()
            )
        for company in released:
            log.info("company %s: lease released", company)
        return released

    def _acquire(self, companies: frozenset[str], room: int) -> tuple[Lease, ...]:
        """Take up to ``room`` free or expired leases among ``companies`` (epoch + 1)."""
        with self.engine.begin() as connection:
            rows = connection.execute(
                text(
                    "WITH free AS (SELECT company, holder FROM fleet_lease "
                    "WHERE company = ANY(CAST(:codes AS text[])) AND (holder IS NULL "
                    "OR expires_at IS NULL OR expires_at < clock_timestamp()) "
                    "ORDER BY holder IS NOT NULL, company LIMIT :room FOR UPDATE SKIP LOCKED) "
                    "UPDATE fleet_lease AS lease SET holder = :worker, epoch = lease.epoch + 1, "
                    "acquired_at = clock_timestamp(), "
                    "expires_at = clock_timestamp() + make_interval(secs => :lease) "
                    "FROM free WHERE lease.company = free.company "
                    "RETURNING lease.company, lease.epoch, free.holder AS previous"
                ),
                {
                    "codes": sorted(companies),
                    "room": room,
                    "worker": self.worker_id,
                    "lease": self.lease_seconds,
                },
            ).all()
        for row in rows:
            if row.previous:
                log.warning(
                    "company %s: took over the expired lease of %s (epoch %d)",
                    row.company,
                    row.previous,
                    row.epoch,
                )
            else:
                log.info("company %s: lease taken (epoch %d)", row.company, row.epoch)
        return tuple(Lease(str(row.company), int(row.epoch)) for row in rows)

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        """Tick now, then every third of the lease time on a background thread."""
        self.tick()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-leases", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / RENEWALS_PER_LEASE):
            try:
                self.tick()
            except Exception as exc:  # the database away: leases run out, fences refuse
                log_round_failure(
                    self.engine,
                    exc,
                    "fleet leases not renewed (%s); work for this worker's companies "
                    "is refused once their leases expire, and resumes when the "
                    "database answers",
                )

    def stop(self) -> None:
        """Stop renewing and release every lease and the heartbeat (others take over at once)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._tick_lock:
            self._release(sorted(self.held()))
            with self.engine.begin() as connection:
                connection.execute(
                    text("DELETE FROM fleet_worker WHERE worker_id = :worker"),
                    {"worker": self.worker_id},
                )


def forget_lease(connection: Connection, company: str) -> tuple[bool, str | None]:
    """Delete the lease row of ``company`` (its file is gone: ``companies forget``) in the
    caller's transaction, unless a worker holds it unexpired. Returns (a row was deleted,
    the worker holding it — then nothing is deleted). The row is locked first, so a worker
    taking it at that moment skips it (``SKIP LOCKED``)."""
    row = connection.execute(
        text(
            "SELECT holder, expires_at > clock_timestamp() AS live FROM fleet_lease "
            "WHERE company = :company FOR UPDATE"
        ),
        {"company": company},
    ).first()
    if row is None:
        return False, None
    if row.holder is not None and row.live:
        return False, str(row.holder)
    connection.execute(
        text("DELETE FROM fleet_lease WHERE company = :company"), {"company": company}
    )
    return True, None
