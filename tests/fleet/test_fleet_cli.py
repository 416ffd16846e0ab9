"""The operator's fleet commands through the real CLI on the CI PostgreSQL: ``--company``
routing and refusal, ``connect --company`` into the vault against the Next Engine sandbox,
``companies list``, ``status`` as the fleet overview, ``companies rotate-key``, ``config check``
of a bad company file, ``plugins enable --company`` editing the company's file."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from daemon.cli import app
from daemon.fleet.leases import LeaseKeeper
from daemon.fleet.runtime import FleetDatabase, company_schema, upgrade_company
from daemon.fleet.vault import KEY_CREDENTIAL, PREVIOUS_KEY_CREDENTIAL, TokenVault, load_keys
from daemon.sandbox import SandboxConfig, SandboxServer
from daemon.store.engine import write_session
from daemon.store.models import InboxEvent, utcnow
from daemon.testing.installation import write_config
from tests.conftest import PG_ENV, dump_yaml

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID, SECRET = "nebridge-fleet-client", "nebridge-fleet-secret-42"
CODES = ("acme", "bolt")


@dataclass
class Fleet:
    """An installation in fleet mode: daemon.yaml, its companies, its vault key, a sandbox."""

    config: Path
    companies: Path
    credentials: Path
    url: str
    sandbox: SandboxServer

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return CliRunner().invoke(app, ["--config", str(self.config), *args], env=env)

    def vault(self) -> TokenVault:
        engine = FleetDatabase(self.url).engine
        return TokenVault(engine, load_keys(self.credentials))


def new_key(path: Path) -> None:
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n", encoding="ascii")
    path.chmod(0o600)


def company_file(folder: Path, code: str, root: Path) -> Path:
    path = folder / f"{code}.yaml"
    path.write_text(
        dump_yaml(
            {
                "wms": {
                    "connector": "csv",
                    "csv": {
                        "inbox": str(root / code / "in"),
                        "outbox": str(root / code / "out"),
                        "stable_seconds": 0.0,
                    },
                },
                "warehouses": [{"code": "MAIN", "ne_linked": True, "import_orders": True}],
            }
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def fleet(fleet_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("NEBRIDGE_COMPANY", raising=False)
    companies = tmp_path / "companies"
    companies.mkdir()
    for code in CODES:
        company_file(companies, code, tmp_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    new_key(credentials / KEY_CREDENTIAL)
    with SandboxServer(SandboxConfig(client_id=CLIENT_ID, client_secret=SECRET, seed=3)) as sb:
        config = write_config(
            tmp_path,
            migrate=False,
            database_url=fleet_url,
            companies_dir="companies",
            credentials_dir=str(credentials),
            nextengine={
                "api_base": sb.base_url,
                "login_base": sb.base_url,
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "redirect_uri": "http://127.0.0.1:9/callback",
            },
        )
        for code in CODES:
            upgrade_company(fleet_url, code)
        try:
            yield Fleet(config, companies, credentials, fleet_url, sb)
        finally:
            drop_company_schemas(fleet_url)


def drop_company_schemas(url: str) -> None:
    """The companies' schemas (``<installation schema>__<code>``) go with the test's."""
    admin = create_engine(os.environ[PG_ENV])
    engine = FleetDatabase(url).engine
    try:
        with engine.connect() as connection:
            base = connection.execute(text("SELECT current_schema()")).scalar_one()
        with admin.begin() as connection:
            for code in CODES:
                connection.execute(
                    text(f'DROP SCHEMA IF EXISTS "{company_schema(code, base)}" CASCADE')
                )
    finally:
        engine.dispose()
        admin.dispose()


def connect(fleet: Fleet, code: str) -> Any:
    uid, state = fleet.sandbox.state.issue_login()
    return fleet.cli("connect", "--company", code, "--uid", uid, "--state", state, "--json")


def test_a_per_company_command_needs_company_in_fleet_mode(fleet: Fleet) -> None:
    refused = fleet.cli("inbox", "list")
    assert refused.exit_code == 1
    assert "--company CODE" in refused.stderr and "acme, bolt" in refused.stderr
    as_json = fleet.cli("outbox", "list", "--json")
    assert as_json.exit_code == 1 and "acme, bolt" in json.loads(as_json.stdout)["error"]
    unknown = fleet.cli("inbox", "list", "--company", "nope")
    assert unknown.exit_code == 1 and "no company 'nope'" in unknown.stderr
    assert "acme, bolt" in unknown.stderr


def test_company_routes_every_command_to_that_companys_tables(fleet: Fleet) -> None:
    shared = FleetDatabase(fleet.url)
    try:
        with write_session(shared.company_engine("acme")) as session:
            session.add(
                InboxEvent(
                    kind="receipt",
                    external_id="R-1",
                    warehouse="MAIN",
                    content_hash="0" * 64,
                    payload="{}",
                    source="test",
                    received_at=utcnow(),
                )
            )
    finally:
        shared.close()
    acme = fleet.cli("inbox", "list", "--json", "--company", "acme")  # hoisted from the end
    assert acme.exit_code == 0, acme.output
    by_env = fleet.cli("inbox", "list", "--json", env={"NEBRIDGE_COMPANY": "bolt"})
    assert by_env.exit_code == 0, by_env.output
    assert json.loads(acme.stdout)["pending"]["total"] == 1
    assert json.loads(by_env.stdout)["pending"]["total"] == 0
    listed = fleet.cli("companies", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["code"]: row for row in json.loads(listed.stdout)["companies"]}
    assert rows["acme"]["inbox_pending"] == 1 and rows["bolt"]["inbox_pending"] == 0
    assert {r["error"] for r in rows.values()} == {None}
    company_file(fleet.companies, "cargo", fleet.companies.parent)  # no `db upgrade` yet
    newcomer = {
        row["code"]: row
        for row in json.loads(fleet.cli("companies", "list", "--json").stdout)["companies"]
    }
    assert "no tables yet" in newcomer["cargo"]["error"]
    assert "nebridge db upgrade" in newcomer["cargo"]["error"]
    assert newcomer["cargo"]["inbox_pending"] is None and newcomer["acme"]["inbox_pending"] == 1


def test_connect_company_stores_the_pair_in_the_vault_and_companies_list_shows_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    linked = connect(fleet, "acme")
    assert linked.exit_code == 0, linked.output
    assert json.loads(linked.stdout)["state"] == "connected"
    assert not list(tmp_path.rglob("nextengine-tokens.json"))  # no token file in fleet mode
    pair = fleet.sandbox.state.current_tokens()
    assert pair is not None and pair.access_token not in linked.output
    vault = fleet.vault()
    try:
        stored = vault.load("acme")
        assert stored is not None and stored.access_token == pair.access_token
        assert vault.load("bolt") is None
        with vault.engine.connect() as connection:
            sealed = bytes(
                connection.execute(
                    text("SELECT sealed FROM fleet_token WHERE company = 'acme'")
                ).scalar_one()
            )
        assert pair.access_token.encode() not in sealed
        keeper = LeaseKeeper(vault.engine, CODES, lease_seconds=30.0, worker_id="host-a:1:w")
        keeper.tick()
    finally:
        vault.engine.dispose()

    listed = fleet.cli("companies", "list", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    rows = {row["code"]: row for row in data["companies"]}
    assert rows["acme"]["tokens_stored"] and rows["acme"]["link"]["state"] == "connected"
    assert rows["acme"]["link"]["refresh_token_end"]
    assert not rows["bolt"]["tokens_stored"]
    assert rows["bolt"]["link"]["state"] == "not_connected"
    assert {r["served_by"] for r in rows.values()} == {"host-a:1:w"}
    assert all(0 < r["lease_seconds_left"] <= 30 for r in rows.values())
    assert data["totals"]["workers_live"] == 1 and data["unserved"] == []
    human = fleet.cli("companies", "list")
    assert human.exit_code == 0 and "host-a:1:w" in human.stdout
    assert pair.refresh_token not in human.output + listed.output

    overview = fleet.cli("status", "--json")
    assert overview.exit_code == 0, overview.output
    assert json.loads(overview.stdout)["totals"]["companies"] == 2
    status_human = fleet.cli("status")
    assert "companies: 2 (2 served" in status_human.stdout, status_human.stdout
    one = json.loads(fleet.cli("status", "--company", "acme", "--json").stdout)
    assert one["nextengine"]["state"] == "connected"
    other = json.loads(fleet.cli("status", "--company", "bolt", "--json").stdout)
    assert other["nextengine"]["state"] == "not_connected"

    keeper.stop()  # unlink holds the company's lease: the worker stops first
    gone = fleet.cli("unlink", "--company", "acme", "--yes", "--json")
    assert gone.exit_code == 0, gone.output
    vault = fleet.vault()
    try:
        assert vault.load("acme") is None
    finally:
        vault.engine.dispose()


def start_worker(fleet: Fleet, log: Path) -> subprocess.Popen[bytes]:
    """A real `nebridge run` fleet worker (its vault keys read from the credentials now)."""
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(fleet.config), "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )


def live_worker_keys(fleet: Fleet) -> dict[str, str | None]:
    """worker id -> the vault key id its heartbeat says it seals with (live workers)."""
    engine = FleetDatabase(fleet.url).engine
    try:
        with engine.connect() as connection:
            return dict(
                connection.execute(
                    text(
                        "SELECT worker_id, vault_key_id FROM fleet_worker "
                        "WHERE expires_at > clock_timestamp()"
                    )
                )
                .tuples()
                .all()
            )
    finally:
        engine.dispose()


def wait_for_key(fleet: Fleet, key_id: str, log: Path) -> str:
    """The id of the one live worker once its heartbeat names ``key_id``."""
    deadline = time.monotonic() + 60
    while list(live_worker_keys(fleet).values()) != [key_id]:
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.2)
    return next(iter(live_worker_keys(fleet)))


def vault_state(fleet: Fleet) -> tuple[str, dict[str, int]]:
    """The current key id of the credentials now, and how many pairs each key id seals."""
    vault = fleet.vault()
    try:
        return vault.keys.current.key_id, vault.key_use()
    finally:
        vault.engine.dispose()


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_rotate_key_seals_every_pair_again_with_the_new_key(fleet: Fleet, tmp_path: Path) -> None:
    """rotate-key refuses while a live worker seals with the old key (a real `nebridge run`
    records the keys it loaded in its heartbeat), `--force` overrides, and once the worker
    restarted with the new key it runs (#19)."""
    assert connect(fleet, "acme").exit_code == 0
    assert connect(fleet, "bolt").exit_code == 0
    old = fleet.credentials / KEY_CREDENTIAL
    old_id = vault_state(fleet)[0]
    log = tmp_path / "worker.log"
    worker = start_worker(fleet, log)
    try:
        worker_id = wait_for_key(fleet, old_id, log)
        (fleet.credentials / PREVIOUS_KEY_CREDENTIAL).write_bytes(old.read_bytes())
        (fleet.credentials / PREVIOUS_KEY_CREDENTIAL).chmod(0o600)
        new_key(old)  # installed on the "host", the worker not restarted
        new_id = vault_state(fleet)[0]

        refused = fleet.cli("companies", "rotate-key")
        assert refused.exit_code == 1, refused.output
        assert worker_id in refused.stderr and "does not have " + new_id in refused.stderr
        assert "systemctl restart nebridge" in refused.stderr and "--force" in refused.stderr
        assert vault_state(fleet)[1] == {old_id: 2}  # nothing was changed

        forced = fleet.cli("companies", "rotate-key", "--force", "--json")
        assert forced.exit_code == 0, forced.output
        result = json.loads(forced.stdout)
        assert result["rotated"] == 2 and result["workers_without_current_key"] == [worker_id]
        stop_worker(worker)

        worker = start_worker(fleet, log)  # restarted: it loads the new key
        wait_for_key(fleet, new_id, log)
        rotated = fleet.cli("companies", "rotate-key", "--json")
    finally:
        stop_worker(worker)
    assert rotated.exit_code == 0, rotated.output
    result = json.loads(rotated.stdout)
    assert result["left_on_old_keys"] == 0 and result["workers_without_current_key"] == []
    assert result["after"] == {new_id: 2}
    (fleet.credentials / PREVIOUS_KEY_CREDENTIAL).unlink()  # the old key is gone everywhere
    vault = fleet.vault()
    try:
        assert vault.load("acme") is not None and vault.load("bolt") is not None
    finally:
        vault.engine.dispose()


def test_config_check_and_companies_list_name_a_bad_company_file_and_line(
    fleet: Fleet,
) -> None:
    (fleet.companies / "broken.yaml").write_text(
        "warehouses:\n  - {code: MAIN}\nwarehouse: typo\n", encoding="utf-8"
    )
    checked = fleet.cli("config", "check")
    assert checked.exit_code == 1
    assert f"{fleet.companies / 'broken.yaml'}:3" in checked.stderr
    assert "did you mean `warehouses`" in checked.stderr
    as_json = json.loads(fleet.cli("config", "check", "--json").stdout)
    assert not as_json["valid"]
    bad = [c for c in as_json["companies"] if c["issues"]]
    assert [c["company"] for c in bad] == ["broken"] and bad[0]["issues"][0]["line"] == 3
    listed = fleet.cli("companies", "list", "--json")
    assert listed.exit_code == 1  # a refused file is a problem to fix
    data = json.loads(listed.stdout)
    assert [r["code"] for r in data["companies"]] == ["acme", "bolt"]  # the others load
    assert data["refused"][0]["path"].endswith("broken.yaml")
    assert data["refused"][0]["line"] == 3
    routed = fleet.cli("inbox", "list", "--company", "broken")
    assert routed.exit_code == 1 and "company 'broken' is refused" in routed.stderr
    assert "line 3" in routed.stderr or "broken.yaml:3" in routed.stderr, routed.stderr


def test_plugins_enable_with_company_edits_the_company_file(fleet: Fleet) -> None:
    acme = fleet.companies / "acme.yaml"
    acme.chmod(0o640)
    before = fleet.config.read_text()
    changed = fleet.cli("plugins", "enable", "tag_filter", "--company", "acme")
    assert changed.exit_code == 0, changed.output
    assert str(acme) in changed.stderr
    assert fleet.config.read_text() == before  # daemon.yaml untouched
    assert stat.S_IMODE(acme.stat().st_mode) == 0o640
    listed = json.loads(fleet.cli("plugins", "list", "--company", "acme", "--json").stdout)
    enabled = {p["name"] for p in listed if p["enabled"]}
    # the company file took a copy of daemon.yaml's plugins: the others stay enabled
    assert {"tag_filter", "status_update", "stock_minus"} <= enabled
    others = json.loads(fleet.cli("plugins", "list", "--company", "bolt", "--json").stdout)
    assert "tag_filter" not in {p["name"] for p in others if p["enabled"]}


def test_company_without_companies_dir_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "single")
    result = CliRunner().invoke(
        app, ["--config", str(config), "--company", "acme", "inbox", "list"]
    )
    assert result.exit_code == 1 and "sets no `companies_dir`" in result.stderr
    default = CliRunner().invoke(
        app, ["--config", str(config), "--company", "default", "inbox", "list", "--json"]
    )
    assert default.exit_code == 0, default.output


