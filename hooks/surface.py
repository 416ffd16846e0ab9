"""What a plugin adds to nebridge's surface: CLI commands, local sandboxes and demos.

The records below are what the hooks of :class:`SurfaceSpecs` return; the engine mounts
them. A plugin brings its own surface through them and never the other way round: the
engine imports nothing from a plugin (``docs/architecture.md``), so a third-party WMS
connector can offer ``nebridge sandbox serve NAME`` and ``nebridge demo --wms NAME`` exactly
as the built-in ``wms_logikura`` does.

Health checks for ``nebridge doctor`` use :meth:`hooks.specs.PluginSpecs.nebridge_health_checks`;
a connector plugin gets its validated ``wms.<name>`` section there as ``connector``
(:class:`ConnectorInUse`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hooks.errors import NebridgeError
from hooks.markers import hookspec

if TYPE_CHECKING:
    import typer


class SurfaceError(NebridgeError):
    """A sandbox or demo cannot start as configured; the message says what to fix.

    Raise it from :attr:`SandboxSpec.serve` or :attr:`DemoSpec.run`: nebridge prints the
    message as one line and exits 1 (no traceback).
    """


# -- CLI commands ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CliCommand:
    """A command a plugin adds to the root ``nebridge`` group: ``nebridge NAME …``.

    ``app`` is a ``typer.Typer`` (a group of subcommands) or a function (one command, its
    parameters declared the Typer way). ``help`` is the one-line help ``nebridge plugins
    commands`` shows. A name that is already a core command (``run``, ``status`` …) or
    another plugin's command is refused with a message; the core command keeps its name.
    """

    name: str
    app: typer.Typer | Callable[..., Any]
    help: str


# -- health checks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectorInUse:
    """The WMS connector ``daemon.yaml`` selects, as ``nebridge doctor`` hands it to the
    health checks of every plugin.

    ``name`` is ``wms.connector``; ``plugin`` the plugin that offers it; ``options`` its
    ``wms.<name>`` section validated by the connector's ``config_model`` with relative paths
    resolved against ``config_dir`` (``None`` when the section is invalid: ``doctor``
    shows those problems under ``config``). ``state_dir`` and ``credentials_dir`` are the
    installation's (as :class:`hooks.connectors.ConnectorContext` lends them).
    """

    name: str
    plugin: str
    options: Any
    config_dir: Path
    state_dir: Path
    credentials_dir: Path


# -- sandboxes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SandboxRequest:
    """How ``nebridge sandbox serve NAME`` asks a plugin's sandbox to run.

    ``port`` and ``seed_size`` already carry the spec's defaults when not given (``port`` 0:
    any free port). ``options`` is the ``--options`` JSON file (the sandbox's own settings,
    e.g. faults). ``section`` is the raw ``wms.<name>`` mapping of ``daemon.yaml`` (empty when
    absent): the sandbox accepts the client configured there. Call ``ready(message)`` once,
    when the server listens, with the lines telling the admin where it is and how to point
    ``daemon.yaml`` at it.
    """

    host: str
    port: int
    seed: int
    seed_size: int
    latency_ms: int
    options: Mapping[str, Any]
    section: Mapping[str, Any]
    ready: Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """A local sandbox a plugin offers: ``nebridge sandbox serve NAME``.

    ``serve(request)`` runs it in the foreground until Ctrl-C (``KeyboardInterrupt``), on
    ``request.host``/``request.port``. A port that cannot be bound may raise its ``OSError``
    before ``ready`` is called: nebridge turns it into one line naming ``--port``. Raise
    :class:`SurfaceError` for a configuration that cannot be served.
    """

    name: str
    summary: str
    serve: Callable[[SandboxRequest], None]
    default_port: int
    default_seed_size: int


# -- demos -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoStage:
    """One stage run of one pass of the engine during a demo (for the demo's summary)."""

    warehouse: str
    stage: str
    counts: Mapping[str, int] = field(default_factory=dict)
    subjects: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DemoOutboxItem:
    """A Next Engine action nebridge stored during a demo."""

    kind: str
    state: str
    warehouse: str
    subject: str


@dataclass(frozen=True, slots=True)
class DemoOrder:
    """A Next Engine order nebridge imported (or held) during a demo."""

    ne_order_id: str
    state: str
    warehouse: str
    hold_reason: str | None


@dataclass(frozen=True)
class DemoContext:
    """What ``nebridge demo --wms NAME`` lends a plugin's demo.

    ``root`` is the demo's folder (``daemon.yaml``, ``state/`` go there). ``next_engine`` is
    the running Next Engine sandbox (``daemon.sandbox.SandboxServer``: ``base_url``,
    ``state``, ``ledger`` — see ``docs/sandbox.md``). ``install(configure_wms)`` writes the
    example ``daemon.yaml`` pointed at that sandbox (``configure_wms`` edits its ``wms``
    part), migrates the database and signs in to Next Engine; it returns the file's path.
    ``plant_unlinked_order()`` adds an order whose goods no WMS product links (it must end
    held). ``run_until_quiet()`` runs engine passes until nothing moves and returns their
    stage runs. ``connect_wms(approve)`` is ``nebridge wms connect``: ``approve(url)`` plays
    the person approving the WMS's permission page (an ``OSError`` from it — nebridge's
    receiver not listening yet — is retried). ``outbox()`` and ``orders()`` read what
    nebridge stored. ``info``/``table`` print; ``fail(message)`` ends the demo with exit 1.
    """

    root: Path
    next_engine: Any
    install: Callable[[Callable[[Any], None]], Path]
    plant_unlinked_order: Callable[[], None]
    run_until_quiet: Callable[[], list[DemoStage]]
    connect_wms: Callable[[Callable[[str], None]], str]
    outbox: Callable[[], list[DemoOutboxItem]]
    orders: Callable[[], list[DemoOrder]]
    free_port: Callable[[], int]
    info: Callable[[str], None]
    table: Callable[[str, list[str], list[list[Any]]], None]
    fail: Callable[[str], NoReturn]


@dataclass(frozen=True, slots=True)
class DemoSpec:
    """A demo a WMS connector plugin offers: ``nebridge demo --wms NAME``.

    ``run(ctx)`` plays the whole scenario in ``ctx.root`` and checks the end state; it
    returns when the check passed and calls ``ctx.fail`` (or raises :class:`SurfaceError`)
    when it did not. The demo's plugin is found as the connector plugin ``wms_<NAME>``.
    """

    name: str
    summary: str
    run: Callable[[DemoContext], None]


class SurfaceSpecs:
    """Hooks that add to nebridge's surface: commands, sandboxes, demos."""

    @hookspec
    def nebridge_cli_commands(self, options: Any, config_path: Path) -> Iterable[CliCommand]:
        """Return commands to mount in the root ``nebridge`` group (:class:`CliCommand`).

        Called only when ``nebridge NAME`` names no core command (so ``nebridge --help``
        stays fast and imports no plugin), and by ``nebridge plugins commands``, which lists
        them. ``config_path`` is the ``daemon.yaml`` in use. Import what the commands need
        inside them, not at module level: every command of nebridge loads the plugin.
        """

    @hookspec
    def nebridge_sandboxes(self) -> Iterable[SandboxSpec]:
        """Return the local sandboxes this plugin offers (:class:`SandboxSpec`).

        ``nebridge sandbox serve NAME`` serves one on loopback for demos, tests and plugin
        authors; ``nebridge sandbox list`` shows them. Import the sandbox inside ``serve``.
        """

    @hookspec
    def nebridge_demos(self) -> Iterable[DemoSpec]:
        """Return the demos this WMS connector plugin offers (:class:`DemoSpec`).

        ``nebridge demo --wms NAME`` starts the Next Engine sandbox, hands the demo a
        :class:`DemoContext` and reports its end; the plugin plays its WMS's side.
        """
