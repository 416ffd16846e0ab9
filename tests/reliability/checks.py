"""The end state a campaign phase must reach, checked against Next Engine's own ledger.

Nothing lost: every WMS event in the inbox once, every order imported, shipped with its
tracking number, every stock change applied. Nothing doubled: no order imported into two
batches or shipped twice, no stock moved further than the WMS said, no upload queue row that
is not exactly one of nebridge's uploads.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlmodel import select

from daemon.store.engine import read_session
from daemon.store.models import InboxEvent, OutboxItem, OutboxState, StockUpload
from tests.reliability.stockcheck import unexplained_drift
from tests.reliability.workload import WmsPlayer, Workload
from tests.reliability.world import World

SETTLED = frozenset({OutboxState.DONE.value, OutboxState.SKIPPED.value})


@dataclass
class Outcome:
    """What one phase ended with; ``problems`` must be empty."""

    lost: dict[str, int] = field(default_factory=dict)
    doubled: dict[str, int] = field(default_factory=dict)
    wrong: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    settled_by_nebridge: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def events_lost(self) -> int:
        """Everything lost, summed over kinds."""
        return sum(self.lost.values())

    @property
    def effects_doubled(self) -> int:
        """Everything doubled, summed over kinds."""
        return sum(self.doubled.values())


def _note(outcome: Outcome, bucket: dict[str, int], kind: str, found: list[str]) -> None:
    bucket[kind] = len(found)
    if found:
        outcome.problems.append(
            f"{kind}: {len(found)} ({', '.join(found[:8])}{', …' if len(found) > 8 else ''})"
        )


def check(world: World, workload: Workload, player: WmsPlayer) -> Outcome:
    """Compare the sandbox, the store and the WMS folders with what the workload sent."""
    out = Outcome()
    ledger, state = world.sandbox.ledger, world.sandbox.state
    state.process_ques()
    orders = workload.orders
    shipped = Counter(ledger.shipped_order_ids())
    _note(
        out,
        out.lost,
        "orders never imported",
        [str(o) for o in orders if not player.instructed.get(o)],
    )
    _note(
        out,
        out.doubled,
        "orders imported in two batches",
        [str(o) for o, files in player.instructed.items() if len(files) > 1],
    )
    _note(out, out.lost, "orders not shipped", [str(o) for o in orders if not shipped[o]])
    _note(out, out.doubled, "orders shipped twice", [str(o) for o, n in shipped.items() if n > 1])
    _note(
        out,
        out.wrong,
        "wrong tracking numbers",
        [
            str(o)
            for o in orders
            if state.order_snapshot(o)["receive_order_delivery_cut_form_id"] != workload.tracking(o)
        ],
    )
    _note(
        out,
        out.wrong,
        "formula cells not neutralised",
        [
            str(o)
            for o, name in workload.formula_orders.items()
            if player.formula_cells.get(o) != "'" + name
        ],
    )
    for label, expected, kind in (
        ("stock uploaded", workload.expected_upload, "stock.upload"),
        ("stock taken by shipping", workload.expected_ship_stock(), "stock.ship"),
    ):
        actual: dict[str, int] = defaultdict(int)
        for entry in ledger.entries(kind=kind):
            actual[(entry.goods_code or "").casefold()] += entry.delta or 0
        short: list[str] = []
        over: list[str] = []
        for code in sorted(set(expected) | set(actual)):
            want, got = expected.get(code, 0), actual.get(code, 0)
            if got != want:
                further = abs(got) > abs(want) and (want == 0 or (got > 0) == (want > 0))
                (over if further else short).append(f"{code} {got:+d} not {want:+d}")
        _note(out, out.lost, f"goods with {label} short", short)
        _note(out, out.doubled, f"goods with {label} beyond the WMS's", over)
    engine = world.engine()
    try:
        with read_session(engine) as session:
            events = [(e.kind, e.external_id) for e in session.scalars(select(InboxEvent))]
            items = list(session.scalars(select(OutboxItem)))
            uploads = list(session.scalars(select(StockUpload)))
    finally:
        engine.dispose()
    wanted = workload.events | {("shipment", f"S-{o}") for o in orders}
    stored = Counter(events)
    _note(
        out,
        out.lost,
        "WMS events not in the inbox",
        sorted(f"{k}:{i}" for k, i in wanted - set(stored)),
    )
    _note(
        out,
        out.doubled,
        "WMS events stored twice",
        sorted(f"{k}:{i}" for (k, i), n in stored.items() if n > 1),
    )
    _note(
        out, out.wrong, "unexpected WMS events", sorted(f"{k}:{i}" for k, i in set(stored) - wanted)
    )
    out.outbox = dict(Counter(i.state for i in items))
    _note(
        out,
        out.wrong,
        "actions not settled",
        [f"{i.id} {i.kind} {i.subject} {i.state}" for i in items if i.state not in SETTLED],
    )
    claims = Counter(u.que_id for u in uploads if u.que_id and u.state == "done")
    applied = [q for q in state.ques.values() if q.status_id == 2]
    _note(
        out,
        out.doubled,
        "upload queue rows that are not exactly one nebridge upload",
        [str(q.que_id) for q in applied if claims[str(q.que_id)] != 1],
    )
    by_ref = {u.ref: u for u in uploads}
    _note(
        out,
        out.wrong,
        "uploads whose queue row differs from what was sent",
        [
            u.ref
            for u in by_ref.values()
            if u.que_id
            and u.state == "done"
            and _que_deltas(world, int(u.que_id))
            != {k.casefold(): v for k, v in json.loads(u.deltas).items()}
        ],
    )
    logs = "".join(p.read_text("utf-8", "replace") for p in world.logs.glob("*.log"))
    out.settled_by_nebridge = {
        "ship actions whose outcome was unknown, settled by reading the order": sum(
            1 for i in items if i.result == "shipped (confirmed by reading the order)"
        ),
        "lost stock uploads found in Next Engine's queue and adopted": logs.count(
            "found in Next Engine as que"
        ),
        "lost stock uploads found absent after settling, sent again": sum(
            1 for u in uploads if u.message == "no upload reached Next Engine; items sent again"
        ),
    }
    leftovers = [
        p.name
        for p in world.inbox.iterdir()
        if p.is_file() and not p.name.lower().startswith("products")
    ]
    leftovers += [f".claimed/{p.name}" for p in (world.inbox / ".claimed").iterdir()]
    leftovers += [f"rejected/{p.name}" for p in (world.inbox / "rejected").iterdir()]
    _note(out, out.wrong, "WMS files not processed", leftovers)
    _note(
        out,
        out.wrong,
        "goods with unexplained stock drift (`stock diff`)",
        unexplained_drift(world, workload),
    )
    return out


def _que_deltas(world: World, que_id: int) -> dict[str, int]:
    """The stock deltas an upload queue row carried, by goods code (case-folded)."""
    que = world.sandbox.state.ques[que_id]
    return {
        row["syohin_code"].casefold(): int(row["zaiko_su"])
        for row in que.rows
        if row.get("zaiko_su")
    }
