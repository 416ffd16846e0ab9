"""Shared CLI plumbing: the context object, output helpers and error exits.

Imported by ``nebridge --help`` (for :class:`CliGroup`), so it imports nothing heavy at
module level: rich, the configuration (pydantic) and the store are imported by the functions
that use them (see the rule in ``daemon/cli/__init__.py``).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
import typer.core

if TYPE_CHECKING:
    from rich.console import Console

    from daemon.config import LoadedConfig
    from daemon.fleet.companies import Company
    from daemon.fleet.runtime import FleetDatabase
    from daemon.nextengine.tokens import TokenStore
    from daemon.runtime import Runtime


@cache
def err_console() -> Console:
    """The rich console on stderr (made on first use: rich is not imported by ``--help``)."""
    from rich.console import Console

    return Console(stderr=True)


@dataclass
class AppContext:
    """What every command gets: where the configuration lives, and which company it is about.

    The one place a command's company is resolved (issue #19): :meth:`load` gives the
    company's effective configuration — in fleet mode its ``database_url`` reaches the
    company's own schema, so every service opening the database from it sees the company's
    tables — and :meth:`runtime` its engine (tokens in the vault). Without
    ``companies_dir`` there is one company, ``default`` (daemon.yaml itself, as always); in
    fleet mode a per-company command needs ``--company CODE`` (or ``$NEBRIDGE_COMPANY``) and
    is refused with the list of codes without it, while the fleet-wide commands
    (:data:`FLEET_WIDE`) get daemon.yaml.
    """

    config_path: Path
    #: ``--company`` / ``$NEBRIDGE_COMPANY`` (None: not given).
    company: str | None = None
    #: The running command's words after ``nebridge`` (``plugins enable``), set by :func:`get`.
    command: str = ""
    #: How the company was given, for messages: ``--company acme`` or ``NEBRIDGE_COMPANY=acme``.
    company_given: str = ""
    #: The company :meth:`load` resolved in fleet mode (None in a single-company installation).
    resolved: Company | None = None
    #: daemon.yaml as :meth:`load_base` read it.
    base: LoadedConfig | None = None
    #: The company's configuration as :meth:`load` resolved it (read once per command).
    company_loaded: LoadedConfig | None = None

    @classmethod
    def create(cls, option: Path | None, company: str | None = None) -> AppContext:
        """Resolve ``--config`` / ``$NEBRIDGE_CONFIG`` / ``./daemon.yaml`` and ``--company`` /
        ``$NEBRIDGE_COMPANY``."""
        import os

        from daemon.config import config_path_from

        from_env = os.environ.get(COMPANY_ENV) or None
        return cls(
            config_path=config_path_from(option),
            company=company or from_env,
            company_given=(
                f"--company {company}"
                if company
                else f"{COMPANY_ENV}={from_env}"
                if from_env
                else ""
            ),
        )

    def load_base(self) -> LoadedConfig:
        """daemon.yaml itself, or exit 1 with every problem listed."""
        from daemon.config import ConfigError, load_config
        from daemon.logsetup import configure_logging

        if self.base is None:
            try:
                self.base = load_config(self.config_path)
            except ConfigError as exc:
                fail(str(exc))
            configure_logging(self.base.config.log_level)
        return self.base

    @property
    def fleet(self) -> bool:
        """True when daemon.yaml sets ``companies_dir``."""
        return self.load_base().config.companies_dir is not None

    def load(self) -> LoadedConfig:
        """The configuration of the command's company: daemon.yaml in a single-company
        installation (and for a fleet-wide command without ``--company``), else the company's
        effective configuration. Exits 1 when the company cannot be resolved."""
        base = self.load_base()
        if base.config.companies_dir is None:
            from daemon.fleet.companies import DEFAULT_COMPANY

            if self.company not in (None, DEFAULT_COMPANY):
                fail(
                    f"--company {self.company}: {self.config_path} sets no `companies_dir`, "
                    f"so this installation serves one company, `{DEFAULT_COMPANY}`; drop "
                    "--company (and NEBRIDGE_COMPANY), or set `companies_dir` for fleet mode "
                    "(docs/fleet.md)"
                )
            return base
        if self.company is None:
            if self.command.split(" ")[0] in FLEET_WIDE or self.command in FLEET_WIDE:
                return base
            fail(
                f"`nebridge {self.command}` works on one company, and {self.config_path} "
                f"serves several (fleet mode): pass --company CODE (or set NEBRIDGE_COMPANY);"
                f" companies: {', '.join(self._codes()) or 'none yet'}"
            )
        if self.company_loaded is None:
            self.company_loaded = self._company_config(base)
        return self.company_loaded

    def _codes(self) -> list[str]:
        from daemon.config import ConfigError
        from daemon.fleet.companies import Companies

        try:
            return list(Companies(self.load_base()).companies)
        except ConfigError as exc:
            fail(str(exc))

    def _company_config(self, base: LoadedConfig) -> LoadedConfig:
        """The company's file on top of daemon.yaml (the other files are not read), or
        exit 1 saying why."""
        from daemon.config import LoadedConfig, read_yaml
        from daemon.fleet.companies import CODE_RE, Refusal, load_one

        code = self.company or ""
        if not CODE_RE.match(code):
            fail(
                f"--company {code!r} is not a company code (1-63 lower-case letters, digits, "
                "'_' or '-'); `nebridge companies list` shows the codes"
            )
        company = load_one(base, code)
        if company is None:
            fail(
                f"no company {code!r}: {base.config.companies_dir} has no {code}.yaml; "
                f"companies: {', '.join(self._codes()) or 'none yet'} (`nebridge companies "
                "list`), or create the file (docs/fleet.md)"
            )
        if isinstance(company, Refusal):
            fail(
                f"company {code!r} is refused: {company}\nFix the file and run `nebridge "
                "config check` again."
            )
        self.resolved = company
        assert company.path is not None
        from daemon.fleet.admin import company_database_url

        config = company.config.model_copy(
            update={"database_url": company_database_url(base, code)}
        )
        return LoadedConfig(company.path, config, read_yaml(company.path))

    def edit_target(self) -> tuple[Path, dict[str, Any]]:
        """The file a ``plugins``/``warehouses`` change edits and the keywords of
        :func:`~daemon.config_admin.change_plugin` that validate it: daemon.yaml, or in fleet
        mode the company's file on top of daemon.yaml."""
        self.load()
        company, base = self.resolved, self.load_base()
        if company is None or company.path is None:
            return self.config_path, {}
        from daemon.config import LoadedConfig
        from daemon.fleet.companies import load_company

        def parse(raw: Any, path: Path) -> LoadedConfig:
            return LoadedConfig(path, load_company(path, company.code, base, raw).config, raw)

        return company.path, {"parse": parse, "inherit": base.raw}

    def fleet_database(self) -> FleetDatabase | None:
        """In fleet mode with a company, the fleet's shared database (the vault; close it
        when done); None in a single-company installation. Exits 1 if it cannot be used."""
        if self.resolved is None:
            return None
        from daemon.fleet.admin import fleet_database
        from daemon.fleet.leases import FleetUnavailable

        try:
            return fleet_database(self.load_base())
        except FleetUnavailable as exc:
            fail(str(exc))

    @property
    def company_code(self) -> str:
        """The code of the company :meth:`load` resolved in fleet mode (``""`` otherwise): what
        the commands a fix suggests must carry as ``--company``."""
        return self.resolved.code if self.resolved is not None else ""

    def token_store(self, fleet: FleetDatabase | None) -> TokenStore | None:
        """The company's token pair in the vault of ``fleet`` (None: the token file of a
        single-company installation); exits 1 saying why the vault cannot be used (no key)."""
        if fleet is None or self.resolved is None:
            return None
        from daemon.fleet.vault import VaultError

        try:
            return fleet.vault.store(self.resolved.code)
        except VaultError as exc:
            fail(str(exc))

    def runtime(self, loaded: LoadedConfig) -> Runtime:
        """The engine of the command's company (``loaded`` from :meth:`load`; close it when
        done): in fleet mode its own tables and its token pair in the vault. Raises
        :class:`~daemon.config.ConfigError` as :func:`~daemon.runtime.build_runtime` does."""
        if self.resolved is None:
            from daemon.runtime import build_runtime

            return build_runtime(self.config_path, loaded=loaded)
        from daemon.fleet.leases import FleetUnavailable
        from daemon.fleet.runtime import CompanyNotMigrated, company_runtime

        try:
            return company_runtime(self.load_base(), self.resolved)
        except (CompanyNotMigrated, FleetUnavailable) as exc:
            fail(str(exc))


