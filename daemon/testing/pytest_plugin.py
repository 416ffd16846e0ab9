"""The nebridge pytest plugin: fixtures for plugin authors.

Registered under the ``pytest11`` entry point, so it is active in every pytest run of an
environment where nebridge is installed; it only defines fixtures and imports nothing heavy
until one is used. Enable your plugin by overriding ``nebridge_plugins`` in your
``conftest.py``::

    @pytest.fixture
    def nebridge_plugins() -> dict[str, Any]:
        return {**DEFAULT_PLUGINS, "my_plugin": {"enabled": True, "threshold": 3}}

    def test_ships(ne_sandbox, nebridge_installation, run_once) -> None:
        ne_sandbox.state.create_goods("A-1", quantity=5)
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from daemon.admin import RunOnceReport
    from daemon.sandbox import Ledger, SandboxServer
    from daemon.testing.installation import Installation


@pytest.fixture
def ne_sandbox_options() -> dict[str, Any]:
    """Options of the Next Engine sandbox (``docs/sandbox.md``); override to change them."""
    return {}


@pytest.fixture
def ne_sandbox(ne_sandbox_options: dict[str, Any]) -> Iterator[SandboxServer]:
    """A Next Engine sandbox answering over HTTP on loopback, empty (no seeded orders)."""
    from daemon.sandbox import SandboxServer
    from daemon.testing.installation import kit_sandbox_config

    with SandboxServer(kit_sandbox_config(**ne_sandbox_options)) as server:
        yield server


@pytest.fixture
def nebridge_plugins() -> dict[str, Any]:
    """The ``plugins`` section of the installation's ``daemon.yaml``; override it to enable
    your plugin (the default enables the built-in plugins a shop usually runs)."""
    from daemon.testing.installation import DEFAULT_PLUGINS

    return dict(DEFAULT_PLUGINS)


@pytest.fixture
def nebridge_settings() -> dict[str, Any]:
    """Other top-level sections of the installation's ``daemon.yaml`` (``wms``,
    ``warehouses``, ``notify`` …), each replacing the kit's; override to change them."""
    return {}


@pytest.fixture
def nebridge_installation(
    tmp_path: Path,
    ne_sandbox: SandboxServer,
    nebridge_plugins: dict[str, Any],
    nebridge_settings: dict[str, Any],
) -> Iterator[Installation]:
    """An installation in ``tmp_path``: ``daemon.yaml``, CSV WMS folders (``inbox``,
    ``outbox``), a SQLite store, signed in to ``ne_sandbox``, ``nebridge_plugins`` enabled
    and ``nebridge_settings`` applied."""
    from daemon.testing.installation import open_installation

    with open_installation(
        tmp_path / "nebridge", ne_sandbox, nebridge_plugins, **nebridge_settings
    ) as installation:
        yield installation


@pytest.fixture
def run_once(nebridge_installation: Installation) -> Callable[..., RunOnceReport]:
    """One pass of the real engine over the installation (``nebridge run --once``);
    ``run_once(dry_run=True)`` changes nothing. Returns the pass's report."""
    return nebridge_installation.run_once


@pytest.fixture
def ne_ledger(ne_sandbox: SandboxServer) -> Ledger:
    """What the Next Engine sandbox received: ``shipped_order_ids()``, ``entries(kind=…)``."""
    return ne_sandbox.ledger
