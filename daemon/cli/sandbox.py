"""``nebridge sandbox``: local sandboxes for demos, tests and plugin authors — Next Engine's
(built in) and those WMS connector plugins offer (``nebridge_sandboxes``, e.g. Logikura's)."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from daemon.cli.common import fail, get, info, print_json, print_table
from daemon.config import DaemonConfig, SecretUnreadable, client_secret
from daemon.httpserve import PortInUse

app = typer.Typer(
    help="Local sandboxes: Next Engine's, and those plugins offer.", no_args_is_help=True
)

#: The built-in sandbox: ``nebridge sandbox serve`` without a name.
NEXT_ENGINE = "nextengine"
NE_DEFAULT_PORT = 8710
NE_DEFAULT_SEED_SIZE = 120


@app.command("serve")
def serve(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="Which sandbox: nextengine, or one a plugin offers (`nebridge sandbox list`), "
            "e.g. logikura.",
            show_default=True,
        ),
    ] = NEXT_ENGINE,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            help="Port (0 = any free port; default 8710, a plugin's sandbox its own: 8720 for "
            "logikura)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated world.")] = 1,
    seed_size: Annotated[
        int | None,
        typer.Option(
            help="Number of generated orders (a plugin's sandbox: its own unit, e.g. Logikura's "
            "product variants); default 120 (logikura 30)."
        ),
    ] = None,
    latency_ms: Annotated[int, typer.Option(help="Added latency per API call.")] = 0,
    options: Annotated[
        Path | None,
        typer.Option(
            "--options",
            help="JSON file of further sandbox options (see docs/sandbox.md, "
            "docs/logikura-sandbox.md).",
        ),
    ] = None,
    logikura: Annotated[
        bool,
        typer.Option("--logikura", help="The same as NAME logikura (kept for existing scripts)."),
    ] = False,
) -> None:
    """Serve a sandbox on one loopback port, accepting daemon.yaml's client: Next Engine's
    login and API paths, or a plugin's sandbox (e.g. Logikura's OAuth and API). With
    --company (fleet mode) it accepts that company's client, and the company file is the one
    to point at it."""
    app_ctx = get(ctx)
    config = app_ctx.load().config
    company = app_ctx.resolved
    target = (
        "daemon.yaml"
        if company is None or company.path is None
        else f"{company.path} (its own nextengine section; daemon.yaml's is every company's)"
    )
    if logikura:
        if name not in (NEXT_ENGINE, "logikura"):
            fail(f"--logikura and sandbox {name!r} contradict each other; give one of them", code=2)
        name = "logikura"
    data: dict[str, Any] = {}
    if options is not None:
        try:
            data = json.loads(options.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(f"cannot read sandbox options {options}: {exc}")
    if name == NEXT_ENGINE:
        _serve_next_engine(
            config,
            data,
            host,
            NE_DEFAULT_PORT if port is None else port,
            seed,
            NE_DEFAULT_SEED_SIZE if seed_size is None else seed_size,
            latency_ms,
            target,
        )
    else:
        _serve_plugin_sandbox(config, name, data, host, port, seed, seed_size, latency_ms)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the sandboxes `sandbox serve NAME` can serve: Next Engine's and the plugins'."""
    from daemon.surface import connector_host, sandboxes

    config = get(ctx).load().config
    rows = [
        {
            "name": NEXT_ENGINE,
            "plugin": "(built in)",
            "default_port": NE_DEFAULT_PORT,
            "summary": "Next Engine: login, API and a control API",
        }
    ]
    rows += [
        {
            "name": spec.name,
            "plugin": plugin,
            "default_port": spec.default_port,
            "summary": spec.summary,
        }
        for _name, (plugin, spec) in sorted(sandboxes(connector_host(config)).items())
    ]
    if as_json:
        print_json(rows)
        return
    print_table(
        "sandboxes",
        ["name", "plugin", "default port", "summary"],
        [[r["name"], r["plugin"], r["default_port"], r["summary"]] for r in rows],
    )