#: The environment variable naming the company (as ``--company``).
COMPANY_ENV = "NEBRIDGE_COMPANY"
#: Commands (first word, or whole path) about the installation or the fleet as a whole: in
#: fleet mode they run without ``--company`` on daemon.yaml.
FLEET_WIDE = frozenset(
    {
        "run",
        "companies",
        "config",
        "db",
        "systemd",
        "sandbox",
        "demo",
        "status",
        "plugins list",
        "plugins info",
        "plugins new",
        "plugins commands",
        "notify test",
    }
)

#: Commands (first word, or whole path) that cover every company and have no per-company
#: form: ``--company`` (or ``$NEBRIDGE_COMPANY``) is a usage error there, never ignored.
#: (``run`` is refused without ``--once`` by the command itself.) The same set as
#: ``hooks.notify.EVERY_COMPANY``, the hints left without ``--company`` (not imported here:
#: ``hooks`` is heavy at start-up; a test keeps the two equal).
EVERY_COMPANY = frozenset({"companies", "config", "systemd", "demo", "plugins new"})


def get(ctx: typer.Context) -> AppContext:
    """The AppContext of the running command."""
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    words: list[str] = []
    node: Any = ctx  # click's context (typer's Context subclasses it)
    while node.parent is not None:
        words.append(node.info_name or "")
        node = node.parent
    obj.command = " ".join(reversed(words))
    _json_requested[-1] = bool(ctx.params.get("as_json"))
    if obj.company is not None and (
        obj.command in EVERY_COMPANY or obj.command.split(" ")[0] in EVERY_COMPANY
    ):
        fail(
            f"`nebridge {obj.command}` covers every company (it reads or writes daemon.yaml "
            "and the fleet as a whole), so it takes no company: "
            + (
                f"unset {COMPANY_ENV} (set to {obj.company})"
                if obj.company_given.startswith(COMPANY_ENV)
                else f"drop {obj.company_given}"
            ),
            code=2,
        )
    return obj


