"""`nebridge systemd unit`: the unit for this installation, checked by systemd-analyze.

The units are rendered from configurations an admin writes (relative paths next to
``daemon.yaml``, the CSV and the Logikura connector) and must pass ``systemd-analyze verify``
without a single warning and rate at most 1.5 in ``systemd-analyze security --offline=yes``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory, dump_yaml

ANALYZE = shutil.which("systemd-analyze")
NO_ANALYZE = "systemd-analyze is not installed (apt-get install systemd); .ci/run installs it"


def render(config: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--config", str(config), "systemd", "unit", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def admin_config(root: Path, connector: str) -> Path:
    """A daemon.yaml as an admin writes it: every path relative to the file."""
    wms: dict[str, object] = {"connector": connector}
    if connector == "csv":
        wms["csv"] = {"inbox": "./wms/inbox", "outbox": "wms/outbox"}
    else:
        wms["logikura"] = {"client_id": "lk-app", "token_file": "grants/logikura.json"}
    data = {
        "state_dir": "./state",
        "credentials_dir": "secrets",
        "nextengine": {"client_id": "ne-app"},
        "wms": wms,
        "warehouses": [{"code": "ITAKU", "ne_linked": True, "import_orders": True}],
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "daemon.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    return path


def settings(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit, re.M)


def test_unit_has_notify_watchdog_reload_credentials_and_paths(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config()
    unit = render(config, "--user", "nbsvc")
    for line in (
        "Type=notify",
        "WatchdogSec=60s",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=nbsvc",
        "Group=nbsvc",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "UMask=0027",
        "KillMode=mixed",
    ):
        assert line in unit.splitlines(), line
    assert settings(unit, "LoadCredential") == [
        "nextengine-client-secret:/etc/nebridge/credentials/nextengine-client-secret"
    ]
    assert f"--config {config.resolve()} run" in unit
    assert "db upgrade" in unit  # migrations before every start
    writable = settings(unit, "ReadWritePaths")[0].split()
    assert str(tmp_path / "wms" / "inbox") in writable
    assert str(tmp_path / "wms" / "outbox") in writable
    assert "SupplementaryGroups" not in unit
    # state and daemon.yaml outside /var/lib and /etc: no folder of systemd's is named
    assert settings(unit, "StateDirectory") == settings(unit, "ConfigurationDirectory") == []
    assert str(tmp_path / "state") in writable


@pytest.mark.parametrize("connector", ["csv", "logikura"])
def test_relative_paths_become_absolute_and_every_secret_is_loaded(
    tmp_path: Path, connector: str
) -> None:
    root = tmp_path / "etc"
    config = admin_config(root, connector)
    unit = render(config)
    for key in ("ExecStart", "ExecStartPre"):
        assert settings(unit, key)[0].startswith("/"), settings(unit, key)
    assert f"--config {root}/daemon.yaml run" in unit  # relative --config made absolute too
    assert f"Environment=NEBRIDGE_CONFIG={root}/daemon.yaml" in unit.splitlines()
    writable = settings(unit, "ReadWritePaths")[0].split()
    assert all(p.startswith("/") for p in writable), writable
    expected = [root / "state"] + (
        [root / "wms" / "inbox", root / "wms" / "outbox"]
        if connector == "csv"
        else [root / "grants"]
    )
    assert writable == [str(p) for p in expected]
    credentials = [f"nextengine-client-secret:{root}/secrets/nextengine-client-secret"]
    if connector == "logikura":
        credentials.append(f"logikura-client-secret:{root}/secrets/logikura-client-secret")
    assert settings(unit, "LoadCredential") == credentials
    assert not (root / "wms").exists() or connector == "csv"  # nothing else created


def test_a_wms_group_joins_the_service_to_it(tmp_path: Path) -> None:
    unit = render(admin_config(tmp_path, "csv"), "--wms-group", "wmsftp")
    assert settings(unit, "SupplementaryGroups") == ["wmsftp"]
    assert settings(unit, "UMask") == ["0027"]  # WMS files 0640; secrets stay 0600 (fchmod)


def test_paths_with_spaces_and_percent_are_quoted(tmp_path: Path) -> None:
    unit = render(admin_config(tmp_path / "my 100% install", "csv"))
    assert settings(unit, "ReadWritePaths")[0].startswith(f'"{tmp_path}/my 100%% install/state"')


@pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)
@pytest.mark.parametrize("connector", ["csv", "logikura"])
def test_systemd_analyze_verifies_without_warnings_and_rates_at_most_1_5(
    tmp_path: Path, connector: str
) -> None:
    assert ANALYZE is not None
    unit_file = tmp_path / "nebridge.service"
    unit_file.write_text(
        render(admin_config(tmp_path / "etc", connector), "--wms-group", "wmsftp"), encoding="utf-8"
    )
    verify = subprocess.run(
        [ANALYZE, "verify", str(unit_file)], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout + verify.stderr == "", verify.stdout + verify.stderr
    security = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r"Overall exposure level for nebridge\.service: (\d+\.\d+)", security.stdout)
    assert found is not None, security.stdout + security.stderr
    assert float(found.group(1)) <= 1.5, security.stdout


def test_notes_name_a_missing_credential_and_folders_private_tmp_hides(tmp_path: Path) -> None:
    config = admin_config(tmp_path / "etc", "logikura")
    result = CliRunner().invoke(app, ["--config", str(config), "systemd", "unit"])
    assert result.exit_code == 0
    secrets = tmp_path / "etc" / "secrets"
    for name in ("nextengine-client-secret", "logikura-client-secret"):
        assert (
            f"note: {secrets / name} does not exist yet; the service starts only once it "
            f"does: sudo install -m 0640 -o root -g nebridge /dev/stdin {secrets / name}"
        ) in result.stderr
    assert f"{tmp_path}/etc/state is under /tmp" in result.stderr  # pytest's tmp is in /tmp
    assert (
        f"note: {tmp_path}/etc/grants does not exist yet; systemd cannot start a service "
        "whose ReadWritePaths= is missing: sudo install -d -m 0750 -o nebridge -g nebridge "
        f"{tmp_path}/etc/grants"
    ) in result.stderr
    secrets.mkdir()
    for name in ("nextengine-client-secret", "logikura-client-secret"):
        (secrets / name).write_text("s\n", encoding="utf-8")
    for folder in ("state", "grants"):
        (tmp_path / "etc" / folder).mkdir()
    again = CliRunner().invoke(app, ["--config", str(config), "systemd", "unit"])
    assert "does not exist" not in again.stderr
    assert again.stdout == result.stdout  # the notes never reach the unit text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the WMS folder a group")
def test_under_the_units_umask_wms_files_are_readable_by_the_wms_group(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """UMask=0027 and a setgid WMS folder: an error report is 0640 in the folder's group,
    while the token-free state folder and database stay private."""
    inbox = tmp_path / "wms" / "inbox"
    inbox.mkdir(parents=True)
    os.chown(inbox, -1, 4)  # the WMS's group (adm here), setgid so new files inherit it
    inbox.chmod(0o2770)
    config = make_config()
    (inbox / "receipts-1.csv").write_text("receipt_id,warehouse\nR-1,ITAKU\n", encoding="utf-8")
    umask = re.search(r"^UMask=(\d+)$", render(config), re.M)
    assert umask is not None
    nebridge = [sys.executable, "-m", "daemon", "--config", str(config), "run", "--once"]
    result = subprocess.run(
        ["sh", "-c", f'umask {umask.group(1)} && exec "$@"', "sh", *nebridge],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "rejected receipts-1.csv" in result.stdout, result.stdout + result.stderr
    report = inbox / "rejected" / "receipts-1.csv.errors.txt"
    info = report.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_gid == 4
    rejected = (inbox / "rejected").stat()
    assert rejected.st_gid == 4 and stat.S_IMODE(rejected.st_mode) & 0o050 == 0o050
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "nebridge.db").stat().st_mode) == 0o600


def test_fleet_mode_unit_loads_the_vault_key_and_says_how_to_run_on_several_hosts(
    tmp_path: Path,
) -> None:
    root = tmp_path / "etc"
    config = admin_config(root, "csv")
    with config.open("a", encoding="utf-8") as handle:
        handle.write(
            "database_url: postgresql+psycopg://nebridge@db.internal/nebridge\n"
            "companies_dir: companies\n"
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
    unit = render(config)
    assert "# Fleet mode (companies_dir:" in unit and "same unit on as many hosts" in unit
    assert f"nebridge-vault-key:{root}/secrets/nebridge-vault-key" in settings(
        unit, "LoadCredential"
    )
    writable = settings(unit, "ReadWritePaths")[0].split()
    assert "/srv/acme/in" in writable and "/srv/acme/out" in writable
    if ANALYZE is not None:
        unit_file = tmp_path / "nebridge.service"
        unit_file.write_text(unit, encoding="utf-8")
        verify = subprocess.run(
            [ANALYZE, "verify", str(unit_file)], capture_output=True, text=True, timeout=120
        )
        assert verify.returncode == 0 and verify.stdout + verify.stderr == "", (
            verify.stdout + verify.stderr
        )
    single = render(admin_config(tmp_path / "single", "csv"))
    assert "Fleet mode" not in single and "nebridge-vault-key" not in single
