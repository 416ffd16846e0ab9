"""Each company's Next Engine token pair in the database, encrypted at rest (fleet mode).

Any worker may serve any company, so the pair cannot live in one host's token file. Each row
of ``fleet_token`` holds one company's pair sealed with AES-GCM (the ``cryptography``
package, ``pip install 'nebridge[fleet]'``):

- **Key.** 32 random bytes, base64 on one line, from the systemd credential
  ``nebridge-vault-key`` (or the same name in ``credentials_dir``, see
  :mod:`hooks.credentials`: there it must be a regular file, not a symbolic link, of root or
  this user, closed to others — ``root:nebridge`` 0640 as the other credentials, or 0600).
  The key never enters the database.
- **Key id.** Each row names the key that sealed it (a digest of the key, not the key), so
  keys rotate: load the new key as current and the old one as ``previous``, run
  :meth:`TokenVault.rotate` (every row is sealed again with the current key), then drop the
  old key. Until a row is rotated, it is read with the previous key.
- **Nonce.** 12 fresh random bytes for every write; never reused with a key.
- **Associated data.** The company code: a row copied to another company does not decrypt.
- **Single flight.** Next Engine rotates the pair on use, so one request per company may be in
  flight across every worker and the CLI: :meth:`TokenVault.company_lock` is a PostgreSQL
  advisory lock per company (held in a transaction on its own connection for the call; the
  server ends it when its holder is paused, so a takeover never waits for a stopped worker),
  and :class:`VaultTokenStore` is a :class:`~daemon.nextengine.tokens.SharedTokenStore`, so
  :func:`~daemon.nextengine.tokens.company_lock` takes it exactly as it takes a token file's
  ``flock``.

Secrets never appear in ``repr``, logs or exception messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from daemon.fleet.leases import (
    LeaseRow,
    VaultKeyIds,
    forget_lease_read,
    note_lease_read,
    note_vault_keys,
    require_fleet_database,
)
from daemon.nextengine.tokens import TokenSet
from hooks.credentials import SecretUnreadable, read_credential

#: The systemd credential (or file in ``credentials_dir``) holding the current key.
KEY_CREDENTIAL = "nebridge-vault-key"
#: The key being rotated away from, while :meth:`TokenVault.rotate` has not finished.
PREVIOUS_KEY_CREDENTIAL = "nebridge-vault-key-previous"
KEY_BYTES = 32
NONCE_BYTES = 12
_AAD_PREFIX = b"nebridge fleet token pair\x00"
#: How long a refresh waits for another process's refresh of the same company (seconds).
DEFAULT_LOCK_WAIT_SECONDS = 120.0
#: A token lock whose holder has not touched it for this long is ended by the server (a paused
#: holder); shorter than the default lease, so a takeover is not held up by the old holder.
DEFAULT_LOCK_IDLE_SECONDS = 10.0
log = logging.getLogger(__name__)
GENERATE_KEY = "python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'"


class VaultError(Exception):
    """The vault cannot be used as asked; the message says why and what to do (no secret)."""


class VaultKeyMissing(VaultError):
    """A company's pair is sealed with a key this process was not given (a worker started
    before a key rotation's new key reached its host). Not a lost Next Engine link: signing in
    again would not help; the fix is the key on this host and a restart of this process."""

    def __init__(self, company: str, key_id: str, current: str) -> None:
        self.company = company
        self.key_id = key_id
        self.host = socket.gethostname()
        super().__init__(
            f"the token pair of company {company!r} is sealed with vault key {key_id}, which "
            f"this process (host {self.host}, pid {os.getpid()}) does not have (its current "
            f"key is {current}); the Next Engine link itself is fine, so do not connect again: "
            f"install key {key_id} on {self.host} (as the credential {KEY_CREDENTIAL} once the "
            f"rotation swapped the keys, else as {PREVIOUS_KEY_CREDENTIAL}) and restart this "
            "worker (`systemctl restart nebridge`); its Next Engine work waits meanwhile"
        )


def _aesgcm(secret: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise VaultError(
            "the token vault needs the `cryptography` package, which is not "
            "installed; install it with `pip install 'nebridge[fleet]'`"
        ) from None
    return AESGCM(secret)


@dataclass(frozen=True, slots=True, repr=False)
class VaultKey:
    """One AES-256 key and its id (a digest of it, safe to store and show)."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:
        return f"VaultKey({self.key_id})"

    __str__ = __repr__

    @classmethod
    def from_text(cls, value: str, source: str) -> VaultKey:
        """Parse base64 text of 32 bytes; ``source`` names where it came from, for errors."""
        try:
            secret = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            secret = b""
        if len(secret) != KEY_BYTES:
            raise VaultError(
                f"the vault key in {source} is not {KEY_BYTES} bytes in base64 on "
                f"one line; make a new one with `{GENERATE_KEY}`"
            )
        digest = hashlib.sha256(b"nebridge vault key id\x00" + secret).hexdigest()
        return cls(key_id=digest[:16], secret=secret)


