"""``nebridge sandbox serve``: a local Next Engine for demos, tests and plugin authors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import fail, get, info
from daemon.config import client_secret
from daemon.nextengine.sandbox import SandboxConfig, SandboxServer
from daemon.nextengine.sandbox.server import serve_forever

app = typer.Typer(help="The local Next Engine sandbox.", no_args_is_help=True)


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free port).")] = 8710,
    seed: Annotated[int, typer.Option(help="Seed of the generated world.")] = 1,
    seed_size: Annotated[int, typer.Option(help="Number of generated orders.")] = 120,
    latency_ms: Annotated[int, typer.Option(help="Added latency per API call.")] = 0,
    options: Annotated[Path | None, typer.Option(
        "--options", help="JSON file of further sandbox options (see docs/sandbox.md).")] = None,
) -> None:
    """Serve Next Engine's login and API paths on one port, accepting daemon.yaml's client."""
    config = get(ctx).load().config
    data: dict[str, object] = {}
    if options is not None:
        try:
            data = json.loads(options.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(f"cannot read sandbox options {options}: {exc}")
    data.update(host=host, port=port, seed=seed, seed_size=seed_size,
                client_id=config.nextengine.client_id or "nebridge-sandbox",
                client_secret=client_secret(config) or "nebridge-sandbox-secret",
                redirect_uri=config.nextengine.redirect_uri)
    faults = dict(data.get("faults") or {})  # type: ignore[call-overload]
    faults["latency_ms"] = latency_ms or faults.get("latency_ms", 0)
    data["faults"] = faults
    try:
        sandbox_config = SandboxConfig.from_mapping(data)
    except (TypeError, ValueError) as exc:
        fail(f"invalid sandbox options: {exc}")

    def ready(server: SandboxServer) -> None:
        info(f"Next Engine sandbox on {server.base_url} (login and API); control API at "
             f"{server.base_url}/_sandbox/ — Ctrl-C stops it.\n"
             f"Point daemon.yaml at it: nextengine.api_base and nextengine.login_base = "
             f"{server.base_url}")

    serve_forever(sandbox_config, on_ready=ready)
