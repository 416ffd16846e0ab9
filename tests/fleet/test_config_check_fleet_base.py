"""``config check`` on a fleet whose daemon.yaml has no ``wms:`` section (attacker review F1):
daemon.yaml's ``wms`` is only the default of company files that leave it out, so it is
checked only when one does — as ``nebridge run`` loads the fleet."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import dump_yaml

POSTGRES = "postgresql+psycopg://nebridge@127.0.0.1/fleet"


def fleet(tmp_path: Path, *own_wms: bool) -> Path:
    """daemon.yaml with the shared settings only (no ``wms``, ``warehouses``, ``plugins``) and
    one company file per flag: ``True`` with a ``wms`` section of its own, ``False`` without."""
    folder = tmp_path / "companies"
    folder.mkdir()
    for number, own in enumerate(own_wms):
        data: dict[str, object] = {"warehouses": [{"code": "MAIN", "ne_linked": True}]}
        if own:
            wms = tmp_path / "wms" / f"c{number}"
            data["wms"] = {
                "connector": "csv",
                "csv": {"inbox": str(wms / "in"), "outbox": str(wms / "out")},
            }
        (folder / f"c{number}.yaml").write_text(dump_yaml(data), encoding="utf-8")
    config = tmp_path / "daemon.yaml"
    shared = {
        "database_url": POSTGRES,
        "state_dir": str(tmp_path / "state"),
        "companies_dir": "companies",
        "nextengine": {"client_id": "test-client", "client_secret": "test-secret-123"},
    }
    config.write_text(dump_yaml(shared), encoding="utf-8")
    return config


def check(config: Path, *extra: str) -> tuple[int, str]:
    """``nebridge --config CONFIG config check [extra]``: exit code and output."""
    result = CliRunner().invoke(app, ["--config", str(config), "config", "check", *extra])
    return result.exit_code, result.output


def test_every_company_with_its_own_wms_is_a_valid_fleet(tmp_path: Path) -> None:
    """Each company has its WMS folders: daemon.yaml needs no ``wms`` (exit 0, JSON too)."""
    config = fleet(tmp_path, True, True)
    code, output = check(config)
    assert code == 0, output
    assert "2 company file(s), all valid" in output
    code, output = check(config, "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["valid"] and report["issues"] == []


def test_a_company_inheriting_the_missing_wms_fails_the_check(tmp_path: Path) -> None:
    """One company file leaves ``wms`` out: daemon.yaml's (missing) one is its WMS, so both
    daemon.yaml and that file are named."""
    config = fleet(tmp_path, True, False)
    code, output = check(config, "--json")
    assert code == 1, output
    report = json.loads(output)
    assert {issue["path"] for issue in report["issues"]} == {"wms.csv.inbox", "wms.csv.outbox"}
    broken = [entry for entry in report["companies"] if entry["issues"]]
    assert [entry["company"] for entry in broken] == ["c1"]