class CliGroup(typer.core.TyperGroup):
    """The root command: a database that cannot be used, or a path the user may not write, ends
    any command with one line.

    Every command reaches the database through :func:`daemon.store.engine.make_engine`,
    whose errors already say where (host, port, database — never the password) and what to
    do; here they become that one line on stderr and exit 1 instead of a traceback.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Take the global ``--config PATH`` and ``--company CODE`` anywhere on the line, as
        git takes ``-C``: ``nebridge run --once --config x.yaml`` works like ``nebridge
        --config x.yaml run --once``."""
        _json_requested[-1] = (
            "--json" in args[: args.index("--")] if "--" in args else ("--json" in args)
        )  # until the command itself says (see get)
        return list(super().parse_args(ctx, hoist_config(args)))

    def invoke(self, ctx: Any) -> Any:  # a click context (typer vendors click)
        """Run the command; turn database errors into :func:`fail`. Run for a company, every
        command its output suggests names the company (:mod:`daemon.company_output`)."""
        from daemon.company_output import commands_for_company

        def company() -> str:
            return (ctx.obj.company or "") if isinstance(ctx.obj, AppContext) else ""

        with commands_for_company(company):
            return self._invoke(ctx)

    def _invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:  # a usage error of a --json command: JSON too
            exc.message = plain_usage(exc)
            if wants_json():
                print_json({"error": exc.format_message(), "exit_code": exc.exit_code})
            raise
        except OSError as exc:
            if exc.filename is None:  # not about a path (a socket, a pipe): not ours to word
                raise
            # e.g. state_dir not created yet and the service user may not create it
            fail(
                f"cannot use {exc.filename}: {exc.strerror or exc}; run the command as a user "
                "who may write there (the service user, or with sudo), or create the folder "
                "for it first: `sudo install -d -o nebridge -g nebridge -m 0700 FOLDER`"
            )
        except Exception as exc:
            store = sys.modules.get("daemon.store.engine")  # not imported: not raised
            if store is not None and isinstance(
                exc, (store.DatabaseUnavailable, store.DatabaseNotMigrated)
            ):
                fail(str(exc))
            raise


def plain_usage(exc: typer.BadParameter) -> str:
    """The message of a value typer refused, in plain words: typer checks option values with
    pydantic, whose wording ("Input should be a valid integer, unable to parse string as an
    integer", "Value error, …") would reach the admin; said as ``daemon.yaml``'s problems
    are ("must be a whole number (found: 'abc')"). Click names the option before it."""
    cause = exc.__cause__
    pydantic = sys.modules.get("pydantic")
    if pydantic is None or not isinstance(cause, pydantic.ValidationError):
        return exc.message
    from daemon.config import plain_message

    return "; ".join(plain_message(error, pydantic.BaseModel) for error in cause.errors())


