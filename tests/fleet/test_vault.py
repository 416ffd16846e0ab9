"""The token vault on the CI PostgreSQL: sealed rows, refused keys and rows, rotation, and one
refresh per company at a time across processes."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from daemon.fleet.vault import (
    KEY_CREDENTIAL,
    PREVIOUS_KEY_CREDENTIAL,
    TokenVault,
    VaultError,
    VaultKeys,
    load_keys,
)
from daemon.nextengine.tokens import SharedTokenStore, TokenSet
from daemon.store.engine import make_engine

ROOT = Path(__file__).resolve().parents[2]
PAIR = TokenSet(
    access_token="access-SECRET-1",
    refresh_token="refresh-SECRET-1",
    access_token_end_date=datetime(2026, 12, 4, 9, 0, tzinfo=UTC),
    company_id="NE123",
    company_name="Acme",
)


def write_key(path: Path, mode: int = 0o600) -> Path:
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(mode)
    return path


def credentials(folder: Path, current: str | None = None, previous: str | None = None) -> Path:
    """A credentials folder with a new vault key, or the key text ``current`` (and, during a
    rotation, ``previous``), as `credentials_dir` holds them."""
    folder.mkdir(exist_ok=True)
    key = write_key(folder / KEY_CREDENTIAL)
    if current is not None:
        key.write_text(current)
    if previous is not None:
        (folder / PREVIOUS_KEY_CREDENTIAL).write_text(previous)
        (folder / PREVIOUS_KEY_CREDENTIAL).chmod(0o600)
    return folder


@pytest.fixture
def engine(fleet_url: str) -> Iterator[Engine]:
    engine = make_engine(fleet_url)
    yield engine
    engine.dispose()


def stored(engine: Engine, company: str) -> tuple[str, bytes, bytes]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT key_id, nonce, sealed FROM fleet_token WHERE company = :c"), {"c": company}
        ).one()
    return row[0], bytes(row[1]), bytes(row[2])


def test_round_trip_seals_the_pair_with_a_new_nonce_each_write(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = load_keys(credentials(tmp_path / "creds"), env={})
    vault = TokenVault(engine, keys)
    assert vault.load("acme") is None
    vault.save("acme", PAIR)
    assert vault.load("acme") == PAIR
    key_id, first_nonce, sealed = stored(engine, "acme")
    assert key_id == keys.current.key_id
    assert b"SECRET" not in sealed and b"NE123" not in sealed  # encrypted, not encoded
    vault.save("acme", PAIR)
    assert stored(engine, "acme")[1] != first_nonce
    shown = " ".join([repr(vault), repr(keys), repr(vault.store("acme")), caplog.text])
    assert "SECRET" not in shown and base64.b64encode(keys.current.secret).decode() not in shown
    assert isinstance(vault.store("acme"), SharedTokenStore)
    assert vault.forget("acme") and vault.load("acme") is None


def test_a_row_copied_to_another_company_a_wrong_key_or_a_tampered_row_is_refused(
    engine: Engine, tmp_path: Path
) -> None:
    vault = TokenVault(engine, load_keys(credentials(tmp_path / "creds"), env={}))
    vault.save("acme", PAIR)
    with engine.begin() as conn:  # copied to another company: the company is the AAD
        conn.execute(
            text(
                "INSERT INTO fleet_token (company, key_id, nonce, sealed, written_at) "
                "SELECT 'beta', key_id, nonce, sealed, written_at FROM fleet_token "
                "WHERE company = 'acme'"
            )
        )
    with pytest.raises(VaultError, match=r"'beta' does not decrypt.*connect") as copied:
        vault.load("beta")

    other = TokenVault(engine, load_keys(credentials(tmp_path / "other"), env={}))
    with pytest.raises(VaultError, match=r"sealed with vault key .* does not have") as unknown:
        other.load("acme")
    with engine.begin() as conn:  # the other key, under the id of the right one
        conn.execute(
            text("UPDATE fleet_token SET key_id = :k WHERE company = 'acme'"),
            {"k": other.keys.current.key_id},
        )
    with pytest.raises(VaultError, match="does not decrypt"):
        other.load("acme")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE fleet_token SET key_id = :k, "
                "sealed = set_byte(sealed, 0, (get_byte(sealed, 0) + 1) % 256) "
                "WHERE company = 'acme'"
            ),
            {"k": vault.keys.current.key_id},
        )
    with pytest.raises(VaultError, match="altered"):
        vault.load("acme")
    for exc in (copied.value, unknown.value):
        assert "SECRET" not in str(exc)


def test_rotation_reseals_every_pair_with_the_new_key(engine: Engine, tmp_path: Path) -> None:
    old_dir = credentials(tmp_path / "old")
    old_key = (old_dir / KEY_CREDENTIAL).read_text()
    new_dir = credentials(tmp_path / "new")
    new_key = (new_dir / KEY_CREDENTIAL).read_text()
    old = TokenVault(engine, load_keys(old_dir, env={}))
    for company in ("acme", "beta", "gamma"):
        old.save(company, PAIR)
    swapped = credentials(tmp_path / "swapped", current=new_key, previous=old_key)
    during = TokenVault(engine, load_keys(swapped, env={}))
    assert during.load("beta") == PAIR  # old rows read with the previous key meanwhile
    during.save("gamma", PAIR)  # and new writes use the new key
    assert during.key_use() == {old.keys.current.key_id: 2, during.keys.current.key_id: 1}
    assert during.rotate() == 2
    assert during.key_use() == {during.keys.current.key_id: 3}
    after = TokenVault(engine, load_keys(new_dir, env={}))  # the old key dropped
    assert [after.load(c) for c in ("acme", "beta", "gamma")] == [PAIR] * 3
    with pytest.raises(VaultError, match="does not have"):
        old.load("acme")


def test_key_credentials_are_checked(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    with pytest.raises(VaultError, match=f"no vault key.*{KEY_CREDENTIAL}"):
        load_keys(creds, env={})
    write_key(creds / KEY_CREDENTIAL, 0o640)  # credentials: group-readable is the norm
    write_key(creds / PREVIOUS_KEY_CREDENTIAL, 0o640)
    keys = load_keys(creds, env={})
    assert isinstance(keys, VaultKeys) and len(keys.previous) == 1
    systemd = tmp_path / "systemd"
    systemd.mkdir()
    write_key(systemd / KEY_CREDENTIAL)
    assert load_keys(creds, env={"CREDENTIALS_DIRECTORY": str(systemd)}).current != keys.current

    loose = tmp_path / "loose"
    loose.mkdir()
    write_key(loose / KEY_CREDENTIAL, 0o644)
    with pytest.raises(VaultError, match=r"open to other users.*chmod 0640"):
        load_keys(loose, env={})
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / KEY_CREDENTIAL).symlink_to(write_key(tmp_path / "real.key"))
    with pytest.raises(VaultError, match="symbolic link"):
        load_keys(linked, env={})
    short = credentials(tmp_path / "short", current=base64.b64encode(b"too short").decode())
    with pytest.raises(VaultError, match="not 32 bytes"):
        load_keys(short, env={})
    previous = credentials(tmp_path / "previous")
    write_key(previous / PREVIOUS_KEY_CREDENTIAL, 0o604)
    with pytest.raises(VaultError, match=f"{PREVIOUS_KEY_CREDENTIAL}.*open to other users"):
        load_keys(previous, env={})


def test_one_refresh_per_company_at_a_time_across_processes(
    fleet_url: str, engine: Engine, tmp_path: Path
) -> None:
    creds = credentials(tmp_path / "creds")
    vault = TokenVault(engine, load_keys(creds, env={}))
    vault.save("acme", TokenSet(access_token="0", refresh_token="r"))
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fleet.vault_refresher",
                fleet_url,
                str(creds),
                "acme",
                "4",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    spans = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        spans += [json.loads(line) for line in out.splitlines()]
    pair = vault.load("acme")
    assert pair is not None and pair.access_token == "8"  # no refresh lost another's
    spans.sort()
    assert len(spans) == 8
    assert all(earlier[1] <= later[0] for earlier, later in pairwise(spans))