@dataclass(frozen=True, slots=True)
class VaultKeys:
    """The key new writes use, and the keys older rows may still be sealed with."""

    current: VaultKey
    previous: tuple[VaultKey, ...] = ()

    def find(self, key_id: str) -> VaultKey | None:
        """The loaded key with ``key_id``, if any."""
        return next((k for k in (self.current, *self.previous) if k.key_id == key_id), None)

    def ids(self) -> VaultKeyIds:
        """The ids (never the keys): the one new writes use, and every one rows are read with."""
        return VaultKeyIds(
            self.current.key_id, tuple(k.key_id for k in (self.current, *self.previous))
        )


def load_keys(
    credentials_dir: Path | None = None, *, env: Mapping[str, str] | None = None
) -> VaultKeys:
    """The vault's keys: the credential ``nebridge-vault-key`` and, during a rotation,
    ``nebridge-vault-key-previous`` (systemd's copies, else the files in ``credentials_dir``)."""
    text_value = _read_key_credential(KEY_CREDENTIAL, credentials_dir, env)
    if text_value is None:
        raise VaultError(
            f"fleet mode has no vault key: give the service the credential {KEY_CREDENTIAL} "
            f"(`LoadCredential={KEY_CREDENTIAL}:/etc/nebridge/credentials/{KEY_CREDENTIAL}`"
            f" or that file in `credentials_dir`); make one with `{GENERATE_KEY}`"
        )
    current = VaultKey.from_text(text_value, f"the credential {KEY_CREDENTIAL}")
    old = _read_key_credential(PREVIOUS_KEY_CREDENTIAL, credentials_dir, env)
    if old is None:
        return VaultKeys(current)
    previous = VaultKey.from_text(old, f"the credential {PREVIOUS_KEY_CREDENTIAL}")
    return VaultKeys(current, () if previous.key_id == current.key_id else (previous,))


def _read_key_credential(
    name: str, credentials_dir: Path | None, env: Mapping[str, str] | None
) -> str | None:
    """A key credential's text; read from ``credentials_dir`` (outside systemd) the file must
    be a regular file of root or this user, closed to others (as the folder's other secrets)."""
    try:
        return read_credential(name, credentials_dir, env, checked=True)
    except SecretUnreadable as exc:
        raise VaultError(str(exc)) from None


def _aad(company: str) -> bytes:
    return _AAD_PREFIX + company.encode("utf-8")