#: The global options every subcommand accepts wherever they are written (with their value).
GLOBAL_FLAGS = ("--config", "-c", "--company")


def hoist_config(args: list[str]) -> list[str]:
    """``args`` with every global option (``--config PATH`` / ``--config=PATH`` / ``-c PATH``,
    ``--company CODE`` / ``--company=CODE``) moved to the front (before the subcommand);
    nothing after ``--`` is touched."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in GLOBAL_FLAGS and i + 1 < len(args):
            front += args[i : i + 2]
            i += 2
            continue
        (front if arg.startswith(("--config=", "--company=")) else rest).append(arg)
        i += 1
    return front + rest


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error to stderr and exit with ``code``.

    A command run with ``--json`` also gets the error as JSON on stdout
    (``{"error": message, "exit_code": code}``), so a script never parses an empty answer.
    """
    if wants_json():
        print_json({"error": message, "exit_code": code})
    from rich.markup import escape

    err_console().print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
    )
    raise typer.Exit(code)


def wants_json() -> bool:
    """Whether the running command was given ``--json`` (its ``as_json`` parameter)."""
    return _json_requested[-1]


#: Set by :func:`get` from the running command's ``--json`` (the newest command wins).
_json_requested = [False]


def print_json(data: Any) -> None:
    """Machine output: JSON on stdout, unchanged by terminal detection."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Human output: a rich table (plain text when not a terminal). Cells are text, never
    markup: a WMS file's ``[column]`` or ``[red]`` is shown as written, not eaten."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), show_lines=False)
    for col in columns:
        table.add_column(Text(col))
    for row in rows:
        table.add_row(*[Text("" if v is None else str(v)) for v in row])
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def info(message: str) -> None:
    """A human progress/info line on stderr (keeps stdout clean for --json); never wrapped,
    so the commands it names stay copyable."""
    err_console().print(message, highlight=False, markup=False, soft_wrap=True)


# -- one output style for every command (human output; --json keeps raw values) -------------


#: The largest ``--limit`` any listing takes (a bigger number is a usage error, exit 2).
LIMIT_MAX = 100_000


def limit_option(help_text: str) -> Any:
    """The ``--limit N`` option of a listing: 1 to :data:`LIMIT_MAX`, else a usage error."""
    return typer.Option(
        "--limit",
        metavar="N",
        callback=_check_limit,
        help=f"{help_text.rstrip('.')} (1-{LIMIT_MAX}).",
    )


def _check_limit(value: int) -> int:
    """Refuse a limit outside 1 to :data:`LIMIT_MAX` in plain words (exit 2)."""
    if not 1 <= value <= LIMIT_MAX:
        raise typer.BadParameter(f"{value} is not between 1 and {LIMIT_MAX}")
    return value


def yes_no(value: bool | None) -> str:
    """The one boolean style of human output: ``yes`` / ``no`` (``-`` when unknown)."""
    return "-" if value is None else "yes" if value else "no"


def display_zone(loaded: LoadedConfig | None = None) -> tzinfo | None:
    """The zone times are shown in: ``timezone`` of ``daemon.yaml``, else the system's."""
    from zoneinfo import ZoneInfo

    name = loaded.config.timezone if loaded is not None else None
    return ZoneInfo(name) if name else None


#: An ISO 8601 time with its offset inside a text (a plugin's link detail).
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)")


def times_in_zone(text: str, zone: tzinfo | None) -> str:
    """``text`` with each ISO 8601 time that carries an offset shown as :func:`when` shows
    times: plugins word a link's state without knowing the zone daemon.yaml shows times in
    (Logikura: ``access token until 2026-12-04T18:15:13.953036+00:00``)."""
    return _ISO_TIME.sub(lambda found: when(found.group(0), zone), text)


def when(moment: datetime | str | None, zone: tzinfo | None = None) -> str:
    """A moment (or its ISO 8601 text) as ISO 8601 with its offset, to the second, in
    ``zone`` (default: the system's zone): ``2026-12-03T20:43:02+09:00``; ``-`` for none.
    Naive values are UTC, as everything nebridge stores."""
    if moment is None or moment == "":
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).isoformat(timespec="seconds")
