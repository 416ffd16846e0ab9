"""A local Logikura (ロジクラ): an HTTP server that behaves like Logikura's OAuth host and
REST API (``/api/v1/…``), with fault injection, a ledger and a ``/_sandbox/`` control API.

Used by the Logikura demo, the tests and plugin authors. It follows ``logikura-api.md`` (the
OpenAPI 1.0 document), not our connector's expectations; every guessed behaviour is an option
of :class:`SandboxConfig` (see ``docs/logikura-sandbox.md``).

    with SandboxServer(SandboxConfig(seed=7)) as lk:
        code = lk.state.issue_code("http://127.0.0.1:8766/callback")
        requests.post(f"{lk.base_url}/oauth/token", data={...})
"""

from plugins.wms_logikura.sandbox.clock import JST, Clock
from plugins.wms_logikura.sandbox.config import GUESSED_OPTIONS, FaultConfig, SandboxConfig
from plugins.wms_logikura.sandbox.errors import ApiError
from plugins.wms_logikura.sandbox.faults import Faults
from plugins.wms_logikura.sandbox.ledger import Ledger, LedgerEntry
from plugins.wms_logikura.sandbox.server import SandboxServer, serve_forever
from plugins.wms_logikura.sandbox.state import SandboxState
from plugins.wms_logikura.sandbox.testing import StaffError, WarehouseStaff
from plugins.wms_logikura.sandbox.traffic import RequestRecord, Traffic

__all__ = [
    "GUESSED_OPTIONS",
    "JST",
    "ApiError",
    "Clock",
    "FaultConfig",
    "Faults",
    "Ledger",
    "LedgerEntry",
    "RequestRecord",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "StaffError",
    "Traffic",
    "WarehouseStaff",
    "serve_forever",
]
