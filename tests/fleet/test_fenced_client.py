"""The real Next Engine client, fenced by a company's lease, with its pair in the vault,
against the NE sandbox over HTTP: only the lease holder's calls are sent; after a takeover the
new holder goes on with the pair the old one left (rotated pairs included), and the paused
worker's client sends nothing more."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from daemon.fleet.leases import LeaseKeeper, fleet_engine
from daemon.fleet.vault import KEY_CREDENTIAL, TokenVault, load_keys
from daemon.instancelock import FencedTokenStore, InstanceLockLost
from daemon.nextengine.client import NextEngineClient
from daemon.sandbox import SandboxConfig, SandboxServer

CLIENT_ID, SECRET = "fleet-app", "fleet-app-secret"


def fenced_client(base_url: str, vault: TokenVault, keeper: LeaseKeeper) -> NextEngineClient:
    """A worker's client for company ``acme``: the vault's pair, checked against the lease."""
    store = FencedTokenStore(vault.store("acme"), fence=lambda: keeper.lost_reason("acme"))
    return NextEngineClient(
        base_url, store, version="test", client_id=CLIENT_ID, client_secret=SECRET
    )


def test_only_the_lease_holder_calls_next_engine_and_a_takeover_goes_on_with_the_pair(
    fleet_url: str, tmp_path: Path
) -> None:
    key = tmp_path / KEY_CREDENTIAL
    key.write_text(base64.b64encode(os.urandom(32)).decode())
    key.chmod(0o600)
    engine = fleet_engine(fleet_url, lease_seconds=1.0)
    vault = TokenVault(engine, load_keys(tmp_path, env={}))
    first = LeaseKeeper(engine, ["acme"], lease_seconds=1.0, worker_id="first")
    second = LeaseKeeper(engine, ["acme"], lease_seconds=1.0, worker_id="second")
    first.tick()
    second.tick()
    options = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "seed_size": 0,
        "faults": {"expire_access_token_every_n_calls": 2},
    }
    with SandboxServer(SandboxConfig.from_mapping(options)) as sandbox:
        traffic, company = sandbox.state.traffic, sandbox.state.company_id
        holder = fenced_client(sandbox.base_url, vault, first)
        other = fenced_client(sandbox.base_url, vault, second)
        holder.authorize(*sandbox.state.issue_login())  # `connect`: the pair into the vault
        for _ in range(3):
            holder.company_info()
        sent = traffic.calls
        with pytest.raises(InstanceLockLost, match="does not hold it"):
            other.company_info()
        assert traffic.calls == sent  # refused before anything was sent

        time.sleep(1.2)  # the holder is "paused": its lease runs out unrenewed
        assert [lease.company for lease in second.tick().acquired] == ["acme"]
        with pytest.raises(InstanceLockLost, match="taken over"):
            holder.company_info()
        assert traffic.calls == sent
        before = vault.load("acme")
        for _ in range(3):
            other.company_info()  # the pair the first worker left, rotated on the way
        assert traffic.calls == sent + 3
        after = vault.load("acme")
        assert before is not None and after is not None
        assert after.access_token != before.access_token  # the rotated pair was kept
        assert traffic.dead_pair_uses() == []
        assert traffic.max_in_flight(company) == 1
        holder.close()
        other.close()
    engine.dispose()
