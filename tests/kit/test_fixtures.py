"""The testing kit's fixtures, used as a plugin author uses them (the pytest11 plugin is active
in this run because nebridge is installed)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from daemon.admin import RunOnceReport
from daemon.sandbox import Ledger, SandboxServer
from daemon.testing.installation import DEFAULT_PLUGINS, Installation


@pytest.fixture
def nebridge_plugins() -> dict[str, Any]:
    """Overridden as an author does: tracking numbers off."""
    return {**DEFAULT_PLUGINS, "tracking_update": {"enabled": False}}


def test_order_imported_shipped_and_received_through_the_fixtures(
    ne_sandbox: SandboxServer,
    nebridge_installation: Installation,
    run_once: Callable[..., RunOnceReport],
    ne_ledger: Ledger,
) -> None:
    ne_sandbox.state.create_goods("A-1", quantity=5)
    nebridge_installation.products([("商品A", "A-1")], encoding="cp932")  # Shift_JIS export
    order = ne_sandbox.state.create_order([("A-1", 1)], shop_id=1)
    assert run_once().ok
    assert [(r["ne_order_id"], r["product_code"]) for r in nebridge_installation.instructed()] == [
        (str(order), "商品A")
    ]

    nebridge_installation.ship(order, [("商品A", 1)], tracking="T-1", encoding="cp932")
    nebridge_installation.receive([("商品A", 4)])
    report = run_once()
    assert report.ok, report.problems
    assert ne_ledger.shipped_order_ids() == [order]
    assert nebridge_installation.order(order)["receive_order_delivery_cut_form_id"] in ("", None)
    assert nebridge_installation.uploaded("A-1") == 4  # shipping moves NE stock itself


def test_dry_run_changes_nothing(
    ne_sandbox: SandboxServer,
    nebridge_installation: Installation,
    run_once: Callable[..., RunOnceReport],
) -> None:
    ne_sandbox.state.create_goods("A-1", quantity=5)
    nebridge_installation.products([("P-A", "A-1")])
    ne_sandbox.state.create_order([("A-1", 1)], shop_id=1)
    run_once(dry_run=True)
    assert nebridge_installation.instructed() == []


@pytest.mark.parametrize("ne_sandbox_options", [{"que_processing_delay_s": 0.05}])
def test_sandbox_options_reach_the_sandbox(ne_sandbox: SandboxServer) -> None:
    assert ne_sandbox.config.que_processing_delay_s == 0.05


def test_the_plugin_loads_nothing_heavy() -> None:
    """It is active in every pytest run where nebridge is installed: fixtures only, the
    engine, the sandbox and the store are imported when a fixture is first used."""
    probe = (
        "import sys, daemon.testing.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('daemon', 'hooks', 'plugins', 'sqlalchemy', 'requests', 'pydantic', 'ruamel')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.split() == ["['daemon',", "'daemon.testing',", "'daemon.testing.pytest_plugin']"]
