"""Every command a per-company command suggests in fleet mode carries ``--company`` (pasted,
it runs for the same company), and ``orders retry`` says the serving worker does the import
(review fleet F9). Real CLI on the CI PostgreSQL and the Next Engine sandbox."""

from __future__ import annotations

import re

import pytest

from daemon.fleet.runtime import FleetDatabase
from daemon.store.engine import write_session
from daemon.store.models import ImportedOrder
from hooks.notify import EVERY_COMPANY
from tests.fleet.test_fleet_cli import Fleet, connect
from tests.fleet.test_fleet_cli import fleet as fleet  # the fixture

COMMAND = re.compile(r"`nebridge ([^`]*)`")


def commands_without_company(text: str) -> list[str]:
    """The per-company commands ``text`` suggests without ``--company acme``."""
    bad = []
    for command in COMMAND.findall(text):
        words = command.split()
        if not words or words[0] in EVERY_COMPANY or " ".join(words[:2]) in EVERY_COMPANY:
            continue
        if words[0] == "run" and "--once" not in words:
            continue
        if "--company acme" not in command:
            bad.append(command)
    return bad


def held_order(fleet: Fleet, order: str) -> None:
    database = FleetDatabase(fleet.url)
    engine = database.company_engine("acme", None)
    try:
        with write_session(engine) as session:
            session.add(
                ImportedOrder(
                    ne_order_id=order, warehouse="MAIN", state="held", hold_reason="no product"
                )
            )
    finally:
        engine.dispose()
        database.close()


@pytest.mark.parametrize(
    "args",
    [
        ("orders", "drop", "21"),
        ("orders", "retry", "21"),
        ("orders", "retry", "404"),
        ("outbox", "retry", "999"),
        ("outbox", "resolve", "999", "--applied"),
        ("stock", "diff"),
        ("doctor",),
    ],
)
def test_every_suggested_command_names_the_company(fleet: Fleet, args: tuple[str, ...]) -> None:
    assert connect(fleet, "acme").exit_code == 0
    held_order(fleet, "21")
    if args[:2] == ("orders", "retry") and args[2] == "21":
        assert fleet.cli("orders", "drop", "21", "--company", "acme").exit_code == 0
    result = fleet.cli(*args, "--company", "acme")
    output = result.stdout + result.stderr
    assert "`nebridge " in output, output  # the command suggests one
    assert commands_without_company(output) == [], output


def test_orders_retry_in_a_fleet_says_the_serving_worker_imports_it(fleet: Fleet) -> None:
    held_order(fleet, "21")
    result = fleet.cli("orders", "retry", "21", "--company", "acme")
    assert result.exit_code == 0, result.output
    assert "the worker serving the company does it at its next order import" in result.stderr
    assert "`nebridge run --once --company acme` runs one now" in result.stderr
