"""A linked world for end-to-end tests: sandbox + config pointing at it + connected company.

The pieces are the testing kit's (:mod:`daemon.testing.installation`), the same plugin
authors get; this module keeps the names the project's tests use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daemon.sandbox import SandboxServer
from daemon.testing.installation import (
    AT,
    CLIENT_ID,
    RECEIPT_HEADER,
    SHIP_HEADER,
    kit_sandbox_config,
    sandbox_settings,
    sign_in,
)
from daemon.testing.installation import CLIENT_SECRET as SECRET
from daemon.testing.installation import Installation as World
from tests.conftest import ConfigFactory

__all__ = ["AT", "CLIENT_ID", "RECEIPT_HEADER", "SECRET", "SHIP_HEADER", "World", "make_world"]


def make_world(
    make_config: ConfigFactory,
    tmp_path: Path,
    sandbox_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[World]:
    """A running sandbox and the installation of ``make_config`` signed in to it."""
    with SandboxServer(kit_sandbox_config(**(sandbox_options or {}))) as sandbox:
        config = make_config(**{**sandbox_settings(sandbox), **overrides})
        sign_in(config, sandbox)
        yield World(sandbox, config, tmp_path / "wms" / "inbox", tmp_path / "wms" / "outbox")
