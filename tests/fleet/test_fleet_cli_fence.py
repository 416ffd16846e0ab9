"""Fleet mode's operator commands beside running workers, on the CI PostgreSQL through the
real CLI (#19): ``run --once --company`` holds the company's lease (refused, naming the
worker, while one serves it); ``--company`` on a command that covers every company is a
usage error; two ``db upgrade`` of one new company at once both succeed; ``companies list``
shows each worker's last heartbeat and a footer for companies to reconnect."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from daemon.fleet.runtime import FleetDatabase, company_schema
from tests.fleet.test_fleet_cli import Fleet, company_file, fleet

__all__ = ["fleet"]  # the fixture, used by name

ROOT = Path(__file__).resolve().parents[2]

#: Two processes run this at the same moment (argv: start time, database URL, code).
UPGRADE_AT_ONCE = (
    "import sys, time\n"
    "from daemon.fleet.runtime import upgrade_company\n"
    "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
    "print(upgrade_company(sys.argv[2], sys.argv[3]))\n"
)


def test_two_upgrades_of_one_new_company_at_once_both_succeed(fleet: Fleet) -> None:
    """Both processes create and migrate the same new schema at the same moment: the second
    waits for the first's advisory lock and finds it done (one failed before, on the
    schema's or alembic_version's creation)."""
    fleet_db = FleetDatabase(fleet.url)
    try:
        for code in ("cove", "dune"):
            company_file(fleet.companies, code, fleet.config.parent)
            start = str(time.time() + 4.0)  # both imported by then, even on a busy machine
            runs = [
                subprocess.Popen(
                    [sys.executable, "-c", UPGRADE_AT_ONCE, start, fleet.url, code],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            outcomes = [run.communicate(timeout=180) for run in runs]
            assert [run.returncode for run in runs] == [0, 0], outcomes
            # (before, after): one created the schema, the other found it at the head
            first, second = sorted(
                (ast.literal_eval(out.strip()) for out, _err in outcomes),
                key=lambda revisions: revisions[0] is not None,
            )
            assert first[0] is None and first[1] == second[0] == second[1], outcomes
            listed = json.loads(fleet.cli("companies", "list", "--json").stdout)
            row = next(r for r in listed["companies"] if r["code"] == code)
            assert row["error"] is None, row
    finally:
        with fleet_db.engine.begin() as connection:
            for code in ("cove", "dune"):
                schema = company_schema(code, fleet_db.base_schema)
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        fleet_db.close()
