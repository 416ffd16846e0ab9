"""The company's token lock and a paused holder (review F2): a worker stopped while holding the
lock (SIGSTOP, a frozen VM) must not stop the company's Next Engine work on the worker that took
it over, while a live holder keeps the lock however long its Next Engine call takes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from daemon.fleet.vault import TokenVault, VaultError, load_keys
from daemon.store.engine import make_engine
from tests.fleet.test_vault import credentials

ROOT = Path(__file__).resolve().parents[2]
WARNING = "the token lock ended while this process held it"


@pytest.fixture
def engine(fleet_url: str) -> Iterator[Engine]:
    engine = make_engine(fleet_url)
    yield engine
    engine.dispose()


def start_holder(url: str, creds: Path, seconds: float, idle: float) -> subprocess.Popen[str]:
    """A process holding acme's token lock for ``seconds``; returns once it holds it."""
    args = [url, str(creds), "acme", str(seconds), str(idle)]
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.fleet.vault_lock_holder", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_paused_holder_loses_the_lock_and_the_next_process_goes_on(
    fleet_url: str, engine: Engine, tmp_path: Path
) -> None:
    creds = credentials(tmp_path / "creds")
    holder = start_holder(fleet_url, creds, seconds=3, idle=1)
    os.kill(holder.pid, signal.SIGSTOP)  # paused in the middle of its "Next Engine call"
    try:
        vault = TokenVault(engine, load_keys(creds, env={}), lock_wait_seconds=60)
        entered = False
        with vault.company_lock("acme"):  # before the fix: VaultError after 60 s
            entered = True
        assert entered
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0 and out == "released\n", err
    assert WARNING in err and "company acme" in err  # the resumed holder says what happened


def test_a_live_holder_keeps_the_lock_longer_than_the_idle_time(
    fleet_url: str, engine: Engine, tmp_path: Path
) -> None:
    creds = credentials(tmp_path / "creds")
    holder = start_holder(fleet_url, creds, seconds=4, idle=0.5)
    try:
        time.sleep(1.5)  # three idle times into its call: the keep-alive has held it
        vault = TokenVault(engine, load_keys(creds, env={}), lock_wait_seconds=0)
        with pytest.raises(VaultError, match=r"'acme'.s token lock"), vault.company_lock("acme"):
            pass
    finally:
        out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0 and out == "released\n"
    assert WARNING not in err