def test_doctor_checks_one_company_with_its_pair_in_the_vault(fleet: Fleet) -> None:
    assert fleet.cli("doctor", "--offline").exit_code == 1  # which company? refused
    assert connect(fleet, "acme").exit_code == 0
    checked = fleet.cli("doctor", "--offline", "--json", "--company", "acme")
    checks = {c["name"]: c for c in json.loads(checked.stdout)["checks"]}
    assert checks["database"]["ok"] and checks["nextengine link"]["ok"], checked.stdout
    assert "token file" not in checks  # no token file in fleet mode
    bolt = fleet.cli("doctor", "--offline", "--json", "--company", "bolt")
    link = {c["name"]: c for c in json.loads(bolt.stdout)["checks"]}["nextengine link"]
    assert not link["ok"] and "nebridge connect" in link["fix"]


def test_a_served_company_whose_file_turned_invalid_stays_listed(fleet: Fleet) -> None:
    """Its worker still serves the last valid version: the list shows it with its holder,
    its file's path and line, and counts it (#19)."""
    engine = FleetDatabase(fleet.url).engine
    try:
        keeper = LeaseKeeper(engine, CODES, lease_seconds=30.0, worker_id="host-a:1:w")
        keeper.tick()
        (fleet.companies / "acme.yaml").write_text(
            "warehouses:\n  - {code: MAIN}\nwarehouse: typo\n", encoding="utf-8"
        )
        listed = fleet.cli("companies", "list", "--json")
        assert listed.exit_code == 1  # a refused file is a problem to fix
        data = json.loads(listed.stdout)
        rows = {row["code"]: row for row in data["companies"]}
        assert sorted(rows) == ["acme", "bolt"] and data["totals"]["companies"] == 2
        assert rows["acme"]["served_by"] == "host-a:1:w"
        assert f"{fleet.companies / 'acme.yaml'}:3" in rows["acme"]["file_refused"]
        assert rows["bolt"]["file_refused"] is None
        assert data["totals"]["served"] == 2 and data["unserved"] == []
        table = fleet.cli("companies", "list")
        assert "still served on its last valid version" in table.stdout
        assert "acme.yaml:3" in table.stdout
        keeper.stop()
    finally:
        engine.dispose()


