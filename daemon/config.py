"""Loading and validating ``daemon.yaml``.

The core sections are validated with pydantic models here; each plugin's section is validated
by the plugin's own model in :mod:`daemon.pluginmanager`. Every problem is reported with its
YAML path and line so the admin can fix all of them in one pass.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from hooks.credentials import SecretUnreadable as SecretUnreadable  # callers catch it here
from hooks.credentials import read_credential

if TYPE_CHECKING:  # requests and SQLAlchemy load only where they are used (CLI start-up)
    from hooks.http import HttpLimits

DEFAULT_CONFIG_PATH = Path("daemon.yaml")
CONFIG_ENV = "NEBRIDGE_CONFIG"
CLIENT_SECRET_ENV = "NEBRIDGE_NE_CLIENT_SECRET"
CLIENT_SECRET_CREDENTIAL = "nextengine-client-secret"
_CODE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")


def psycopg_url(url: str) -> str:
    """``url`` with a plain ``postgresql://`` (or ``postgres://``) scheme mapped to psycopg 3.

    SQLAlchemy reads the plain scheme as psycopg2, which nebridge does not ship; the
    ``postgres`` extra installs psycopg 3, so the usual URL an admin copies works as written.
    """
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NextEngineSettings(_Strict):
    """``nextengine:`` — where Next Engine lives and how this app is registered there."""

    api_base: str = "https://api.next-engine.org"
    login_base: str = "https://base.next-engine.org"
    client_id: str = ""
    client_secret: SecretStr | None = None
    redirect_uri: str = "http://127.0.0.1:8765/callback"
    token_file: Path | None = None
    page_size: int = Field(default=10000, ge=1, le=10000)
    #: A call ends at most ``connect_timeout_seconds + read_timeout_seconds`` after it starts,
    #: however slowly Next Engine answers (with ``wait_flag`` it may wait 60 min, silent).
    read_timeout_seconds: float = Field(default=3600.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    #: A larger answer is refused unread (outcome unknown, like a lost answer).
    max_response_mb: float = Field(default=100.0, gt=0)
    #: Once Next Engine starts answering, the whole answer must arrive within this.
    transfer_timeout_seconds: float = Field(default=300.0, gt=0)
    #: Sleeps before the client's own retries of calls Next Engine did not apply (overload,
    #: transient codes, requests that never left); ``None``: 10, 30, 60 s (5, 15, 30 s for
    #: requests that never left).
    retry_delays_seconds: tuple[Annotated[float, Field(ge=0)], ...] | None = None
    #: How long Next Engine work pauses after a maintenance answer.
    maintenance_pause_seconds: float = Field(default=1800.0, gt=0)
    #: After a read timeout, the company's lock is held this long more, so Next Engine can
    #: finish the abandoned request before the next one is sent (never two in flight).
    timeout_grace_seconds: float = Field(default=60.0, ge=0)

    @field_validator("api_base", "login_base", "redirect_uri")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
            raise ValueError(f"{value!r} is not an http(s) URL with a host name")
        return value


class HttpSettings(_Strict):
    """``http:`` — limits of the WMS connectors' HTTP calls (``ctx.http``, see hooks.http)."""

    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    #: The longest one call may take in all (connect, send, read the whole answer).
    deadline_seconds: float = Field(default=120.0, gt=0)
    #: A larger answer is refused unread.
    max_response_mb: float = Field(default=50.0, gt=0)

    def limits(self) -> HttpLimits:
        """These settings as the connectors' session limits."""
        from hooks.http import HttpLimits

        return HttpLimits(
            connect_timeout_seconds=self.connect_timeout_seconds,
            deadline_seconds=self.deadline_seconds,
            max_response_bytes=int(self.max_response_mb * 1024 * 1024),
        )


class ScheduleSettings(_Strict):
    """``schedule:`` — how often pipelines and the outbox dispatcher run."""

    interval_seconds: float = Field(default=60.0, gt=0)
    jitter_seconds: float = Field(default=5.0, ge=0)
    dispatch_interval_seconds: float = Field(default=10.0, gt=0)
    intake_poll_seconds: float = Field(default=1.0, gt=0)
    token_guard_minutes: float = Field(default=15.0, gt=0)


