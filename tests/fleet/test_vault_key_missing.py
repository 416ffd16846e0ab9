"""A worker lacking the vault key a company's pair is sealed with (a key rotation that has not
reached its host) holds that company's Next Engine work back cleanly: a ``vault_key_missing``
attention item naming the key, the host and the fix, one warning, no crashed stage and no
traceback, never ``ne_link_lost``; the item closes once a process with the key serves it
(review fleet F7). Real company schema and vault on the CI PostgreSQL."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon import attention
from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.runtime import FleetDatabase, company_runtime, upgrade_company
from daemon.fleet.vault import VaultKeyMissing, load_keys
from daemon.nextengine.tokens import TokenSet
from daemon.pipeline import Stage
from daemon.store.engine import Bind, write_session
from daemon.store.models import NeLink
from tests.conftest import ConfigFactory
from tests.fleet.test_runtime import company_file
from tests.fleet.test_vault import credentials

PAIR = TokenSet(
    access_token="access-SECRET-1",
    refresh_token="refresh-SECRET-1",
    access_token_end_date=datetime.now(UTC) + timedelta(hours=20),
    refresh_token_end_date=datetime.now(UTC) + timedelta(days=3),
    company_id="NE123",
    company_name="Acme",
)


def open_kinds(db: Bind) -> set[str]:
    return {item.kind for item in attention.collect(db).items}


def test_a_worker_without_the_key_waits_naming_key_and_host_and_clears_with_the_key(
    make_config: ConfigFactory, fleet_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "companies"
    folder.mkdir()
    company_file(folder, "acme", tmp_path / "acme")
    loaded = load_config(
        make_config(migrate=False, database_url=fleet_url, companies_dir="companies")
    )
    acme = Companies(loaded).companies["acme"]
    upgrade_company(fleet_url, "acme")
    old = load_keys(credentials(tmp_path / "old"), env={})
    new = load_keys(credentials(tmp_path / "new"), env={})
    rotated = FleetDatabase(fleet_url, keys=new)  # a worker that has the new key
    lagging = FleetDatabase(fleet_url, keys=old)  # one that started before it came
    try:
        rotated.vault.save("acme", PAIR)
        runtime = company_runtime(loaded, acme, fleet=lagging)
        with write_session(runtime.db) as session:
            session.add(NeLink(state="connected", company_id="NE123", company_name="Acme"))
        with pytest.raises(VaultKeyMissing):
            lagging.vault.load("acme")

        caplog.set_level(logging.INFO)
        for _ in range(3):  # every round: the same wait, said once
            runtime.token_guard().check()
            (result,) = runtime.pipelines()[0].run_once(stages=(Stage.IMPORT_ORDERS,))
            assert not result.crashed, result.failures
            assert result.skipped_reason and new.current.key_id in result.skipped_reason
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        items = attention.collect(runtime.db).items
        assert [i.kind for i in items] == ["vault_key_missing"], [(i.kind, i.reason) for i in items]
        item = items[0]
        assert item.kind == "vault_key_missing"
        assert new.current.key_id in item.reason and socket.gethostname() in item.reason
        assert "restart" in item.reason and "connect" not in item.fix
        assert "do not connect again" in item.reason
        assert "SECRET" not in caplog.text + item.reason
        runtime.close()

        served = company_runtime(loaded, acme, fleet=rotated)  # a worker with the key takes it
        assert served.gate.blocked() is None
        served.token_guard().check()
        assert open_kinds(served.db) == set()
        served.close()
    finally:
        rotated.close()
        lagging.close()