class TokenVault:
    """The fleet's token pairs in ``fleet_token`` (PostgreSQL), sealed with ``keys``; refused
    (:class:`~daemon.fleet.leases.FleetUnavailable`) on SQLite or an unmigrated database."""

    def __init__(
        self,
        engine: Engine,
        keys: VaultKeys,
        *,
        lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
        lock_idle_seconds: float = DEFAULT_LOCK_IDLE_SECONDS,
    ) -> None:
        require_fleet_database(engine)
        self.engine = engine
        self.keys = keys
        self.lock_wait_seconds = lock_wait_seconds
        self.lock_idle_seconds = lock_idle_seconds
        note_vault_keys(keys.ids())
        self._schema_oid: int | None = None
        self._schema_guard = threading.Lock()
        #: ``{company: sealed row or None}``: the pairs this thread read right after taking
        #: their company's token lock, for the Next Engine call made under it.
        self._under_lock = threading.local()

    def __repr__(self) -> str:
        return f"TokenVault(key {self.keys.current.key_id})"

    # -- sealing ------------------------------------------------------------------------------

    def _seal(self, company: str, tokens: TokenSet) -> tuple[str, bytes, bytes]:
        plain = json.dumps(tokens.to_json(), ensure_ascii=False).encode("utf-8")
        nonce = os.urandom(NONCE_BYTES)
        key = self.keys.current
        return key.key_id, nonce, _aesgcm(key.secret).encrypt(nonce, plain, _aad(company))

    def _open(self, company: str, key_id: str, nonce: bytes, sealed: bytes) -> TokenSet:
        key = self.keys.find(key_id)
        if key is None:
            raise VaultKeyMissing(company, key_id, self.keys.current.key_id)
        cipher = _aesgcm(key.secret)  # says how to install cryptography if it is missing
        from cryptography.exceptions import InvalidTag

        try:
            plain = cipher.decrypt(nonce, sealed, _aad(company))
        except InvalidTag:
            raise VaultError(
                f"the token pair stored for company {company!r} does not decrypt with vault "
                f"key {key_id}: the row was altered or copied from another company; "
                "`nebridge connect` the company again"
            ) from None
        try:
            return TokenSet.from_json(json.loads(plain))
        except (ValueError, KeyError, TypeError):
            raise VaultError(
                f"the token pair stored for company {company!r} is not a token "
                "pair; `nebridge connect` the company again"
            ) from None

    # -- reading and writing ------------------------------------------------------------------

    def load(self, company: str) -> TokenSet | None:
        """The company's pair, or None if it was never connected. Under the company's token
        lock (:meth:`company_lock`) it is the pair read right after the lock was taken."""
        held = self._held()
        if company in held:
            sealed = held[company]
        else:
            with self.engine.connect() as connection:
                row = connection.execute(
                    text("SELECT key_id, nonce, sealed FROM fleet_token WHERE company = :company"),
                    {"company": company},
                ).first()
            sealed = None if row is None else (row.key_id, bytes(row.nonce), bytes(row.sealed))
        if sealed is None:
            return None
        return self._open(company, *sealed)

    def _held(self) -> dict[str, tuple[str, bytes, bytes] | None]:
        """The sealed pairs read under the token locks this thread holds, by company."""
        held: dict[str, tuple[str, bytes, bytes] | None] | None = getattr(
            self._under_lock, "pairs", None
        )
        if held is None:
            held = self._under_lock.pairs = {}
        return held

    def missing_key(self, company: str, session: Session | None = None) -> VaultKeyMissing | None:
        """Why the company's pair cannot be opened by this process for want of its key, or
        None (also when there is no pair): the id is read, nothing is decrypted. ``session``:
        a session of the caller's on this database to read it in (the gate's, with the link)."""
        query = text("SELECT key_id FROM fleet_token WHERE company = :company")
        if session is not None:
            key_id = session.execute(query, {"company": company}).scalar()
        else:
            with self.engine.connect() as connection:
                key_id = connection.execute(query, {"company": company}).scalar()
        if key_id is None or self.keys.find(key_id) is not None:
            return None
        return VaultKeyMissing(company, key_id, self.keys.current.key_id)

    def save(self, company: str, tokens: TokenSet) -> None:
        """Replace the company's pair (sealed with the current key and a new nonce)."""
        key_id, nonce, sealed = self._seal(company, tokens)
        with self.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO fleet_token (company, key_id, nonce, sealed, written_at) "
                    "VALUES (:company, :key_id, :nonce, :sealed, clock_timestamp()) "
                    "ON CONFLICT (company) DO UPDATE SET key_id = EXCLUDED.key_id, "
                    "nonce = EXCLUDED.nonce, sealed = EXCLUDED.sealed, "
                    "written_at = EXCLUDED.written_at, writes = fleet_token.writes + 1"
                ),
                {"company": company, "key_id": key_id, "nonce": nonce, "sealed": sealed},
            )
        held = self._held()
        if company in held:  # under the lock: a later load in it reads what is stored now
            held[company] = (key_id, nonce, sealed)

    def forget(self, company: str) -> bool:
        """Delete the company's pair (unlink); True if there was one."""
        with self.engine.begin() as connection:
            return bool(
                connection.execute(
                    text("DELETE FROM fleet_token WHERE company = :company"), {"company": company}
                ).rowcount
            )

    def key_use(self) -> dict[str, int]:
        """How many pairs each key id seals (0 left on old keys: the rotation is done)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT key_id, count(*) FROM fleet_token GROUP BY key_id")
            ).all()
        return {str(key_id): int(count) for key_id, count in rows}

    def rotate(self, progress: Callable[[str, int, int], None] | None = None) -> int:
        """Seal every pair not sealed with the current key again with it; how many.

        Each row is read and rewritten under its company's lock and a row lock, so a refresh
        running meanwhile is neither lost nor overwritten with an older pair.
        ``progress(company, done, total)`` is called after each company.
        """
        with self.engine.connect() as connection:
            companies = list(
                connection.execute(
                    text(
                        "SELECT company FROM fleet_token WHERE key_id <> :current ORDER BY company"
                    ),
                    {"current": self.keys.current.key_id},
                ).scalars()
            )
        done = 0
        for company in companies:
            with self.company_lock(company), self.engine.begin() as connection:
                row = connection.execute(
                    text(
                        "SELECT key_id, nonce, sealed FROM fleet_token WHERE company = :company "
                        "FOR UPDATE"
                    ),
                    {"company": company},
                ).first()
                if row is None or row.key_id == self.keys.current.key_id:
                    continue
                tokens = self._open(company, row.key_id, bytes(row.nonce), bytes(row.sealed))
                key_id, nonce, sealed = self._seal(company, tokens)
                connection.execute(
                    text(
                        "UPDATE fleet_token SET key_id = :key_id, nonce = :nonce, sealed = :sealed "
                        "WHERE company = :company"
                    ),
                    {"company": company, "key_id": key_id, "nonce": nonce, "sealed": sealed},
                )
                done += 1
            if progress is not None:
                progress(company, done, len(companies))
        return done

    # -- single flight ------------------------------------------------------------------------

    def schema_oid(self) -> int:
        """The oid of the schema the vault's table lives in (advisory locks are per database,
        so the schema keeps two installations in one database apart)."""
        with self._schema_guard:
            if self._schema_oid is None:
                with self.engine.connect() as connection:
                    self._schema_oid = int(
                        connection.execute(
                            text("SELECT oid FROM pg_namespace WHERE nspname = current_schema()")
                        ).scalar_one()
                    )
            return self._schema_oid

    @contextmanager
    def company_lock(self, company: str) -> Iterator[None]:
        """Hold the company's token lock across processes and hosts for the block.

        A PostgreSQL advisory lock taken inside a transaction on a connection of its own: it
        ends with that transaction, so a process that dies never leaves it behind. A live
        holder touches the transaction every ``lock_idle_seconds / 5`` (a thread), and the
        server ends a transaction idle for ``lock_idle_seconds``: a holder that is paused
        (SIGSTOP, a frozen VM) loses the lock instead of stopping the company's Next Engine
        work on the worker that took the company over. Waits up to ``lock_wait_seconds``.

        Two statements in all: the idle limit with the lock, then (a statement of its own,
        so read committed gives it a snapshot taken after the lock: it sees the pair the
        previous holder stored before it let go) the company's sealed pair and lease row.
        The block's :meth:`load` and the lease check of its Next Engine call
        (:func:`~daemon.fleet.leases.check_unlocked`) use them instead of asking again.
        """
        space, name = self.schema_oid() & 0x7FFFFFFF, f"nebridge vault {company}"
        idle_ms = str(max(int(self.lock_idle_seconds * 1000), 100))
        deadline = time.monotonic() + self.lock_wait_seconds
        with self.engine.connect() as plain:
            connection = plain.execution_options(isolation_level="READ COMMITTED")
            while True:
                if (
                    connection.execute(
                        text(
                            "SELECT set_config('idle_in_transaction_session_timeout', :ms, true), "
                            "pg_try_advisory_xact_lock(:space, hashtext(:name)) AS locked"
                        ),
                        {"ms": idle_ms, "space": space, "name": name},
                    )
                    .one()
                    .locked
                ):
                    break
                connection.rollback()
                if time.monotonic() >= deadline:
                    raise VaultError(
                        f"another process has held company {company!r}'s token lock for "
                        f"{self.lock_wait_seconds:.0f} s (a Next Engine call still running); "
                        "nothing was sent — try again, and see pg_locks/pg_stat_activity for "
                        "the holder"
                    )
                time.sleep(0.05)
            held = self._held()
            try:
                row = connection.execute(
                    text(
                        "SELECT t.key_id, t.nonce, t.sealed, l.company AS leased, l.holder, "
                        "l.epoch, l.expires_at > clock_timestamp() AS live "
                        "FROM (SELECT CAST(:company AS varchar) AS company) AS c "
                        "LEFT JOIN fleet_token AS t ON t.company = c.company "
                        "LEFT JOIN fleet_lease AS l ON l.company = c.company"
                    ),
                    {"company": company},
                ).one()
                held[company] = (
                    None
                    if row.key_id is None
                    else (row.key_id, bytes(row.nonce), bytes(row.sealed))
                )
                note_lease_read(
                    self.engine,
                    company,
                    None
                    if row.leased is None
                    else LeaseRow(row.holder, int(row.epoch), bool(row.live)),
                )
                beat = _KeepAlive(connection, self.lock_idle_seconds / 5)
            except BaseException:  # (a thread that cannot start too): nothing read stays
                held.pop(company, None)
                forget_lease_read(self.engine, company)
                with suppress(SQLAlchemyError):
                    connection.rollback()
                raise
            try:
                yield
            finally:
                held.pop(company, None)
                forget_lease_read(self.engine, company)
                lost = beat.stop()
                if lost is None:
                    try:
                        connection.commit()  # ends the transaction: the lock is released
                    except SQLAlchemyError as exc:
                        lost = _why(exc)
                if lost is not None:
                    with suppress(SQLAlchemyError):
                        connection.rollback()
                    log.warning(
                        "company %s: the token lock ended while this process held it (%s; "
                        "paused longer than %.0f s, or the database connection dropped); "
                        "another process may have called Next Engine meanwhile — if it "
                        "reports a refused token pair, the pair this call saved is the one "
                        "to keep",
                        company,
                        lost,
                        self.lock_idle_seconds,
                    )

    def store(self, company: str) -> VaultTokenStore:
        """The company's pair as a token store for the Next Engine client."""
        return VaultTokenStore(self, company)


