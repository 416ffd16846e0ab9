"""Search conditions and paging for NE ``/search`` and ``/count`` endpoints.

Conditions are ``<field>-<op>=<value>`` form parameters, all AND-ed (reference §2.3). Pages are
fetched with ``offset``/``limit`` until a page comes back short. An ``in``/``nin`` list longer
than NE accepts is split into several searches whose results are merged: ``in`` chunks are
concatenated (or merge-sorted when a sort is given), ``nin`` chunks are intersected.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal, cast, get_args

from daemon.nextengine.dates import format_ne_datetime

Op = Literal[
    "eq", "neq", "gt", "gte", "lt", "lte", "in", "nin",
    "like", "nlike", "nlikeornull", "blank", "nblank", "null", "nnull",
]  # fmt: skip
OPERATORS: frozenset[str] = frozenset(get_args(Op))
LIST_OPS = frozenset({"in", "nin"})

SearchValue = str | int | Decimal | datetime
Row = dict[str, str | None]
PostFn = Callable[[str, Mapping[str, str]], Mapping[str, Any]]
"""Sends one request (path, form parameters) and returns NE's successful JSON answer."""

DEFAULT_PAGE_SIZE = 10000
DEFAULT_IN_MAX = 1000
_FIELD = re.compile(r"^[A-Za-z0-9_]+$")
_SORT = re.compile(r"^([A-Za-z0-9_]+)-(asc|desc)$")


class Resource(StrEnum):
    """The NE resources the client searches (``/api_v1_<resource>/search``)."""

    RECEIVEORDER_BASE = "receiveorder_base"
    RECEIVEORDER_ROW = "receiveorder_row"
    MASTER_GOODS = "master_goods"
    MASTER_STOCK = "master_stock"
    SYSTEM_QUE = "system_que"


def value_text(value: SearchValue) -> str:
    """A condition value as NE expects it (dates as JST ``YYYY-MM-DD HH:MM:SS``)."""
    if isinstance(value, bool):
        raise TypeError("pass 0/1 instead of a bool in search conditions")
    if isinstance(value, datetime):
        return format_ne_datetime(value)
    return str(value)


