"""Small fleet wordings the operator review found wrong (review fleet F11): the refusal of
`run --once --dry-run --company` names --dry-run; `plugins`/`warehouses` edits of a company
file say to copy it to every host, where the file watch applies it; linking a linked
warehouse changes nothing and says so; `sandbox serve --company` points at the company file.
Real CLI (and a real process for the sandbox) on the CI PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from daemon.fleet.leases import LeaseKeeper
from daemon.fleet.runtime import FleetDatabase
from tests.fleet.test_fleet_cli import CODES, ROOT, Fleet, connect
from tests.fleet.test_fleet_cli import fleet as fleet  # the fixture


def test_a_refused_dry_run_names_dry_run(fleet: Fleet) -> None:
    assert connect(fleet, "acme").exit_code == 0
    engine = FleetDatabase(fleet.url).engine
    keeper = LeaseKeeper(engine, CODES, lease_seconds=30.0, worker_id="host-a:1:w")
    try:
        keeper.tick()
        refused = fleet.cli("run", "--once", "--dry-run", "--company", "acme", "--json")
        assert refused.exit_code == 1, refused.output
        error = json.loads(refused.stdout)["error"]
        assert "`nebridge run --once --dry-run --company acme` would run beside it" in error
    finally:
        keeper.stop()
        engine.dispose()


def test_editing_a_company_file_says_to_copy_it_to_every_host(fleet: Fleet) -> None:
    acme = fleet.companies / "acme.yaml"
    changed = fleet.cli("plugins", "disable", "order_watch", "--company", "acme")
    assert changed.exit_code == 0, changed.output
    assert f"copy {acme} to every host" in changed.stderr and "file watch" in changed.stderr
    assert "apply it to a running daemon" not in changed.stderr

    before = acme.read_text()  # MAIN is ne_linked already
    same = fleet.cli("warehouses", "link", "MAIN", "--company", "acme")
    assert same.exit_code == 0, same.output
    assert "ne_linked is true already; nothing changed" in same.stderr
    assert "will now reach" not in same.stderr and acme.read_text() == before
    unlinked = fleet.cli("warehouses", "unlink", "MAIN", "--company", "acme")
    assert unlinked.exit_code == 0 and "will no longer reach" in unlinked.stderr
    assert f"copy {acme} to every host" in unlinked.stderr


def test_sandbox_serve_for_a_company_points_at_its_file(fleet: Fleet) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY",)}
    command = [sys.executable, "-m", "daemon", "--config", str(fleet.config)]
    sandbox = subprocess.Popen(
        [*command, "--company", "acme", "sandbox", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert sandbox.stderr is not None
        deadline = time.monotonic() + 60
        lines: list[str] = []
        while not any(line.startswith("Point ") for line in lines):
            assert time.monotonic() < deadline and sandbox.poll() is None, lines
            lines.append(sandbox.stderr.readline())
        point = next(line for line in lines if line.startswith("Point "))
        assert point.startswith(f"Point {fleet.companies / 'acme.yaml'} (its own nextengine")
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=60)
