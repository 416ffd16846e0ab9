"""A local Next Engine: an HTTP server that behaves like NE's login and API hosts.

Used by the demo, by every test and by third-party plugin authors. It follows
``nextengine-api.md`` / ``nextengine-api-gaps.md``, not our client's expectations; every
guessed behaviour is an option of :class:`SandboxConfig` (see ``docs/sandbox.md``).

    with SandboxServer(SandboxConfig(seed=7)) as ne:
        uid, state = ne.state.issue_login()
        requests.post(f"{ne.base_url}/api_neauth", data={...})
"""

from daemon.sandbox.clock import JST, Clock
from daemon.sandbox.config import GUESSED_OPTIONS, FaultConfig, SandboxConfig
from daemon.sandbox.errors import DEFAULT_ERROR_CODES, INJECTABLE_CODES
from daemon.sandbox.faults import Faults
from daemon.sandbox.ledger import Ledger, LedgerEntry
from daemon.sandbox.server import SandboxServer, serve_forever
from daemon.sandbox.state import RowSpec, SandboxState
from daemon.sandbox.traffic import TokenUse, Traffic

__all__ = [
    "DEFAULT_ERROR_CODES",
    "GUESSED_OPTIONS",
    "INJECTABLE_CODES",
    "JST",
    "Clock",
    "FaultConfig",
    "Faults",
    "Ledger",
    "LedgerEntry",
    "RowSpec",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "TokenUse",
    "Traffic",
    "serve_forever",
]