def _field(name: str) -> str:
    if not _FIELD.match(name):
        raise ValueError(f"not a valid NE field name: {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``<field>-<op>`` condition; ``values`` holds 0 (null ops), 1 or many (in/nin)."""

    field: str
    op: Op
    values: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The form parameter name, e.g. ``receive_order_id-in``."""
        return f"{self.field}-{self.op}"

    def text(self, values: Sequence[str] | None = None) -> str:
        """The form parameter value (``values`` overrides the list for a chunk)."""
        return ",".join(self.values if values is None else values)


class Where:
    """An immutable, chainable set of AND-ed conditions.

    >>> Where().eq("receive_order_order_status_id", 20).in_("receive_order_id", [1, 2])
    """

    __slots__ = ("conditions",)

    def __init__(self, conditions: Iterable[Condition] = ()) -> None:
        self.conditions: tuple[Condition, ...] = ()
        keys: set[str] = set()
        for cond in conditions:
            if cond.op not in OPERATORS:
                raise ValueError(f"unknown NE search operator {cond.op!r}")
            if cond.key in keys:
                raise ValueError(f"condition {cond.key} given twice; NE keeps only one")
            keys.add(cond.key)
            self.conditions += (cond,)

    def __repr__(self) -> str:
        return f"Where({list(self.conditions)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Where) and self.conditions == other.conditions

    def __hash__(self) -> int:
        return hash(self.conditions)

    def _add(self, name: str, op: Op, values: tuple[str, ...]) -> Where:
        return Where((*self.conditions, Condition(_field(name), op, values)))

    def _one(self, name: str, op: Op, value: SearchValue) -> Where:
        return self._add(name, op, (value_text(value),))

    def _many(self, name: str, op: Op, values: Iterable[SearchValue]) -> Where:
        texts = tuple(dict.fromkeys(value_text(v) for v in values))  # de-duplicated, in order
        if any("," in t for t in texts):
            raise ValueError(f"{name}-{op}: NE cannot match values containing a comma")
        return self._add(name, op, texts)

    def eq(self, name: str, value: SearchValue) -> Where:
        """``name = value``."""
        return self._one(name, "eq", value)

    def neq(self, name: str, value: SearchValue) -> Where:
        """``name <> value``."""
        return self._one(name, "neq", value)

    def gt(self, name: str, value: SearchValue) -> Where:
        """``name > value``."""
        return self._one(name, "gt", value)

    def gte(self, name: str, value: SearchValue) -> Where:
        """``name >= value``."""
        return self._one(name, "gte", value)

    def lt(self, name: str, value: SearchValue) -> Where:
        """``name < value``."""
        return self._one(name, "lt", value)

    def lte(self, name: str, value: SearchValue) -> Where:
        """``name <= value``."""
        return self._one(name, "lte", value)

    def in_(self, name: str, values: Iterable[SearchValue]) -> Where:
        """``name IN (values)``; an empty list matches nothing (no request is sent)."""
        return self._many(name, "in", values)

    def nin(self, name: str, values: Iterable[SearchValue]) -> Where:
        """``name NOT IN (values)``; an empty list is no condition."""
        return self._many(name, "nin", values)

    def like(self, name: str, pattern: str) -> Where:
        """``name LIKE pattern`` (``%`` wildcards)."""
        return self._one(name, "like", pattern)

    def nlike(self, name: str, pattern: str) -> Where:
        """``name NOT LIKE pattern``."""
        return self._one(name, "nlike", pattern)

    def nlikeornull(self, name: str, pattern: str) -> Where:
        """``name NOT LIKE pattern OR name IS NULL``."""
        return self._one(name, "nlikeornull", pattern)

    def blank(self, name: str) -> Where:
        """``name`` is NULL or empty."""
        return self._add(name, "blank", ())

    def nblank(self, name: str) -> Where:
        """``name`` is neither NULL nor empty."""
        return self._add(name, "nblank", ())

    def null(self, name: str) -> Where:
        """``name IS NULL``."""
        return self._add(name, "null", ())

    def nnull(self, name: str) -> Where:
        """``name IS NOT NULL``."""
        return self._add(name, "nnull", ())


def asc(name: str) -> str:
    """The ``sort`` value for ascending ``name``."""
    return f"{_field(name)}-asc"


def desc(name: str) -> str:
    """The ``sort`` value for descending ``name``."""
    return f"{_field(name)}-desc"


def endpoint_path(resource: str, verb: str) -> str:
    """``/api_v1_<resource>/<verb>``."""
    if not re.match(r"^[a-z0-9_]+$", resource):
        raise ValueError(f"not an NE resource name: {resource!r}")
    return f"/api_v1_{resource}/{verb}"


def field_list(fields: str | Iterable[str]) -> list[str]:
    """``fields`` as a checked list (a comma-separated string is accepted too)."""
    names = fields.split(",") if isinstance(fields, str) else list(fields)
    result = [_field(name.strip()) for name in names if name.strip()]
    if not result:
        raise ValueError("a search needs at least one field")
    return result


@dataclass(frozen=True, slots=True)
class _Plan:
    """The parameter sets of one logical search: one per ``in``/``nin`` chunk."""

    mode: Literal["single", "in", "nin", "empty"]
    param_sets: tuple[dict[str, str], ...]


def _plan(where: Where | None, in_max: int) -> _Plan:
    if in_max < 1:
        raise ValueError("in_max must be at least 1")
    base: dict[str, str] = {}
    long: Condition | None = None
    for cond in where.conditions if where else ():
        if cond.op == "in" and not cond.values:
            return _Plan("empty", ())
        if cond.op == "nin" and not cond.values:
            continue
        if cond.op in LIST_OPS and len(cond.values) > in_max:
            if long is not None:
                raise ValueError(f"only one in/nin list may exceed {in_max} values")
            long = cond
        else:
            base[cond.key] = cond.text()
    if long is None:
        return _Plan("single", (base,))
    sets = tuple(
        {**base, long.key: long.text(long.values[i : i + in_max])}
        for i in range(0, len(long.values), in_max)
    )
    return _Plan("in" if long.op == "in" else "nin", sets)


def _pages(post: PostFn, path: str, params: Mapping[str, str], page_size: int) -> Iterator[Row]:
    offset = 0
    while True:
        body = post(path, {**params, "offset": str(offset), "limit": str(page_size)})
        rows = cast(list[Row], body.get("data") or [])
        yield from rows
        if len(rows) < page_size:
            return
        offset += page_size


def _sort_key(name: str) -> Callable[[Row], tuple[int, Decimal, str]]:
    def key(row: Row) -> tuple[int, Decimal, str]:
        value = row.get(name)
        if value is None:
            return (0, Decimal(0), "")
        try:
            return (1, Decimal(value), "")
        except InvalidOperation:
            return (2, Decimal(0), value.casefold())

    return key


def _intersect(streams: list[Iterator[Row]]) -> Iterator[Row]:
    """Rows present in every stream (as a multiset), in the first stream's order."""
    first = list(streams[0])
    common = Counter(tuple(sorted(r.items())) for r in first)
    for stream in streams[1:]:
        common &= Counter(tuple(sorted(r.items())) for r in stream)
    for row in first:
        ident = tuple(sorted(row.items()))
        if common[ident] > 0:
            common[ident] -= 1
            yield row


def iter_search(
    post: PostFn,
    resource: str,
    fields: str | Iterable[str],
    *,
    where: Where | None = None,
    sort: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    in_max: int = DEFAULT_IN_MAX,
) -> Iterator[Row]:
    """Yield every row of a search, page by page (``page_size`` rows per request)."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    names = field_list(fields)
    sort_match = _SORT.match(sort) if sort is not None else None
    if sort is not None and sort_match is None:
        raise ValueError(f"sort must look like '<field>-asc' or '<field>-desc', not {sort!r}")
    plan = _plan(where, in_max)
    if plan.mode == "empty":
        return
    extra: list[str] = []
    if plan.mode == "in" and sort_match and sort_match.group(1) not in names:
        extra = [sort_match.group(1)]  # needed to merge the chunks; stripped again below
    common = {"fields": ",".join(names + extra), **({"sort": sort} if sort else {})}
    path = endpoint_path(resource, "search")
    streams = [_pages(post, path, {**common, **p}, page_size) for p in plan.param_sets]
    rows: Iterator[Row]
    if plan.mode == "nin":
        rows = _intersect(streams)
    elif plan.mode == "in" and sort_match:
        rows = heapq.merge(
            *streams, key=_sort_key(sort_match.group(1)), reverse=sort_match.group(2) == "desc"
        )
    else:
        rows = (row for stream in streams for row in stream)
    for row in rows:
        for name in extra:
            row.pop(name, None)
        yield row


def count_rows(
    post: PostFn, resource: str, *, where: Where | None = None, in_max: int = DEFAULT_IN_MAX
) -> int:
    """The number of rows matching ``where`` (``in`` chunks are summed)."""
    plan = _plan(where, in_max)
    if plan.mode == "nin":
        raise ValueError(f"cannot count with a nin list longer than {in_max}; search instead")
    path = endpoint_path(resource, "count")
    return sum(int(post(path, params).get("count") or 0) for params in plan.param_sets)