class NotifySettings(_Strict):
    """``notify:`` — when the notifier plugins are told about what waits for a person."""

    #: How often attention is compared with what was told, and due messages are sent.
    interval_seconds: float = Field(default=30.0, gt=0)
    #: A problem still open this long after its last message is told again.
    reminder_hours: float = Field(default=24.0, gt=0)
    #: More than ``digest_threshold`` new problems within ``digest_window_minutes``: one
    #: digest message lists them instead of one message each.
    digest_threshold: int = Field(default=10, ge=1)
    digest_window_minutes: float = Field(default=5.0, gt=0)
    #: A failed delivery is tried again after this, doubling up to ``retry_max_seconds``.
    retry_first_seconds: float = Field(default=30.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    #: A sink that failed this many times in a row is shown in ``attention``/``status``.
    failing_after_attempts: int = Field(default=3, ge=1)
    #: The database unreachable this long: the sinks are told directly (it cannot be stored).
    database_down_minutes: float = Field(default=10.0, gt=0)


class MetricsConfig(_Strict):
    """``metrics:`` — Prometheus metrics over HTTP (off unless a port is given)."""

    port: int = Field(default=0, ge=0, le=65535)
    host: str = "127.0.0.1"


class DispatchConfig(_Strict):
    """``dispatch:`` — how actions are executed against Next Engine."""

    queue_poll_seconds: float = Field(default=5.0, gt=0)
    queue_timeout_seconds: float = Field(default=300.0, gt=0)
    not_ready_attempts: int = Field(default=12, ge=1)
    batch_size: int = Field(default=500, ge=1, le=1000)
    #: Delay before an action Next Engine did not take (error, pause) is tried again.
    retry_seconds: float = Field(default=60.0, gt=0)
    #: Delay before a ship action whose order cannot be shipped yet is checked again.
    not_ready_retry_seconds: float = Field(default=300.0, gt=0)
    #: A stock upload whose answer was lost counts as "not applied" only when Next Engine's
    #: upload queue still shows no trace of it this long after it was sent.
    upload_settle_seconds: float = Field(default=60.0, ge=0)

    @property
    def retry(self) -> timedelta:
        """Delay before an action Next Engine did not take is tried again."""
        return timedelta(seconds=self.retry_seconds)

    @property
    def not_ready_retry(self) -> timedelta:
        """Delay before an order that cannot be shipped yet is checked again."""
        return timedelta(seconds=self.not_ready_retry_seconds)


class OrderImportConfig(_Strict):
    """``order_import:`` — how Next Engine orders become WMS instructions."""

    claim: Literal["none", "receipted", "tag"] = "none"
    claim_tag: str = Field(default="nebridge取込済", min_length=1, pattern=r"^[^\[\]]+$")
    overlap_minutes: float = Field(default=10.0, ge=0)


class WmsSettings(BaseModel):
    """``wms:`` — the connector and its own section (``wms.<connector>``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    connector: str = "csv"

    def connector_section(self) -> dict[str, Any]:
        """The raw ``wms.<connector>`` mapping, validated later by the connector's model."""
        extra = self.model_extra or {}
        section = extra.get(self.connector) or {}
        return dict(section) if isinstance(section, Mapping) else {}


class WarehouseConfig(_Strict):
    """One entry of ``warehouses:`` — a WMS warehouse (拠点)."""

    code: str
    name: str = ""
    ne_linked: bool = False
    import_orders: bool = False
    shop_ids: tuple[str, ...] = ()
    #: Ship orders nebridge did not import into this warehouse (for a WMS that also gets
    #: orders elsewhere); off: such a shipment is held with the reason, never shipped.
    ship_unimported_orders: bool = False

    @field_validator("code")
    @classmethod
    def _code_shape(cls, value: str) -> str:
        if not _CODE_RE.match(value):
            raise ValueError("use 1-32 letters, digits, '_', '-' or '.'")
        return value


class DaemonConfig(_Strict):
    """The whole of ``daemon.yaml`` as the engine sees it (plugin options stay raw here)."""

    state_dir: Path = Path("state")
    #: Where the secrets live as files (one per credential name), outside systemd too; the
    #: generated unit's ``LoadCredential=`` lines point here.
    credentials_dir: Path = Path("/etc/nebridge/credentials")
    #: The zone the CLI shows times in (an IANA name such as Asia/Tokyo); default: the
    #: system's (``TZ``, /etc/localtime). Storage is always UTC.
    timezone: str | None = None
    database_url: str | None = None
    log_level: str = "INFO"
    #: Fleet mode (PostgreSQL only): each ``<code>.yaml`` in this folder is one company
    #: (see daemon/fleet/companies.py and docs/fleet.md); unset: one implicit company.
    companies_dir: Path | None = None
    #: Fleet mode: how long a worker's hold on a company lasts unless renewed (renewed every
    #: third of it); a dead worker's companies are taken over after at most this plus one
    #: round (a third of it): 20 s keeps a takeover within 30 s (26.7 s at worst).
    fleet_lease_seconds: float = Field(default=20.0, ge=1.0, le=3600.0)
    #: Fleet mode: how many jobs of its companies a worker runs at once (one company never
    #: runs two of one job); its database connections grow with it. 8: about 1,300 idle
    #: companies per worker on a 60 s schedule at 150 ms Next Engine latency (derived from
    #: the measured 363 ms idle round, benchmarks/RESULTS.md "Fleet").
    fleet_job_slots: int = Field(default=8, ge=1, le=64)
    #: Fleet mode: how often a worker looks for added, changed or removed company files (and
    #: a changed daemon.yaml), applying a change once the file has stood still for one look
    #: (an editor's half-written save is not applied); 0: only on SIGHUP.
    companies_watch_seconds: float = Field(default=2.0, ge=0.0, le=3600.0)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as Asia/Tokyo or UTC"
            ) from None
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"{value!r} is not a log level: use DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("companies_dir")
    @classmethod
    def _fleet_needs_postgres(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        url = info.data.get("database_url") or ""
        if value is not None and not url.startswith("postgresql"):
            raise ValueError(
                "fleet mode (one file per company) needs PostgreSQL: set "
                "`database_url` to postgresql+psycopg://user@host/db, or remove "
                "`companies_dir` to run one company"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                f"{value!r} is not a database URL (e.g. sqlite:///state/nebridge.db "
                "or postgresql+psycopg://user@host/db)"
            ) from None
        return psycopg_url(value)

    nextengine: NextEngineSettings = NextEngineSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    dispatch: DispatchConfig = DispatchConfig()
    metrics: MetricsConfig = MetricsConfig()
    notify: NotifySettings = NotifySettings()
    http: HttpSettings = HttpSettings()
    order_import: OrderImportConfig = OrderImportConfig()
    wms: WmsSettings = WmsSettings()
    warehouses: tuple[WarehouseConfig, ...] = ()
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("warehouses")
    @classmethod
    def _unique_codes(cls, value: tuple[WarehouseConfig, ...]) -> tuple[WarehouseConfig, ...]:
        seen: set[str] = set()
        for wh in value:
            if wh.code in seen:
                raise ValueError(f"warehouse code {wh.code!r} appears twice; codes must be unique")
            seen.add(wh.code)
        return value

    @field_validator("warehouses")
    @classmethod
    def _one_catch_all_importer(
        cls, value: tuple[WarehouseConfig, ...]
    ) -> tuple[WarehouseConfig, ...]:
        catch_all = [w.code for w in value if w.import_orders and not w.shop_ids]
        if len(catch_all) > 1:
            raise ValueError(
                f"warehouses {', '.join(catch_all)} all import orders from every shop; when "
                "several warehouses import orders, give all but one of them `shop_ids`"
            )
        shops: dict[str, str] = {}
        for wh in value:
            for shop in wh.shop_ids if wh.import_orders else ():
                if shop in shops:
                    raise ValueError(
                        f"shop {shop} is routed to both {shops[shop]} and "
                        f"{wh.code}; route each shop to one warehouse"
                    )
                shops[shop] = wh.code
        return value

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugin_sections(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    # -- derived values ---------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        """``database_url`` or the default SQLite file inside ``state_dir``."""
        return self.database_url or f"sqlite:///{self.state_dir / 'nebridge.db'}"

    @property
    def token_file(self) -> Path:
        """Where Next Engine tokens are kept (mode 0600)."""
        return self.nextengine.token_file or self.state_dir / "nextengine-tokens.json"

    def enabled_plugins(self) -> list[str]:
        """Names of the plugins switched on in ``plugins:``, in file order."""
        return [name for name, sec in self.plugins.items() if bool(sec.get("enabled", False))]

    def plugin_options(self, name: str) -> dict[str, Any]:
        """A plugin's section without the ``enabled`` switch."""
        return {k: v for k, v in self.plugins.get(name, {}).items() if k != "enabled"}

    def warehouse(self, code: str) -> WarehouseConfig | None:
        """The warehouse with ``code``, if configured."""
        return next((wh for wh in self.warehouses if wh.code == code), None)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in ``daemon.yaml``, located by YAML path and line."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class ConfigError(Exception):
    """``daemon.yaml`` cannot be used; ``issues`` lists every problem found."""

    def __init__(
        self,
        source: Path,
        issues: Sequence[ConfigIssue],
        next_step: str = "Fix them and run `nebridge config check` again.",
    ) -> None:
        self.source = source
        self.issues = list(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(
            f"{source}: {len(self.issues)} problem(s) in the configuration:\n{lines}\n{next_step}"
        )


@dataclass
class LoadedConfig:
    """A validated configuration together with the raw document it came from."""

    path: Path
    config: DaemonConfig
    raw: CommentedMap = field(default_factory=CommentedMap)

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        """Best-effort 1-based line of a YAML path in the source file."""
        return yaml_line(self.raw, loc)


def yaml_path(loc: Iterable[str | int]) -> str:
    """Render a location tuple as ``plugins.tag_filter.tag`` / ``warehouses[1].code``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def yaml_line(raw: Any, loc: Iterable[str | int]) -> int | None:
    """Follow ``loc`` through a ruamel document and return the deepest line found."""
    node, line = raw, None
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        except (KeyError, AttributeError, TypeError):
            break
    return line


# -- plain problem messages -------------------------------------------------------------------

#: pydantic's error types in plain words (``{name}`` is filled from the error's context).
_PLAIN: dict[str, str] = {
    "missing": "this key is required",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be one of: {expected}",
    "enum": "must be one of: {expected}",
    "string_too_short": "must have at least {min_length} character(s)",
    "string_too_long": "must have at most {max_length} characters",
    "string_pattern_mismatch": "must match the pattern {pattern}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} items",
    "dict_type": "must be a mapping (`key: value` lines indented below it)",
    "model_type": "must be a mapping (`key: value` lines indented below it)",
    "model_attributes_type": "must be a mapping (`key: value` lines indented below it)",
    "list_type": "must be a list (`- item` lines)",
    "tuple_type": "must be a list (`- item` lines)",
    "path_type": "must be a path",
}
_SECRET_WORDS = ("secret", "password", "token", "key")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` — did you mean `x`?`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean `{close[0]}`?" if close else ""


def unknown_key(key: str, known: Sequence[str]) -> str:
    """The message for a key nothing reads: the closest known key, or the known keys."""
    hint = did_you_mean(key, known)
    if not hint and known:
        hint = f" (known keys: {', '.join(sorted(known))})"
    return f"unknown key `{key}`{hint}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``X``, ``tuple[X, ...]``, ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def model_keys(model: type[BaseModel], loc: Iterable[str | int] = ()) -> list[str]:
    """The keys a model (or the nested model at ``loc``) accepts; [] when not a model."""
    current = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = current.model_fields.get(part)
        nested = _model_in(info.annotation) if info is not None else None
        if nested is None:
            return []
        current = nested
    return [info.alias or name for name, info in current.model_fields.items()]


def plain_message(
    error: Mapping[str, Any], model: type[BaseModel], also: Sequence[str] = ()
) -> str:
    """One pydantic error in the words of ``daemon.yaml``: no "Input should be", no
    "Extra inputs are not permitted"; unknown keys come with the closest known key."""
    loc = tuple(error["loc"])
    kind = str(error["type"])
    if kind == "extra_forbidden":
        return unknown_key(str(loc[-1]), [*model_keys(model, loc[:-1]), *also])
    template = _PLAIN.get(kind)
    if template is not None:
        ctx = {
            k: int(v) if isinstance(v, float) and v.is_integer() else v
            for k, v in (error.get("ctx") or {}).items()
        }  # "greater than 0", not "0.0"
        try:
            text = template.format(**ctx)
        except (KeyError, IndexError):
            text = template
    else:
        text = str(error["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            text = text.removeprefix(prefix)
        text = text.replace("Input should be", "must be").replace("String should", "must")
    value = error.get("input")
    secret = any(w in str(part).lower() for part in loc for w in _SECRET_WORDS)
    if (
        kind != "missing"
        and not secret
        and isinstance(value, str | int | float | bool)
        and len(str(value)) <= 60
        and kind in _PLAIN
    ):
        text += f" (found: {value!r})"
    return text


def validation_issues(
    exc: ValidationError,
    model: type[BaseModel],
    raw: Any,
    prefix: Sequence[str | int] = (),
    also: Sequence[str] = (),
) -> list[ConfigIssue]:
    """Every error of ``exc`` as a located, plainly worded :class:`ConfigIssue`.

    ``prefix`` is where the validated section sits in the file; ``also`` names keys the
    section may hold besides the model's own (``enabled`` in a plugin's section).
    """
    issues = []
    for err in exc.errors():
        full = (*prefix, *err["loc"])
        issues.append(
            ConfigIssue(yaml_path(full), plain_message(err, model, also), yaml_line(raw, full))
        )
    return issues


def _plugin_switch_issues(data: Mapping[str, Any], raw: Any) -> list[ConfigIssue]:
    """Each plugin section's ``enabled`` is a real boolean, and no key looks like a typo of
    it (``enable: true`` would otherwise leave the plugin off without a word)."""
    issues = []
    sections = data.get("plugins")
    for name, section in sections.items() if isinstance(sections, Mapping) else ():
        if not isinstance(section, Mapping):
            continue
        if "enabled" in section and not isinstance(section["enabled"], bool):
            loc = ("plugins", name, "enabled")
            issues.append(
                ConfigIssue(
                    yaml_path(loc),
                    f"must be true or false (found: {section['enabled']!r})",
                    yaml_line(raw, loc),
                )
            )
        for key in section:
            if key != "enabled" and difflib.get_close_matches(str(key), ["enabled"], cutoff=0.75):
                loc = ("plugins", name, str(key))
                issues.append(
                    ConfigIssue(
                        yaml_path(loc), unknown_key(str(key), ["enabled"]), yaml_line(raw, loc)
                    )
                )
    return issues


def _round_trip_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    return yaml


#: A configuration is a few kB; anything past this is not one (or an attack on the parser).
MAX_YAML_BYTES = 1024 * 1024
#: Values a document may hold once its aliases (``*name``) are expanded.
MAX_YAML_VALUES = 100_000
#: Nesting of ``[...]``/``{...}`` the parser is let at (it slows down sharply, then fails).
MAX_YAML_FLOW_DEPTH = 64


def read_yaml(path: Path) -> CommentedMap:
    """Parse ``path`` keeping comments and positions; raise ConfigError on bad YAML.

    Bounded: a file over :data:`MAX_YAML_BYTES`, nesting deeper than the parser can follow, or
    aliases expanding past :data:`MAX_YAML_VALUES` values are refused before anything uses the
    document (an alias bomb never reaches validation).
    """
    try:
        with path.open("rb") as handle:
            raw_bytes = handle.read(MAX_YAML_BYTES + 1)
        if len(raw_bytes) > MAX_YAML_BYTES:
            raise ConfigError(
                path,
                [
                    ConfigIssue(
                        "",
                        (
                            f"the file is larger than {MAX_YAML_BYTES // 1024} kB, far more than "
                            f"any "
                            "configuration needs; check that --config names daemon.yaml"
                        ),
                    )
                ],
            )
        text = raw_bytes.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path,
            [ConfigIssue("", f"file not found (pass --config PATH or set {CONFIG_ENV})")],
            "To start one: `nebridge config example > daemon.yaml` and edit it (or see "
            "everything work first with `nebridge demo`).",
        ) from None
    except PermissionError as exc:
        raise ConfigError(
            path,
            [ConfigIssue("", f"cannot read: {exc}; let the user nebridge runs as read it")],
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [ConfigIssue("", f"cannot read: {exc}")]) from None
    if _flow_too_deep(text, MAX_YAML_FLOW_DEPTH):
        raise ConfigError(
            path,
            [
                ConfigIssue(
                    "",
                    (
                        f"invalid YAML: brackets nested more than {MAX_YAML_FLOW_DEPTH} deep; a "
                        "configuration needs a few levels"
                    ),
                )
            ],
        )
    try:
        data = _round_trip_yaml().load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [ConfigIssue("", f"invalid YAML: {problem}", line)]) from None
    except RecursionError:
        raise ConfigError(
            path,
            [
                ConfigIssue(
                    "",
                    "invalid YAML: nested too deeply to read; a configuration needs a few levels",
                )
            ],
        ) from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError(path, [ConfigIssue("", "the top level must be a mapping", 1)])
    if _expanded_values(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise ConfigError(
            path,
            [
                ConfigIssue(
                    "",
                    (
                        f"the document holds more than {MAX_YAML_VALUES:,} values once its aliases "
                        "(*name) are expanded, or an alias refers to itself (an alias bomb?); "
                        "write the "
                        "values out or use fewer aliases"
                    ),
                )
            ],
        )
    return data


def _flow_too_deep(text: str, limit: int) -> bool:
    """True when ``[``/``{`` nest deeper than ``limit`` (quoted text and comments skipped)."""
    depth, quote, comment, escaped, previous = 0, "", False, False, "\n"
    for char in text:
        if comment:
            comment = char != "\n"
        elif quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char == "#" and previous in " \t\n":
            comment = True
        elif char in "\"'" and depth:
            quote = char
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth = max(depth - 1, 0)
        previous = char
    return False


def _expanded_values(root: Any, limit: int) -> int:
    """How many values ``root`` holds with every alias expanded (counting stops past
    ``limit``; a self-referring alias counts as past it). Linear in the parsed nodes."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, Mapping | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            return limit + 1
        open_ids.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, Mapping) else node
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        open_ids.discard(key)
        sizes[key] = total
        return total

    try:
        return size(root)
    except RecursionError:
        return limit + 1


def _plain(node: Any) -> Any:
    """Convert ruamel containers to plain dicts and lists."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_config(path: Path) -> LoadedConfig:
    """Read and validate the core of ``daemon.yaml``; relative paths resolve next to it."""
    return parse_config(read_yaml(path), path)


def parse_config(raw: CommentedMap, path: Path) -> LoadedConfig:
    """Validate an already parsed document as if it were the file at ``path``."""
    config = validate_document(_plain(raw), raw, path)
    config = _resolve_paths(config, path.resolve().parent)
    blocker = not_a_folder(config.state_dir)
    if blocker is not None:
        raise ConfigError(
            path,
            [
                ConfigIssue(
                    "state_dir",
                    f"{blocker} is a file, not a folder; point state_dir at a folder (it "
                    "is created if missing) or move the file away",
                    yaml_line(raw, ("state_dir",)),
                )
            ],
        )
    return LoadedConfig(path=path, config=config, raw=raw)


def validate_document(data: Mapping[str, Any], raw: Any, path: Path) -> DaemonConfig:
    """Validate plain ``data`` as a whole configuration (paths left as written), or raise
    :class:`ConfigError` naming ``path`` with every problem located by line in ``raw``.

    Shared by ``daemon.yaml`` and the fleet's company files (daemon/fleet/companies.py).
    """
    issues = _plugin_switch_issues(data, raw)
    try:
        config = DaemonConfig.model_validate(data)
    except ValidationError as exc:
        issues = validation_issues(exc, DaemonConfig, raw) + issues
    if issues:
        raise ConfigError(path, issues)
    return config


def _resolve_paths(config: DaemonConfig, base: Path) -> DaemonConfig:
    state_dir = config.state_dir if config.state_dir.is_absolute() else base / config.state_dir
    ne = config.nextengine
    if ne.token_file is not None and not ne.token_file.is_absolute():
        ne = ne.model_copy(update={"token_file": base / ne.token_file})
    db = config.database_url
    if db and db.startswith("sqlite:///") and not db.startswith("sqlite:////"):
        rel = db.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            db = f"sqlite:///{base / rel}"
    credentials = config.credentials_dir
    if not credentials.is_absolute():
        credentials = base / credentials
    companies = config.companies_dir
    if companies is not None and not companies.is_absolute():
        companies = base / companies
    return config.model_copy(
        update={
            "state_dir": state_dir,
            "nextengine": ne,
            "database_url": db,
            "credentials_dir": credentials,
            "companies_dir": companies,
        }
    )


def resolve_path(value: str | Path, config_path: Path) -> Path:
    """Resolve a path option of a plugin or connector relative to the config file."""
    p = Path(value)
    return p if p.is_absolute() else config_path.resolve().parent / p


def client_secret(config: DaemonConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The Next Engine client secret: the credential file (systemd's copy, else the one in
    ``credentials_dir``), then the environment, then the file.

    Raises :class:`SecretUnreadable` when the credential exists but cannot be used.
    """
    env = os.environ if env is None else env
    found = read_credential(CLIENT_SECRET_CREDENTIAL, config.credentials_dir, env)
    if found is not None:
        return found
    if env.get(CLIENT_SECRET_ENV):
        return env[CLIENT_SECRET_ENV]
    secret = config.nextengine.client_secret
    return secret.get_secret_value() if secret else None


def not_a_folder(path: Path) -> Path | None:
    """The first existing part of ``path`` that is not a folder (so ``path`` can never be
    one), or ``None``."""
    for part in (path, *path.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def config_path_from(option: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """``--config`` if given, else ``$NEBRIDGE_CONFIG``, else ``./daemon.yaml``."""
    env = os.environ if env is None else env
    if option is not None:
        return option
    return Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else DEFAULT_CONFIG_PATH
