"""``run --once --company X`` names the company in every command it suggests (review F3): its
attention items' fixes and hints carry ``--company X``, as ``attention --company X`` prints
them, so a fix copied from it runs for the same company — in the table and in ``--json``.
Real CLI on the CI PostgreSQL (regression test: main already passes its output through
:mod:`daemon.company_output`)."""

from __future__ import annotations

import re

from hooks.notify import EVERY_COMPANY
from tests.fleet.test_fleet_cli import Fleet, connect
from tests.fleet.test_fleet_cli import fleet as fleet  # the fixture


def test_run_once_for_a_company_prints_fixes_for_that_company(fleet: Fleet) -> None:
    assert connect(fleet, "acme").exit_code == 0
    for extra in ([], ["--json"]):
        done = fleet.cli("run", "--once", "--company", "acme", *extra)
        assert done.exit_code in (0, 1), done.output  # 1: sandbox orders held, for a person
        commands = re.findall(r"`nebridge ([^`]*)`", done.stdout + done.stderr)
        assert any(c.startswith("orders retry") for c in commands), done.output  # the fixes
        for command in commands:
            if command.split()[0] not in EVERY_COMPANY:
                assert command.endswith("--company acme"), (command, extra)
