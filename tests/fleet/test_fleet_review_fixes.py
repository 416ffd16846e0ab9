"""Fleet-mode findings of the operator review (#19): the token guard reads the vault, fleet
notifications name their company, vault key files are checked, state folders are private."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta

from daemon import attention
from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.runtime import FleetDatabase, company_runtime
from daemon.nelink import LINK_LOST_KEY, secret_file_problems
from tests.fleet import test_fleet_cli as fleet_cli

fleet = fleet_cli.fleet  # the fixture: an installation in fleet mode with two companies


def test_the_token_guard_of_a_fleet_company_reads_its_pair_in_the_vault(
    fleet: fleet_cli.Fleet,
) -> None:
    assert fleet_cli.connect(fleet, "acme").exit_code == 0
    loaded = load_config(fleet.config)
    shared = FleetDatabase(fleet.url, credentials_dir=loaded.config.credentials_dir)
    runtime = company_runtime(loaded, Companies(loaded).companies["acme"], fleet=shared)
    try:
        issued = shared.vault.load("acme")
        assert issued is not None and issued.access_token_end_date is not None
        offset = timedelta()

        def clock() -> datetime:
            return datetime.now(issued.access_token_end_date.tzinfo) + offset  # type: ignore[union-attr]

        runtime.clock = clock  # type: ignore[method-assign]
        guard = runtime.token_guard()
        quiet = guard.check()
        assert quiet.error is None and quiet.refresh_end == issued.refresh_token_end_date
        assert LINK_LOST_KEY not in attention.open_problem_keys(runtime.db, LINK_LOST_KEY)
        offset = timedelta(hours=36)  # the access token expired: the keep-alive renews it
        fleet.sandbox.clock.advance(offset.total_seconds())
        renewed = guard.check()
        assert renewed.kept_alive and renewed.error is None
        after = shared.vault.load("acme")
        assert after is not None and after.refresh_token_end_date is not None
        assert after.refresh_token_end_date > issued.refresh_token_end_date  # type: ignore[operator]
        assert attention.open_problem_keys(runtime.db, LINK_LOST_KEY) == set()
    finally:
        runtime.close()
        shared.close()


def test_a_command_creating_a_company_state_folder_creates_it_and_its_parents_private(
    fleet: fleet_cli.Fleet,
) -> None:
    loaded = load_config(fleet.config)
    state = loaded.config.state_dir
    assert not state.exists()
    old = os.umask(0o022)
    try:
        assert fleet_cli.connect(fleet, "acme").exit_code == 0
        gone = fleet.cli("unlink", "--company", "acme", "--yes", "--json")
    finally:
        os.umask(old)
    assert gone.exit_code == 0, gone.output
    company = Companies(loaded).companies["acme"].config
    folders = [state, state / "companies", company.state_dir]
    assert company.state_dir == state / "companies" / "acme"
    assert {str(f): stat.S_IMODE(f.stat().st_mode) for f in folders if f.exists()} == {
        str(f): 0o700 for f in folders if f.exists()}
    assert secret_file_problems(company) == []
