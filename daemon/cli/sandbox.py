"""``nebridge sandbox serve``: a local Next Engine (or, with ``--logikura``, a local Logikura)
for demos, tests and plugin authors."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from daemon.cli.common import fail, get, info
from daemon.config import DaemonConfig, SecretUnreadable, client_secret
from daemon.httpserve import PortInUse
from daemon.sandbox import SandboxConfig, SandboxServer
from daemon.sandbox.server import serve_forever
from plugins.wms_logikura.config import LogikuraConfig
from plugins.wms_logikura.sandbox import SandboxConfig as LogikuraSandboxConfig
from plugins.wms_logikura.sandbox import SandboxServer as LogikuraSandbox
from plugins.wms_logikura.sandbox import serve_forever as serve_logikura

app = typer.Typer(help="The local Next Engine sandbox.", no_args_is_help=True)


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] =
    "127.0.0.1",
    port: Annotated[int | None, typer.Option(
        help="Port (0 = any free port; default 8710, 8720 with --logikura).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated world.")] = 1,
    seed_size: Annotated[int | None, typer.Option(
        help="Number of generated orders (product variants with --logikura); default 120 "
             "(30).")] = None,
    latency_ms: Annotated[int, typer.Option(help="Added latency per API call.")] = 0,
    options: Annotated[Path | None, typer.Option(
        "--options", help="JSON file of further sandbox options (see docs/sandbox.md, "
                          "docs/logikura-sandbox.md).")] = None,
    logikura: Annotated[bool, typer.Option(
        "--logikura", help="Serve the Logikura sandbox (OAuth host and REST API) instead, "
                           "accepting daemon.yaml's wms.logikura client.")] = False,
) -> None:
    """Serve Next Engine's login and API paths (or, with --logikura, Logikura's OAuth and API)
    on one loopback port, accepting daemon.yaml's client."""
    config = get(ctx).load().config
    data: dict[str, object] = {}
    if options is not None:
        try:
            data = json.loads(options.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(f"cannot read sandbox options {options}: {exc}")
    if logikura:
        _serve_logikura(config, data, host, 8720 if port is None else port, seed,
                        30 if seed_size is None else seed_size, latency_ms)
        return
    port = 8710 if port is None else port
    seed_size = 120 if seed_size is None else seed_size
    try:
        secret = client_secret(config)
    except SecretUnreadable as exc:
        fail(str(exc))
    data.update(host=host, port=port, seed=seed, seed_size=seed_size,
                client_id=config.nextengine.client_id or "nebridge-sandbox",
                client_secret=secret or "nebridge-sandbox-secret",
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

    _serve_until_stopped(serve_forever, sandbox_config, ready, host, port)


C = TypeVar("C")
S = TypeVar("S")


def _serve_until_stopped(serve: Callable[..., None], config: C, ready: Callable[[S], None],
                         host: str, port: int) -> None:
    """Run ``serve(config, on_ready=ready)``; a port that cannot be bound is one line naming
    it and the flag to change it (not a traceback)."""
    started: list[S] = []

    def on_ready(server: S) -> None:
        started.append(server)
        ready(server)

    try:
        serve(config, on_ready=on_ready)
    except OSError as exc:
        if started or exc.errno not in (errno.EADDRINUSE, errno.EACCES):
            raise
        fail(str(PortInUse(host, port, "stop that program, or pass --port N (--port 0 picks "
                           "a free port)", denied=exc.errno == errno.EACCES)))


def _serve_logikura(config: DaemonConfig, data: dict[str, object], host: str, port: int,
                    seed: int, seed_size: int, latency_ms: int) -> None:
    """``--logikura``: the Logikura sandbox with daemon.yaml's ``wms.logikura`` client."""
    section = (config.wms.model_extra or {}).get("logikura") or {}
    try:
        client = LogikuraConfig.model_validate(section)
    except ValidationError as exc:
        fail(f"wms.logikura in daemon.yaml is invalid ({exc.error_count()} problem(s)); "
             "run `nebridge config check`")
    data.update(host=host, port=port, seed=seed, seed_size=seed_size,
                client_id=client.client_id or "nebridge-logikura-sandbox",
                client_secret=client.client_secret_value() or "nebridge-logikura-sandbox-secret",
                redirect_uri=client.redirect_uri)
    faults = dict(data.get("faults") or {})  # type: ignore[call-overload]
    faults["latency_ms"] = latency_ms or faults.get("latency_ms", 0)
    data["faults"] = faults
    try:
        sandbox_config = LogikuraSandboxConfig.from_mapping(data)
    except (TypeError, ValueError) as exc:
        fail(f"invalid Logikura sandbox options: {exc}")

    def ready(server: LogikuraSandbox) -> None:
        info(f"Logikura sandbox on {server.base_url} (OAuth and API); control API at "
             f"{server.base_url}/_sandbox/ — Ctrl-C stops it.\n"
             f"Point daemon.yaml at it: wms.logikura.api_base and wms.logikura.auth_base = "
             f"{server.base_url}, then run `nebridge wms connect`")

    _serve_until_stopped(serve_logikura, sandbox_config, ready, host, port)
