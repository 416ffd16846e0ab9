"""Removing a company (fleet review F5), through the real CLI on the CI PostgreSQL: once its
file is gone, ``companies list`` shows what the database still keeps of it (sealed tokens, the
lease row, its schema) with the command; ``companies forget`` removes it without the file,
refused while its file exists or a worker serves it."""

from __future__ import annotations

import json
import os

from sqlalchemy import text
from typer.testing import CliRunner

from daemon.cli import app
from daemon.fleet.leases import LeaseKeeper
from daemon.fleet.runtime import FleetDatabase
from tests.fleet import test_fleet_cli as fleet_cli

fleet = fleet_cli.fleet  # the fixture: an installation in fleet mode with two companies


def test_a_removed_companys_leftovers_are_listed_and_forgotten(fleet: fleet_cli.Fleet) -> None:
    assert fleet_cli.connect(fleet, "bolt").exit_code == 0
    database = FleetDatabase(fleet.url)
    schema = database.schema("bolt")

    def left() -> tuple[int, int, bool]:
        with database.control.connect() as connection:
            return (
                connection.execute(
                    text("SELECT count(*) FROM fleet_token WHERE company = 'bolt'")
                ).scalar_one(),
                connection.execute(
                    text("SELECT count(*) FROM fleet_lease WHERE company = 'bolt'")
                ).scalar_one(),
                connection.execute(
                    text("SELECT to_regnamespace(:s) IS NOT NULL"), {"s": schema}
                ).scalar_one(),
            )

    keeper = LeaseKeeper(database.control, fleet_cli.CODES, lease_seconds=30.0, worker_id="h:1:w")
    try:
        keeper.tick()
        refused = fleet.cli("companies", "forget", "bolt", "--yes")
        assert refused.exit_code == 1 and "still has its file" in refused.stderr
        assert "`nebridge unlink --company bolt` first" in refused.stderr

        os.remove(fleet.companies / "bolt.yaml")  # on this host; a worker still serves it
        held = fleet.cli("companies", "forget", "bolt", "--yes")
        assert held.exit_code == 1 and "is served by worker h:1:w" in held.stderr
        assert left() == (1, 1, True)  # nothing was changed

        listed = fleet.cli("companies", "list", "--json")
        data = json.loads(listed.stdout)
        assert data["leftovers"] == [
            {"code": "bolt", "tokens": True, "lease": True, "schema": schema}
        ]
        assert [r["code"] for r in data["companies"]] == ["acme"]
        human = fleet.cli("companies", "list").stdout
        assert "  nebridge companies forget bolt  (sealed Next Engine tokens; a lease row" in human

        keeper.set_companies(["acme"])
        keeper.tick()  # the removed company's lease is let go
        asked = CliRunner().invoke(
            app, ["--config", str(fleet.config), "companies", "forget", "bolt"], input="n\n"
        )
        assert asked.exit_code == 1 and left() == (1, 1, True)
        forgot = fleet.cli("companies", "forget", "bolt", "--yes")
        assert forgot.exit_code == 0, forgot.output
        assert "deleted its sealed tokens, its lease row" in forgot.stdout
        assert f"kept: schema {schema}" in forgot.stdout
        assert left() == (0, 0, True)

        dropped = fleet.cli("companies", "forget", "bolt", "--yes", "--drop-schema", "--json")
        assert dropped.exit_code == 0, dropped.output
        assert json.loads(dropped.stdout)["schema_dropped"] is True
        assert left() == (0, 0, False)
        assert json.loads(fleet.cli("companies", "list", "--json").stdout)["leftovers"] == []
    finally:
        keeper.stop()
        database.close()
