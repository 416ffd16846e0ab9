"""NE's search language (§2.3): ``fields``, ``<field>-<op>=value`` conditions, paging, sort.

Conditions are AND-ed. Comparisons follow SQL, as NE runs on a database: ``neq``/``nin``/
``nlike`` never match NULL (that is why ``nlikeornull`` exists); numbers compare numerically,
dates as ``YYYY-MM-DD HH:MM:SS`` strings; goods codes compare ignoring case when
``case_insensitive_goods_codes`` is on.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import islice
from typing import Any, TypeVar

from daemon.sandbox.clock import normalize_ne
from daemon.sandbox.errors import NEError
from daemon.sandbox.fields import FieldDef, Schema

T = TypeVar("T")
Test = Callable[["str | None"], bool]

OPERATORS: frozenset[str] = frozenset(
    {
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "in",
        "nin",
        "like",
        "nlike",
        "nlikeornull",
        "blank",
        "nblank",
        "null",
        "nnull",
    }
)
COMMON_PARAMS: frozenset[str] = frozenset(
    {"access_token", "refresh_token", "wait_flag", "fields", "offset", "limit", "sort"}
)
DEFAULT_LIMIT = 10_000


@dataclass(frozen=True)
class SearchOptions:
    """The config knobs the search engine honours."""

    limit_max: int = 10_000
    clamp_limit: bool = False
    in_max: int = 1000
    ci_codes: bool = True
    allow_slash_dates: bool = True
    reject_unknown_params: bool = False


@dataclass(frozen=True)
class Condition:
    """One parsed ``<field>-<op>=<value>`` condition."""

    field: FieldDef
    op: str
    raw: str
    test: Test


@dataclass
class Query:
    """A parsed search/count request."""

    fields: list[FieldDef]
    conditions: list[Condition]
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    sort: list[tuple[FieldDef, bool]] = field(default_factory=list)

    def index_values(self, name: str) -> set[str] | None:
        """Values an ``-eq``/``-in`` condition on ``name`` restricts results to (for indexes)."""
        for cond in self.conditions:
            if cond.field.name != name:
                continue
            if cond.op == "eq":
                return {cond.raw.strip()}
            if cond.op == "in":
                return {v.strip() for v in cond.raw.split(",")}
        return None

    def matches(self, record: Any) -> bool:
        """Whether ``record`` satisfies every condition."""
        return all(cond.test(cond.field.get(record)) for cond in self.conditions)


def _to_num(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _like_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    out: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append(re.escape(nxt))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _normalizer(fd: FieldDef, opts: SearchOptions) -> Callable[[str], Any]:
    """How a query value and a record value of this field are made comparable."""
    if fd.kind in ("int", "num"):

        def num(text: str) -> Any:
            value = _to_num(text.strip())
            if value is None:
                raise NEError("param_invalid", f"{fd.name}: not a number: {text!r}")
            return value

        return num
    if fd.kind == "date":

        def date(text: str) -> Any:
            value = normalize_ne(text, allow_slash=opts.allow_slash_dates)
            if value is None:
                raise NEError("param_invalid", f"{fd.name}: not a date: {text!r}")
            return value

        return date
    if fd.is_code and opts.ci_codes:
        return lambda text: text.casefold()
    return lambda text: text


def _record_key(fd: FieldDef, opts: SearchOptions) -> Callable[[str | None], Any]:
    """Converts a record value for comparison (``None`` stays ``None``)."""
    if fd.kind in ("int", "num"):
        return _to_num
    if fd.is_code and opts.ci_codes:
        return lambda v: None if v is None else v.casefold()
    return lambda v: v


def _make_test(fd: FieldDef, op: str, raw: str, opts: SearchOptions) -> Test:
    if op == "null":
        return lambda v: v is None
    if op == "nnull":
        return lambda v: v is not None
    if op == "blank":
        return lambda v: v is None or v == ""
    if op == "nblank":
        return lambda v: v is not None and v != ""
    if op in ("like", "nlike", "nlikeornull"):
        rx = _like_regex(raw, fd.is_code and opts.ci_codes)
        if op == "like":
            return lambda v: v is not None and rx.fullmatch(v) is not None
        if op == "nlike":
            return lambda v: v is not None and rx.fullmatch(v) is None
        return lambda v: v is None or rx.fullmatch(v) is None
    norm = _normalizer(fd, opts)
    key = _record_key(fd, opts)
    if op in ("in", "nin"):
        items = [part.strip() for part in raw.split(",")]
        if len(items) > opts.in_max:
            raise NEError("in_too_many", f"{fd.name}-{op}: {len(items)} > {opts.in_max}")
        wanted = {norm(item) for item in items}
        if op == "in":
            return lambda v: (k := key(v)) is not None and k in wanted
        return lambda v: (k := key(v)) is not None and k not in wanted
    target = norm(raw)
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "eq": lambda a, b: bool(a == b),
        "neq": lambda a, b: bool(a != b),
        "gt": lambda a, b: bool(a > b),
        "gte": lambda a, b: bool(a >= b),
        "lt": lambda a, b: bool(a < b),
        "lte": lambda a, b: bool(a <= b),
    }
    cmp = compare[op]

    def test(v: str | None) -> bool:
        k = key(v)
        return k is not None and cmp(k, target)

    return test


def _int_param(params: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = params.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise NEError("param_invalid", f"{name} is not an integer") from None
    if value < minimum:
        raise NEError("param_invalid", f"{name} must be >= {minimum}")
    return value


def parse_query(
    params: Mapping[str, str],
    schema: Schema,
    opts: SearchOptions,
    *,
    with_fields: bool,
    extra_params: Iterable[str] = (),
) -> Query:
    """Parse ``fields``, conditions, ``offset``/``limit`` and ``sort`` against ``schema``."""
    known = COMMON_PARAMS | set(extra_params)
    fields: list[FieldDef] = []
    if with_fields:
        names = [n.strip() for n in params.get("fields", "").split(",") if n.strip()]
        if not names:
            raise NEError("fields_missing")
        seen: set[str] = set()
        for name in names:
            if name not in schema:
                raise NEError("field_unknown", name)
            if name not in seen:
                seen.add(name)
                fields.append(schema[name])
    conditions: list[Condition] = []
    for key, raw in params.items():
        if key in known:
            continue
        if "-" not in key:
            if opts.reject_unknown_params:
                raise NEError("param_invalid", f"unknown parameter {key}")
            continue
        name, op = key.rsplit("-", 1)
        if op not in OPERATORS:
            raise NEError("operator_unknown", key)
        if name not in schema:
            raise NEError("field_unknown", name)
        conditions.append(Condition(schema[name], op, raw, _make_test(schema[name], op, raw, opts)))
    offset = _int_param(params, "offset", 0, 0)
    limit = _int_param(params, "limit", min(DEFAULT_LIMIT, opts.limit_max), 1)
    if limit > opts.limit_max:
        if not opts.clamp_limit:
            raise NEError("limit_too_large", f"{limit} > {opts.limit_max}")
        limit = opts.limit_max
    sort: list[tuple[FieldDef, bool]] = []
    for part in params.get("sort", "").split(","):
        part = part.strip()
        if not part:
            continue
        name, _, direction = part.rpartition("-")
        if direction not in ("asc", "desc") or not name:
            raise NEError("param_invalid", f"sort: {part}")
        if name not in schema:
            raise NEError("field_unknown", name)
        sort.append((schema[name], direction == "desc"))
    return Query(fields, conditions, offset, limit, sort)


def _sort_key(fd: FieldDef) -> Callable[[Any], Any]:
    native = fd.native
    if native is not None:

        def by_native(record: Any) -> Any:
            value = native(record)
            return (0, 0) if value is None else (1, value)

        return by_native
    get = fd.get
    if fd.kind in ("int", "num"):

        def by_num(record: Any) -> Any:
            value = _to_num(get(record))
            return (0, 0) if value is None else (1, value)

        return by_num

    def by_text(record: Any) -> Any:
        value = get(record)
        return (0, "") if value is None else (1, value)

    return by_text


def run_query(
    records: Iterable[T], query: Query, *, shuffle: random.Random | None = None
) -> list[T]:
    """Filter ``records`` (given in primary-key order), sort, and cut out the page."""
    matching: Iterable[T] = (r for r in records if query.matches(r))
    end = query.offset + query.limit
    if not query.sort and shuffle is None:
        return list(islice(matching, query.offset, end))
    rows = list(matching)
    if query.sort:
        for fd, descending in reversed(query.sort):
            rows.sort(key=_sort_key(fd), reverse=descending)
    elif shuffle is not None:
        shuffle.shuffle(rows)
    return rows[query.offset : end]


def count_query(records: Iterable[Any], query: Query) -> int:
    """How many ``records`` satisfy the conditions (``/count``)."""
    return sum(1 for r in records if query.matches(r))


def project(records: Sequence[Any], fields: Sequence[FieldDef]) -> list[dict[str, str | None]]:
    """Turn records into NE rows holding just the requested fields."""
    getters = [(fd.name, fd.get) for fd in fields]
    return [{name: get(r) for name, get in getters} for r in records]