def test_a_company_the_worker_could_not_start_waits_in_its_attention(fleet: Fleet) -> None:
    """What the fleet worker records for a held company it does not serve (#19)."""
    from daemon.config import load_config
    from daemon.fleet.companies import Companies
    from daemon.fleet.daemon import FleetDaemon

    daemon = FleetDaemon(fleet.config)
    daemon.fleet = FleetDatabase(fleet.url)
    company = Companies(load_config(fleet.config)).companies["acme"]
    try:
        daemon._report_not_started(company, "its service did not start within 120 s")
        shown = fleet.cli("attention", "--company", "acme", "--json")
        items = [i for i in json.loads(shown.stdout)["items"] if i["kind"] == "service_not_started"]
        assert len(items) == 1 and "within 120 s" in items[0]["reason"]
        assert "acme.yaml" in items[0]["fix"]
        other = json.loads(fleet.cli("attention", "--company", "bolt", "--json").stdout)
        assert not [i for i in other["items"] if i["kind"] == "service_not_started"]
        daemon._resolve_not_started(company)
        shown = fleet.cli("attention", "--company", "acme", "--json")
        assert not [
            i for i in json.loads(shown.stdout)["items"] if i["kind"] == "service_not_started"
        ]
    finally:
        daemon.fleet.close()
