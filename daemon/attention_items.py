"""The attention items themselves — kinds, texts, the report — and a plain-SQL read of them.

:mod:`daemon.attention` reads them through the ORM (the engine, the metrics, ``attention``);
``nebridge status`` reads the same items with :func:`collect_plain` on a
:class:`~daemon.store.reads.Reader`, without importing SQLAlchemy (#18). Both build every
item with the functions here, so a reason or a fix reads the same wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from daemon.store.reads import Reader, utc
from hooks.notify import for_company

if TYPE_CHECKING:
    from daemon.pluginmanager import PluginHost


class AttentionKind(StrEnum):
    """The kinds of things that wait for a person."""

    HELD_ORDER = "held_order"
    HELD_EVENT = "held_event"
    FAILED_ACTION = "failed_action"
    IN_DOUBT_ACTION = "in_doubt_action"
    REJECTED_FILE = "rejected_file"
    FILE_NOT_TAKEN = "file_not_taken"
    PAUSED_STAGE = "paused_stage"
    CRASHED_STAGE = "crashed_stage"
    HELD_INSTRUCTION = "held_instruction"
    WMS_MISMATCH = "wms_mismatch"
    WMS_READ_FAILED = "wms_read_failed"
    NE_LINK_LOST = "ne_link_lost"
    NE_TOKEN_EXPIRING = "ne_token_expiring"
    WMS_AUTH_LOST = "wms_auth_lost"
    NOTIFY_FAILING = "notify_failing"
    ORDER_CHANGED = "order_changed"
    STOCK_DRIFT = "stock_drift"
    SERVICE_NOT_STARTED = "service_not_started"
    VAULT_KEY_MISSING = "vault_key_missing"


@dataclass(frozen=True, slots=True)
class AttentionItem:
    """One thing that waits for a person, with the command that resolves it."""

    kind: str
    key: str
    reason: str
    fix: str
    since: datetime
    warehouse: str = ""
    subject: str = ""
    severity: str = "error"

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` form (``since`` as ISO 8601 UTC)."""
        data = asdict(self)
        data["since"] = self.since.astimezone(UTC).isoformat()
        return data

    def of_company(self, company: str) -> AttentionItem:
        """This item with its commands run for ``company`` (see :func:`for_company`)."""
        if not company:
            return self
        return replace(
            self, reason=for_company(self.reason, company), fix=for_company(self.fix, company)
        )


@dataclass
class AttentionReport:
    """Counts of every kind (complete) and the newest items (bounded by ``limit``)."""

    counts: dict[str, int] = field(default_factory=dict)
    items: list[AttentionItem] = field(default_factory=list)
    limit: int = 50

    @property
    def total(self) -> int:
        """How many things wait in all."""
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """The stable ``--json`` structure."""
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "limit": self.limit,
            "items": [item.as_dict() for item in self.items],
        }


#: What one source found: every kind counted, and its newest items.
Found = tuple[dict[str, int], list[AttentionItem]]


def report_of(
    live: Iterable[AttentionItem],
    found: Iterable[Found],
    limit: int,
    warehouse: str | None,
    company: str,
) -> AttentionReport:
    """The report of the ``live`` items (kept to ``warehouse``) and what the sources
    ``found``: every kind counted, the newest ``limit`` items first, fixes for ``company``."""
    result = AttentionReport(limit=limit)
    items = [i for i in live if warehouse is None or i.warehouse in (warehouse, "")]
    for item in items:
        result.counts[item.kind] = result.counts.get(item.kind, 0) + 1
    for counts, more in found:
        for kind, n in counts.items():
            result.counts[str(kind)] = result.counts.get(str(kind), 0) + n
        items.extend(more)
    result.counts = {k: n for k, n in result.counts.items() if n}
    items.sort(key=lambda i: i.since, reverse=True)
    result.items = [item.of_company(company) for item in items[:limit]]
    return result


# -- one item per stored row ------------------------------------------------------------------


