"""Fleet-mode findings of the operator review (#19): the token guard reads the vault, fleet
notifications name their company, vault key files are checked, state folders are private."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon import attention
from daemon.config import load_config
from daemon.fleet.companies import Companies
from daemon.fleet.runtime import FleetDatabase, company_runtime
from daemon.fleet.vault import KEY_CREDENTIAL, PREVIOUS_KEY_CREDENTIAL, VaultError, load_keys
from daemon.nelink import LINK_LOST_KEY, secret_file_problems
from daemon.notify import company_message
from daemon.scheduler import Scheduler
from hooks.notify import for_company, render, subject_line
from hooks.records import Notification, Problem
from tests import test_systemd_unit as unit_tests
from tests.conftest import DEFAULT_PLUGINS, dump_yaml
from tests.fleet import test_fleet_cli as fleet_cli
from tests.notify_receivers import http_receiver

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
        str(f): 0o700 for f in folders if f.exists()
    }
    assert secret_file_problems(company) == []


def test_a_vault_key_read_from_credentials_dir_must_be_private_and_not_a_link(
    tmp_path: Path,
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    key = creds / KEY_CREDENTIAL
    fleet_cli.new_key(key)
    key.chmod(0o640)  # root:nebridge 0640, as every other credential there
    assert load_keys(creds, env={}).current.key_id
    key.chmod(0o644)
    with pytest.raises(VaultError, match=f"{key} is open to other users.*chmod 0640"):
        load_keys(creds, env={})
    key.chmod(0o660)
    with pytest.raises(VaultError, match="writable by its group"):
        load_keys(creds, env={})
    key.chmod(0o600)
    previous = creds / PREVIOUS_KEY_CREDENTIAL
    fleet_cli.new_key(tmp_path / "elsewhere.key")
    previous.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(VaultError, match=f"{previous} is a symbolic link"):
        load_keys(creds, env={})
    systemd = tmp_path / "systemd"  # systemd's own copy: systemd makes it private
    systemd.mkdir()
    fleet_cli.new_key(systemd / KEY_CREDENTIAL)
    (systemd / KEY_CREDENTIAL).chmod(0o644)
    previous.unlink()
    assert load_keys(creds, env={"CREDENTIALS_DIRECTORY": str(systemd)}).current.key_id


def test_the_fleet_unit_loads_the_previous_vault_key_while_its_file_exists_and_names_the_lease(
    tmp_path: Path,
) -> None:
    root = tmp_path / "etc"
    config = unit_tests.admin_config(root, "csv")
    with config.open("a", encoding="utf-8") as handle:
        handle.write(
            "database_url: postgresql+psycopg://nebridge@db.internal/nebridge\n"
            "companies_dir: companies\nfleet_lease_seconds: 20\n"
        )
    (root / "companies").mkdir()
    (root / "companies" / "acme.yaml").write_text(
        dump_yaml(
            {
                "wms": {
                    "connector": "csv",
                    "csv": {"inbox": "/srv/acme/in", "outbox": "/srv/acme/out"},
                },
            }
        ),
        encoding="utf-8",
    )
    before = unit_tests.render(config)
    assert "within the lease time (20 s)" in before
    assert PREVIOUS_KEY_CREDENTIAL not in "".join(unit_tests.settings(before, "LoadCredential"))
    (root / "secrets").mkdir(exist_ok=True)
    fleet_cli.new_key(root / "secrets" / PREVIOUS_KEY_CREDENTIAL)  # a rotation is under way
    during = unit_tests.settings(unit_tests.render(config), "LoadCredential")
    assert f"{PREVIOUS_KEY_CREDENTIAL}:{root}/secrets/{PREVIOUS_KEY_CREDENTIAL}" in during
    assert f"{KEY_CREDENTIAL}:{root}/secrets/{KEY_CREDENTIAL}" in during


def test_a_fleet_companys_notifications_and_fixes_name_the_company(
    fleet: fleet_cli.Fleet,
) -> None:
    with http_receiver() as receiver:
        root = fleet.companies.parent
        (fleet.companies / "acme.yaml").write_text(
            dump_yaml(
                {
                    "wms": {
                        "connector": "csv",
                        "csv": {
                            "inbox": str(root / "acme" / "in"),
                            "outbox": str(root / "acme" / "out"),
                            "stable_seconds": 0.0,
                        },
                    },
                    "warehouses": [{"code": "MAIN", "ne_linked": True, "import_orders": True}],
                    "plugins": {
                        **DEFAULT_PLUGINS,
                        "notify_webhook": {
                            "enabled": True,
                            "format": "json",
                            "url": receiver.url,
                            "language": "en",
                            "timeout_seconds": 2,
                        },
                    },
                }
            ),
            encoding="utf-8",
        )
        loaded = load_config(fleet.config)
        runtime = company_runtime(loaded, Companies(loaded).companies["acme"])
        try:
            attention.report(
                runtime.db,
                Problem(
                    key="wms_mismatch:S7",
                    kind="wms_mismatch",
                    subject="S7",
                    warehouse="MAIN",
                    reason="schedule S7 was renumbered",
                    fix="check it, then `nebridge orders "
                    "retry 7`; `nebridge attention` lists the rest",
                ),
            )
            report = runtime.notifier().run_once()
            tested = runtime.notifier().send_test()
            outage = Scheduler(runtime)._outage  # what the company's scheduler tells
            assert outage.check(11 * 60, "connection refused") == []
        finally:
            runtime.close()
        assert (report.sent, report.failed) == (1, 0) and tested[0].ok
        opened, test, down = (json.loads(r.body) for r in receiver.requests)
    assert opened["company"] == test["company"] == down["company"] == "acme"
    assert "`nebridge doctor --company acme`" in down["fix"]
    assert opened["subject"].startswith("[acme] [Action needed]")
    assert "Company: acme" in opened["text"]
    assert opened["fix"] == (
        "check it, then `nebridge orders retry 7 --company acme`; "
        "`nebridge attention --company acme` lists the rest"
    )
    assert "`nebridge notify list --company acme`" in opened["text"]  # the footer too
    listed = fleet.cli("attention", "--company", "acme", "--json")
    assert listed.exit_code == 0, listed.output
    [item] = json.loads(listed.stdout)["items"]
    assert item["fix"] == opened["fix"]
    status = json.loads(fleet.cli("status", "--company", "acme", "--json").stdout)
    assert status["attention"]["items"][0]["fix"] == opened["fix"]


def test_a_single_company_notification_is_unchanged() -> None:
    message = Notification(
        key="k",
        kind="wms_mismatch",
        event="open",
        severity="error",
        title="t",
        detail="d",
        fix="`nebridge orders retry 7`",
    )
    assert "company" not in message.as_dict()
    assert subject_line(message, "en").startswith("[Action needed]")
    assert "Company" not in render(message, "en")
    assert company_message(message, "") is message
    assert for_company(message.fix, "") == "`nebridge orders retry 7`"
    assert for_company("`nebridge connect --company bolt`", "acme") == (
        "`nebridge connect --company bolt`"
    )