def _why(exc: SQLAlchemyError) -> str:
    """The driver's error class (its text may name the server, never a secret of ours)."""
    return type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__


class _KeepAlive:
    """Touches a token lock's transaction every ``interval`` seconds from a thread, so the
    server's idle timeout ends it only when the whole process stops (see ``company_lock``)."""

    def __init__(self, connection: Connection, interval: float) -> None:
        self.connection = connection
        self.interval = interval
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vault-lock-keepalive", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.connection.execute(text("SELECT 1"))
            except SQLAlchemyError as exc:
                self.failure = _why(exc)
                return

    def stop(self) -> str | None:
        """Stop touching; why the transaction ended meanwhile, or None."""
        self._stop.set()
        self._thread.join()
        return self.failure


class VaultTokenStore:
    """One company's pair in the vault, as a :class:`~daemon.nextengine.tokens.SharedTokenStore`
    (so the client's per-company lock holds across processes, as with a token file)."""

    def __init__(self, vault: TokenVault, company: str) -> None:
        self.vault = vault
        self.company = company

    def __repr__(self) -> str:
        return f"VaultTokenStore({self.company!r})"

    @property
    def lock_key(self) -> str:
        """Equal for every store of this company in this database schema."""
        return f"vault:{self.vault.engine.url.render_as_string()}:{self.company}"

    def load(self) -> TokenSet | None:
        """The company's pair, or None."""
        return self.vault.load(self.company)

    def save(self, tokens: TokenSet) -> None:
        """Replace the company's pair."""
        self.vault.save(self.company, tokens)

    def missing_key(self, session: Session | None = None) -> str | None:
        """Why this process cannot open the company's pair for want of its key, or None
        (read in ``session`` if given, see :meth:`TokenVault.missing_key`)."""
        missing = self.vault.missing_key(self.company, session)
        return None if missing is None else str(missing)

    def process_lock(self) -> AbstractContextManager[None]:
        """The company's advisory lock (every worker, host and CLI)."""
        return self.vault.company_lock(self.company)
