"""``nebridge sandbox serve logikura``: the Logikura sandbox, accepting daemon.yaml's
``wms.logikura`` client (offered through ``nebridge_sandboxes``)."""

from __future__ import annotations

from pydantic import ValidationError

from hooks.surface import SandboxRequest, SurfaceError
from plugins.wms_logikura.config import LogikuraConfig

DEFAULT_PORT = 8720
DEFAULT_SEED_SIZE = 30  # product variants


def serve_sandbox(request: SandboxRequest) -> None:
    """Serve the Logikura sandbox (OAuth host and REST API) until Ctrl-C."""
    from plugins.wms_logikura.sandbox import SandboxConfig, SandboxServer, serve_forever

    try:
        client = LogikuraConfig.model_validate(dict(request.section))
    except ValidationError as exc:
        raise SurfaceError(
            f"wms.logikura in daemon.yaml is invalid ({exc.error_count()} "
            "problem(s)); run `nebridge config check`"
        ) from None
    data = dict(request.options)
    data.update(
        host=request.host,
        port=request.port,
        seed=request.seed,
        seed_size=request.seed_size,
        client_id=client.client_id or "nebridge-logikura-sandbox",
        client_secret=client.client_secret_value() or "nebridge-logikura-sandbox-secret",
        redirect_uri=client.redirect_uri,
    )
    faults = dict(data.get("faults") or {})
    faults["latency_ms"] = request.latency_ms or faults.get("latency_ms", 0)
    data["faults"] = faults
    try:
        config = SandboxConfig.from_mapping(data)
    except (TypeError, ValueError) as exc:
        raise SurfaceError(f"invalid Logikura sandbox options: {exc}") from None

    def ready(server: SandboxServer) -> None:
        request.ready(
            f"Logikura sandbox on {server.base_url} (OAuth and API); control API at "
            f"{server.base_url}/_sandbox/ — Ctrl-C stops it.\n"
            f"Point daemon.yaml at it: wms.logikura.api_base and wms.logikura.auth_base = "
            f"{server.base_url}, then run `nebridge wms connect`"
        )

    serve_forever(config, on_ready=ready)