def held_order_item(
    ne_order_id: str, hold_reason: str | None, since: datetime, warehouse: str
) -> AttentionItem:
    """An order held at import."""
    return AttentionItem(
        kind=AttentionKind.HELD_ORDER,
        key=f"held_order:{ne_order_id}",
        reason=hold_reason or "held at import",
        fix=(
            "correct the cause (the order in Next Engine, the WMS product master or "
            "connector settings); an order changed in Next Engine is taken again by "
            f"itself, otherwise `nebridge orders retry {ne_order_id}` (or `nebridge "
            f"orders drop {ne_order_id}` to never import it)"
        ),
        since=since,
        warehouse=warehouse,
        subject=ne_order_id,
    )


def held_event_item(
    kind: str, external_id: str, last_error: str | None, since: datetime, warehouse: str
) -> AttentionItem:
    """A WMS event held in the inbox."""
    return AttentionItem(
        kind=AttentionKind.HELD_EVENT,
        key=f"held_event:{kind}:{external_id}",
        reason=last_error or "held",
        fix=f"correct the cause, then `nebridge inbox retry --event {kind}:{external_id}`",
        since=since,
        warehouse=warehouse,
        subject=f"{kind}:{external_id}",
    )


#: The outbox states that wait for a person: (state, attention kind, fix with ``{id}``).
ACTION_STATES: tuple[tuple[str, AttentionKind, str], ...] = (
    (
        "failed",
        AttentionKind.FAILED_ACTION,
        "correct the cause in Next Engine, then `nebridge outbox retry {id}`",
    ),
    (
        "in_doubt",
        AttentionKind.IN_DOUBT_ACTION,
        "look the item up in Next Engine, then `nebridge outbox resolve {id} --applied` or "
        "`--not-applied`",
    ),
)


def action_item(
    kind: AttentionKind,
    fix: str,
    state: str,
    item_id: int | None,
    item_kind: str,
    subject: str,
    last_error: str | None,
    since: datetime,
    warehouse: str,
) -> AttentionItem:
    """A failed or in-doubt outbox item (``kind``, ``fix`` and ``state`` from
    :data:`ACTION_STATES`)."""
    return AttentionItem(
        kind=kind,
        key=f"{kind}:{item_id}",
        reason=f"{item_kind} {subject}: {last_error or state}",
        fix=fix.format(id=item_id),
        since=since,
        warehouse=warehouse,
        subject=subject,
    )


def rejected_file_item(
    batch_id: int | None, errors: str | None, source: str, since: datetime
) -> AttentionItem:
    """An inbound file (batch) rejected as a whole."""
    return AttentionItem(
        kind=AttentionKind.REJECTED_FILE,
        key=f"rejected_file:{batch_id}",
        reason=(errors or "rejected").split("\n", 1)[0],
        fix=(
            f"correct the file (every reason: `nebridge inbox list --state rejected`), "
            f"then `nebridge inbox retry {source}` — or have the WMS send it again"
        ),
        since=since,
        subject=source,
    )


def paused_stage_items(host: PluginHost) -> list[AttentionItem]:
    """One live item per pipeline stage paused because an enabled plugin is not loaded."""
    items = []
    for stage, records in sorted(host.stage_blockers().items()):
        names = [r.name for r in records]
        items.append(
            AttentionItem(
                kind=AttentionKind.PAUSED_STAGE,
                key=f"paused_stage:{stage}",
                reason=(
                    f"stage {stage} is paused for every warehouse: "
                    + "; ".join(
                        f"plugin {r.name} is enabled but {r.state.value}: {r.error}"
                        for r in records
                    )
                ),
                fix=(
                    f"repair {' and '.join(names)} (`nebridge config check` names the error) or "
                    f"disable it (`nebridge plugins disable {names[0]}`), then restart the daemon "
                    "(`systemctl restart nebridge`)"
                ),
                since=host.loaded_at,
                subject=stage,
            )
        )
    return items


