"""The Next Engine actions: one registry entry per kind of outbox row.

Plugins return action records (:mod:`hooks.records`). For each WMS event the engine merges the
records of every plugin into outbox rows, one row per Next Engine change, and stores them with
the decision. Each :class:`ActionKind` here states, for one kind of row:

* ``name`` — the outbox row's ``kind`` (stored; never renamed),
* ``records`` — the action records that feed it,
* its idempotency key formats (the same decision always gives the same key, so deciding twice
  never creates a second row; the keys of stored rows never change),
* ``merge`` — how the records of one event become rows, in words; :meth:`ActionKind.plan`
  does it,
* :meth:`ActionKind.describe` — how a row reads in dry runs, ``history`` and logs.

Adding a Next Engine action is one place here plus its executor: a record in
:mod:`hooks.records`, an :class:`ActionKind` in :data:`ACTION_KINDS`, and the executor the engine
registers for ``name`` (``daemon.dispatch.EXECUTORS``); ``tests/test_action_registry.py`` fails
until all three exist.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hooks.errors import StepError
from hooks.records import Action, AdjustStock, EventKind, Notice, ShipOrder, WriteTracking

#: Column sizes of the outbox row: longer keys and subjects keep their start and a hash.
KEY_LENGTH = 200
SUBJECT_LENGTH = 128


def bounded(text: str, limit: int) -> str:
    """``text``, or its first part and a hash of the whole, so it fits ``limit`` characters.

    The same text always gives the same result, so a bounded id or key still finds its
    duplicate; texts that fit are kept as they are.
    """
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{text[: limit - len(digest) - 1]}~{digest}"


@dataclass
class PlannedItem:
    """An outbox row the engine will write (or, in a dry run, would write)."""

    kind: str
    key: str
    subject: str
    plugin: str
    payload: dict[str, Any]

    def describe(self) -> str:
        """A one-line human description for dry runs and logs."""
        return describe(self.kind, self.subject, self.payload)


class ActionKind(ABC):
    """One kind of Next Engine action: what feeds it, its keys, its merge rule, its words."""

    name: ClassVar[str]
    records: ClassVar[tuple[type[Any], ...]]
    #: The idempotency key formats, as documented in docs/plugins.md.
    key_formats: ClassVar[tuple[str, ...]]
    merge: ClassVar[str]

    @abstractmethod
    def plan(
        self, source: str, decided: Sequence[tuple[str, Any]]
    ) -> tuple[list[PlannedItem], list[str]]:
        """Merge the ``(plugin, record)`` pairs of this kind decided for the event ``source``
        (``shipment:<id>`` / ``receipt:<id>``, stored in each row's payload) into rows and
        notices.

        Raises :class:`~hooks.errors.StepError` for a record the event must be held for.
        """

    @abstractmethod
    def describe(self, subject: str, payload: Mapping[str, Any]) -> str:
        """What a row of this kind does, in one line."""


class ShipOrderKind(ActionKind):
    """Ship a Next Engine order (status 50), writing its tracking number first if given."""

    name = "ship_order"
    records = (ShipOrder, WriteTracking)
    key_formats = ("ship:{ne_order_id}",)
    merge = (
        "one row per order and event, whichever plugins asked; a WriteTracking rides on "
        "the ShipOrder of the same order (the first plugin's number wins) and is dropped "
        "with a warning without one: Next Engine never gets a tracking number alone. The "
        "key holds only the order, so an order is shipped once however many events ask."
    )

    def plan(
        self, source: str, decided: Sequence[tuple[str, Any]]
    ) -> tuple[list[PlannedItem], list[str]]:
        """Ship each asked order once; tracking numbers ride along (see :attr:`merge`).

        An order number that is not a positive whole number in canonical form (``16``, not
        ``0016``) holds the event.
        """
        ships: dict[str, str] = {}
        tracking: dict[str, tuple[str, str]] = {}
        for plugin, record in decided:
            if isinstance(record, ShipOrder):
                if not is_order_id(record.ne_order_id):
                    raise StepError(
                        f"plugin {plugin} asked to ship {record.ne_order_id!r}, "
                        "which is not a Next Engine order number (a positive whole "
                        "number without leading zeros)"
                    )
                ships.setdefault(record.ne_order_id, plugin)
            else:
                tracking.setdefault(record.ne_order_id, (record.tracking_number, plugin))
        items = []
        for order_id, plugin in ships.items():
            items.append(
                PlannedItem(
                    kind=self.name,
                    key=f"ship:{order_id}",
                    subject=order_id,
                    plugin=plugin,
                    payload={
                        "ne_order_id": order_id,
                        "tracking_number": tracking.pop(order_id, (None, ""))[0],
                        "source_event": source,
                    },
                )
            )
        notices = []
        for order_id, (number, plugin) in tracking.items():
            notices.append(
                f"[warning] {plugin}: tracking number {number} for order {order_id} "
                "not written: no shipped-status update for this order (tracking "
                "numbers are never written alone)"
            )
        return items, notices

    def describe(self, subject: str, payload: Mapping[str, Any]) -> str:
        """``ship Next Engine order N with tracking number T`` (or without one)."""
        tracking = payload.get("tracking_number")
        extra = f" with tracking number {tracking}" if tracking else " (no tracking number)"
        return f"ship Next Engine order {subject}{extra}"


class AdjustStockKind(ActionKind):
    """Change the Next Engine stock of the goods linked to a WMS product by a signed delta."""

    name = "adjust_stock"
    records = (AdjustStock,)
    key_formats = (
        "stock:{event kind}:{event id}:{product_code}:{plugin}",
        "stock:shipped_cancelled:{shipment id}:{product_code}",
        "reconcile:{snapshot id}:{goods code}",
    )
    merge = (
        "the deltas one plugin gives one product in one event are summed into one row "
        "(a net 0 writes nothing); different plugins keep their own rows. Rows of one "
        "dispatch are summed per Next Engine goods code into one upload. Besides plugin "
        "decisions, `nebridge orders shipped-anyway` and `nebridge stock reconcile` queue "
        "rows of this kind under their own keys."
    )

    def reversal_key(self, shipment_id: str, product_code: str) -> str:
        """The key of taking a cancelled order's shipped goods off Next Engine stock."""
        return f"stock:shipped_cancelled:{shipment_id}:{product_code}"[:KEY_LENGTH]

    def reconcile_key(self, snapshot_id: str | int, goods: str) -> str:
        """The key of correcting one goods code's drift found against one stock snapshot."""
        return f"reconcile:{snapshot_id}:{goods}"[:KEY_LENGTH]

    def plan(
        self, source: str, decided: Sequence[tuple[str, Any]]
    ) -> tuple[list[PlannedItem], list[str]]:
        """One row per plugin and product with the summed delta (see :attr:`merge`)."""
        stock: dict[tuple[str, str], int] = {}
        for plugin, record in decided:
            if record.delta:
                key = (plugin, record.product_code)
                stock[key] = stock.get(key, 0) + record.delta
        items = []
        for (plugin, product), delta in sorted(stock.items()):
            if delta:
                items.append(
                    PlannedItem(
                        kind=self.name,
                        key=bounded(f"stock:{source}:{product}:{plugin}", KEY_LENGTH),
                        subject=bounded(product, SUBJECT_LENGTH),
                        plugin=plugin,
                        payload={"product_code": product, "delta": delta, "source_event": source},
                    )
                )
        return items, []

    def describe(self, subject: str, payload: Mapping[str, Any]) -> str:
        """A change of a WMS product's stock, or a correction to a stock snapshot's count."""
        if "snapshot" in payload:
            return (
                f"correct Next Engine stock of {payload.get('goods')} by "
                f"{payload.get('delta'):+d} to the count of snapshot {payload['snapshot']}"
            )
        return f"change Next Engine stock of WMS product {subject} by {payload['delta']:+d}"


SHIP_ORDER = ShipOrderKind()
ADJUST_STOCK = AdjustStockKind()
#: Every kind of Next Engine action, by outbox ``kind``, in the order rows are planned.
ACTION_KINDS: Mapping[str, ActionKind] = {k.name: k for k in (SHIP_ORDER, ADJUST_STOCK)}
_KIND_OF_RECORD: dict[type[Any], ActionKind] = {
    record: kind for kind in ACTION_KINDS.values() for record in kind.records
}


def describe(kind: str, subject: str, payload: Mapping[str, Any]) -> str:
    """A row of any kind in one line (a kind no longer registered reads ``kind subject``)."""
    action_kind = ACTION_KINDS.get(kind)
    return action_kind.describe(subject, payload) if action_kind else f"{kind} {subject}"


def plan_actions(
    event_kind: EventKind, external_id: str, decisions: Sequence[tuple[str, Sequence[Action]]]
) -> tuple[list[PlannedItem], list[str]]:
    """Merge the plugins' actions for one event (its kind and WMS id) into outbox rows and
    notices.

    Each record goes to the :class:`ActionKind` it feeds, which merges them (its ``merge``
    rule); a :class:`~hooks.records.Notice` becomes a notice line. Anything else holds the
    event with :class:`~hooks.errors.StepError`.
    """
    source = f"{event_kind.value}:{external_id}"
    by_kind: dict[ActionKind, list[tuple[str, Any]]] = {}
    notices: list[str] = []
    kind_of_record = _KIND_OF_RECORD
    for plugin, actions in decisions:
        for action in actions:
            kind = kind_of_record.get(type(action)) or _kind_of(action)
            if kind is not None:
                decided = by_kind.get(kind)
                if decided is None:
                    by_kind[kind] = decided = []
                decided.append((plugin, action))
            elif isinstance(action, Notice):
                notices.append(f"[{action.level}] {plugin}: {action.message}")
            else:
                raise StepError(f"plugin {plugin} returned an unknown action {action!r}")
    if len(by_kind) == 1 and not notices:  # most events: one kind, nothing to say
        [(kind, decided)] = by_kind.items()
        return kind.plan(source, decided)
    items: list[PlannedItem] = []
    for kind in ACTION_KINDS.values():
        if kind in by_kind:
            rows, notes = kind.plan(source, by_kind[kind])
            items.extend(rows)
            notices.extend(notes)
    return items, notices


def is_order_id(value: str) -> bool:
    """True for a Next Engine order number in canonical form: ASCII digits, no leading zero,
    at most 18 digits."""
    return (
        0 < len(value) <= 18 and value.isascii() and value.isdigit() and not value.startswith("0")
    )


def _kind_of(action: object) -> ActionKind | None:
    """The kind a record of a subclass of a registered record feeds (its base's kind)."""
    return next((k for t in type(action).__mro__ if (k := _KIND_OF_RECORD.get(t))), None)
