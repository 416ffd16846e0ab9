"""`nebridge systemd unit` in fleet mode: daemon.yaml's own WMS folders are writable only when a
company uses them, and the comment says the file watch applies company files and how to run
several workers on one host (review fleet F1, F11)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import dump_yaml
from tests.test_systemd_unit import admin_config


def fleet_unit(root: Path, companies: dict[str, dict[str, object]]) -> str:
    config = admin_config(root, "csv")  # its wms: ./wms/inbox and wms/outbox
    with config.open("a", encoding="utf-8") as handle:
        handle.write(
            "database_url: postgresql+psycopg://nebridge@db.internal/nebridge\n"
            "companies_dir: companies\n"
        )
    (root / "companies").mkdir()
    for code, data in companies.items():
        (root / "companies" / f"{code}.yaml").write_text(dump_yaml(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(config), "systemd", "unit"])
    assert result.exit_code == 0, result.output
    return result.stdout + result.stderr


def writable(unit: str) -> list[str]:
    return re.findall(r"^ReadWritePaths=(.*)$", unit, re.M)[0].split()


def test_daemon_yaml_wms_folders_only_when_a_company_uses_them(tmp_path: Path) -> None:
    own = {"wms": {"connector": "csv", "csv": {"inbox": "/srv/a/in", "outbox": "/srv/a/out"}}}
    unit = fleet_unit(tmp_path / "own", {"acme": own})
    assert "/srv/a/in" in writable(unit)
    default_inbox = str(tmp_path / "own" / "wms" / "inbox")
    assert default_inbox not in unit  # neither writable nor a note to create it

    inherited = fleet_unit(tmp_path / "inherit", {"acme": {}})  # acme uses daemon.yaml's
    assert any(p.endswith("/wms/inbox") for p in writable(inherited)), writable(inherited)


def test_the_comment_says_the_watch_applies_files_and_how_to_run_several_workers(
    tmp_path: Path,
) -> None:
    unit = fleet_unit(tmp_path, {"acme": {}})
    assert "applies it by itself" in unit and "then `systemctl reload nebridge`" not in unit
    assert "nebridge@.service" in unit and "Environment=NEBRIDGE_METRICS_PORT=947%i" in unit


def test_a_fleet_daemon_yaml_without_wms_renders_when_every_company_has_its_own(
    tmp_path: Path,
) -> None:
    """README step 3: a fleet whose companies all have their own `wms:` needs none in
    daemon.yaml — `config check` accepted it, `systemd unit` refused it (new-admin review)."""
    config = admin_config(tmp_path, "csv")
    text = config.read_text(encoding="utf-8")
    config.write_text(
        "\n".join(
            line
            for line in text.splitlines()
            if not line.startswith(("wms:", "  connector:", "  csv:", "    inbox:", "    outbox:"))
        )
        + "\ndatabase_url: postgresql+psycopg://nebridge@db.internal/nebridge\n"
        "companies_dir: companies\n",
        encoding="utf-8",
    )
    assert "wms" not in config.read_text(encoding="utf-8")
    (tmp_path / "companies").mkdir()
    own = {"wms": {"connector": "csv", "csv": {"inbox": "/srv/a/in", "outbox": "/srv/a/out"}}}
    (tmp_path / "companies" / "acme.yaml").write_text(dump_yaml(own), encoding="utf-8")
    checked = CliRunner().invoke(app, ["--config", str(config), "config", "check"])
    assert checked.exit_code == 0, checked.output
    result = CliRunner().invoke(app, ["--config", str(config), "systemd", "unit"])
    assert result.exit_code == 0, result.output
    assert "/srv/a/in" in writable(result.stdout)
    # a company that inherits daemon.yaml's (missing) wms: is refused, so the unit still is
    (tmp_path / "companies" / "beta.yaml").write_text(dump_yaml({}), encoding="utf-8")
    refused = CliRunner().invoke(app, ["--config", str(config), "systemd", "unit"])
    assert refused.exit_code == 1 and "wms.csv.inbox" in refused.output, refused.output