# -- the same read in plain SQL (``status``) ----------------------------------------------------


def collect_plain(
    reader: Reader, live: Iterable[AttentionItem] = (), limit: int = 50, company: str = ""
) -> AttentionReport:
    """What :func:`daemon.attention.collect` reports for every warehouse, read with plain SQL
    (the same counts, items and order)."""
    return report_of(live, _plain_sources(reader, limit), limit, None, company)


def _when(value: Any) -> datetime:
    moment = utc(value)
    assert moment is not None  # the columns read here are NOT NULL
    return moment


def _count(reader: Reader, sql: str, params: tuple[Any, ...]) -> int:
    return int(reader.rows(sql, params)[0][0])


def _plain_sources(reader: Reader, limit: int) -> Iterator[Found]:
    """The stored sources of :mod:`daemon.attention`, one by one."""
    held = ("held",)
    yield (
        {
            AttentionKind.HELD_ORDER: _count(
                reader, "SELECT COUNT(*) FROM imported_order WHERE state = ?", held
            )
        },
        [
            held_order_item(order_id, reason, _when(at), wh)
            for order_id, reason, at, wh in reader.rows(
                "SELECT ne_order_id, hold_reason, updated_at, warehouse FROM imported_order "
                "WHERE state = ? ORDER BY updated_at DESC LIMIT ?",
                (*held, limit),
            )
        ],
    )
    yield (
        {
            AttentionKind.HELD_EVENT: _count(
                reader, "SELECT COUNT(*) FROM inbox_event WHERE state = ?", held
            )
        },
        [
            held_event_item(kind, external_id, error, _when(processed or received), wh)
            for kind, external_id, error, processed, received, wh in reader.rows(
                "SELECT kind, external_id, last_error, processed_at, received_at, warehouse "
                "FROM inbox_event WHERE state = ? ORDER BY id DESC LIMIT ?",
                (*held, limit),
            )
        ],
    )
    counts: dict[str, int] = {}
    actions: list[AttentionItem] = []
    for state, kind, fix in ACTION_STATES:
        counts[kind] = _count(reader, "SELECT COUNT(*) FROM outbox_item WHERE state = ?", (state,))
        actions.extend(
            action_item(kind, fix, state, item_id, item_kind, subject, error, _when(at), wh)
            for item_id, item_kind, subject, error, at, wh in reader.rows(
                "SELECT id, kind, subject, last_error, updated_at, warehouse FROM outbox_item "
                "WHERE state = ? ORDER BY id DESC LIMIT ?",
                (state, limit),
            )
        )
    yield counts, actions
    rejected = ("rejected",)
    yield (
        {
            AttentionKind.REJECTED_FILE: _count(
                reader, "SELECT COUNT(*) FROM inbox_batch WHERE state = ?", rejected
            )
        },
        [
            rejected_file_item(batch_id, errors, source, _when(at))
            for batch_id, errors, source, at in reader.rows(
                "SELECT id, errors, source, received_at FROM inbox_batch WHERE state = ? "
                "ORDER BY id DESC LIMIT ?",
                (*rejected, limit),
            )
        ],
    )
    opened = ("open",)
    yield (
        {
            str(kind): int(n)
            for kind, n in reader.rows(
                "SELECT kind, COUNT(*) FROM attention_problem WHERE state = ? GROUP BY kind",
                opened,
            )
        },
        [
            AttentionItem(
                kind=kind,
                key=key,
                reason=reason,
                fix=fix,
                since=_when(first_seen),
                warehouse=wh,
                subject=subject,
                severity=severity,
            )
            for key, kind, reason, fix, first_seen, wh, subject, severity in reader.rows(
                "SELECT key, kind, reason, fix, first_seen, warehouse, subject, severity "
                "FROM attention_problem WHERE state = ? ORDER BY last_seen DESC LIMIT ?",
                (*opened, limit),
            )
        ],
    )