def _serve_next_engine(
    config: DaemonConfig,
    data: dict[str, Any],
    host: str,
    port: int,
    seed: int,
    seed_size: int,
    latency_ms: int,
    target: str = "daemon.yaml",
) -> None:
    """The Next Engine sandbox with ``config``'s ``nextengine`` client; its address is to be
    set in ``target`` (daemon.yaml, or a fleet company's file)."""
    from daemon.sandbox import SandboxConfig, SandboxServer
    from daemon.sandbox.server import serve_forever

    try:
        secret = client_secret(config)
    except SecretUnreadable as exc:
        fail(str(exc))
    data.update(
        host=host,
        port=port,
        seed=seed,
        seed_size=seed_size,
        client_id=config.nextengine.client_id or "nebridge-sandbox",
        client_secret=secret or "nebridge-sandbox-secret",
        redirect_uri=config.nextengine.redirect_uri,
    )
    faults = dict(data.get("faults") or {})
    faults["latency_ms"] = latency_ms or faults.get("latency_ms", 0)
    data["faults"] = faults
    try:
        sandbox_config = SandboxConfig.from_mapping(data)
    except (TypeError, ValueError) as exc:
        fail(f"invalid sandbox options: {exc}")

    def run(started: Callable[[], None]) -> None:
        def ready(server: SandboxServer) -> None:
            started()
            info(
                f"Next Engine sandbox on {server.base_url} (login and API); control API at "
                f"{server.base_url}/_sandbox/ — Ctrl-C stops it.\n"
                f"Point {target} at it: nextengine.api_base and nextengine.login_base = "
                f"{server.base_url}"
            )

        serve_forever(sandbox_config, on_ready=ready)

    _serve_until_stopped(run, host, port)


def _serve_plugin_sandbox(
    config: DaemonConfig,
    name: str,
    data: dict[str, Any],
    host: str,
    port: int | None,
    seed: int,
    seed_size: int | None,
    latency_ms: int,
) -> None:
    """A sandbox a plugin offers, with daemon.yaml's ``wms.<name>`` section."""
    from daemon.cli import plugin_failure
    from daemon.surface import connector_host, sandboxes
    from hooks.surface import SandboxRequest, SurfaceError

    offered = sandboxes(connector_host(config))
    if name not in offered:
        fail(
            f"no sandbox is named {name!r}; available: "
            f"{', '.join([NEXT_ENGINE, *sorted(offered)])} (`nebridge sandbox list`)",
            code=2,
        )
    spec = offered[name][1]
    section = (config.wms.model_extra or {}).get(name) or {}
    port = spec.default_port if port is None else port

    def run(started: Callable[[], None]) -> None:
        def ready(message: str) -> None:
            started()
            info(message)

        request = SandboxRequest(
            host=host,
            port=port,
            seed=seed,
            seed_size=spec.default_seed_size if seed_size is None else seed_size,
            latency_ms=latency_ms,
            options=data,
            section=section if isinstance(section, dict) else {},
            ready=ready,
        )
        try:
            spec.serve(request)
        except SurfaceError as exc:
            fail(str(exc))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise  # the port: said by _serve_until_stopped
            fail(plugin_failure(offered[name][0], "sandbox", exc))
        except Exception as exc:
            fail(plugin_failure(offered[name][0], "sandbox", exc))

    _serve_until_stopped(run, host, port)


def _serve_until_stopped(run: Callable[[Callable[[], None]], None], host: str, port: int) -> None:
    """Run ``run(started)`` (``started()`` is called once the server listens); a port that
    cannot be bound is one line naming it and the flag to change it (not a traceback)."""
    started: list[bool] = []
    try:
        run(lambda: started.append(True))
    except OSError as exc:
        if started or exc.errno not in (errno.EADDRINUSE, errno.EACCES):
            raise
        fail(
            str(
                PortInUse(
                    host,
                    port,
                    "stop that program, or pass --port N (--port 0 picks a free port)",
                    denied=exc.errno == errno.EACCES,
                )
            )
        )
