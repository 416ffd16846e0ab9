"""The campaign's workload and the WMS that plays it.

Next Engine orders are created in the sandbox; the daemon imports them into the WMS (order
files in the outbox). :class:`WmsPlayer` is the warehouse: it reads the order files and
confirms each order's shipment with a tracking number, and it delivers shipments not from
Next Engine and receipts at linked and unlinked warehouses — in files of varying size, some
delivered twice — while the daemon runs, crashes and restarts.
"""

from __future__ import annotations

import csv
import io
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from daemon.sandbox.state import SandboxState
from tests.reliability.world import World

SHIP_HEADER = "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity"
RECEIPT_HEADER = "receipt_id,warehouse,confirmed_at,product_code,quantity"
AT = "2026-11-27 10:00:00"
LINKED = ("ITAKU", "ASAKUSA")
ALL_WAREHOUSES = ("ITAKU", "ASAKUSA", "SHINJUKU")
INITIAL_STOCK = 1_000_000
WAVES = 4  # orders arrive in Next Engine in this many waves while the campaign runs
#: Consignee names a shopper could type that a spreadsheet would run as formulas.
FORMULA_NAMES = (
    "=cmd|' /C calc'!A0",
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    '=HYPERLINK("http://x.invalid","!")',
)


@dataclass(frozen=True)
class Goods:
    """A Next Engine goods code, its WMS product and the link code (another case)."""

    code: str
    product: str
    link: str


@dataclass
class Workload:
    """Everything the campaign sends and what must come out of it."""

    seed: int
    order_count: int
    other_count: int
    goods: list[Goods] = field(default_factory=list)
    planned: list[tuple[list[tuple[str, int]], int, str | None]] = field(default_factory=list)
    orders: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    formula_orders: dict[int, str] = field(default_factory=dict)
    other_files: list[tuple[str, bytes]] = field(default_factory=list)
    events: set[tuple[str, str]] = field(default_factory=set)
    expected_upload: dict[str, int] = field(default_factory=dict)

    def build(self, state: SandboxState) -> None:
        """Create the goods in the sandbox; plan the orders and the WMS's own events."""
        rng = random.Random(self.seed)
        shapes = ("Camp-TShirt-{}", "camp-mug-{:02d}", "CAMP-Shouhin-{:03d}", "Camp-BAG-{}-L")
        for index in range(40):
            code = shapes[index % len(shapes)].format(index)
            link = code.lower() if index % 3 else code.upper()
            self.goods.append(Goods(code, f"P-{index:03d}", link))
            state.create_goods(code, quantity=INITIAL_STOCK)
        for number in range(self.order_count):
            picked = rng.sample(self.goods, rng.randint(1, 3))
            rows = [(g.code, rng.randint(1, 3)) for g in picked]
            name = FORMULA_NAMES[number % len(FORMULA_NAMES)] if number % 97 == 5 else None
            self.planned.append((rows, rng.randint(1, 4), name))
        self._others(rng)

    def create_orders(self, state: SandboxState, count: int) -> None:
        """Create the next ``count`` planned orders in Next Engine (customers ordering)."""
        start = len(self.orders)
        for rows, shop, name in self.planned[start : start + count]:
            fields = {"receive_order_consignee_name": name} if name else None
            order = state.create_order(rows, shop_id=shop, fields=fields)
            self.orders[order] = rows
            if name:
                self.formula_orders[order] = name

    @property
    def all_ordered(self) -> bool:
        """Every planned order exists in Next Engine."""
        return len(self.orders) == len(self.planned)

    def _others(self, rng: random.Random) -> None:
        """Shipments not from Next Engine and receipts, in files of 20–200 events."""
        upload: dict[str, int] = defaultdict(int)
        made, file_no = 0, 0
        while made < self.other_count:
            size = min(rng.randint(20, 200), self.other_count - made)
            receipts = rng.random() < 0.5
            lines = []
            for _ in range(size):
                made += 1
                warehouse = rng.choice(ALL_WAREHOUSES)
                event_id = f"{'R' if receipts else 'X'}-{self.seed}-{made:05d}"
                self.events.add(("receipt" if receipts else "shipment", event_id))
                for goods in rng.sample(self.goods, rng.randint(1, 3)):
                    qty = rng.randint(1, 5)
                    if receipts:
                        lines.append(f"{event_id},{warehouse},{AT},{goods.product},{qty}")
                    else:
                        lines.append(f"{event_id},{warehouse},,,{AT},{goods.product},{qty}")
                    if warehouse in LINKED:
                        upload[goods.code.casefold()] += qty if receipts else -qty
            rng.shuffle(lines)  # rows of one id need not be adjacent
            file_no += 1
            kind = "receipts" if receipts else "shipments"
            header = RECEIPT_HEADER if receipts else SHIP_HEADER
            self.other_files.append(
                (f"{kind}-other-{file_no:04d}.csv", "\n".join([header, *lines, ""]).encode("utf-8"))
            )
        self.expected_upload = dict(upload)

    def products_csv(self) -> bytes:
        """The WMS product master: every goods linked (in another case)."""
        rows = ["product_code,link_code", *(f"{g.product},{g.link}" for g in self.goods)]
        return ("\n".join(rows) + "\n").encode("utf-8")

    def tracking(self, order: int) -> str:
        """The tracking number the WMS confirms for an order."""
        return f"TRK{order:010d}" if order % 5 else f"YMT-{order}-{self.seed}"

    def expected_ship_stock(self) -> dict[str, int]:
        """Stock Next Engine itself takes when the orders are shipped, per goods code."""
        taken: dict[str, int] = defaultdict(int)
        for rows in self.orders.values():
            for code, qty in rows:
                taken[code.casefold()] -= qty
        return dict(taken)


@dataclass
class WmsPlayer:
    """The warehouse, in a thread: confirms imported orders, delivers its own events."""

    world: World
    workload: Workload
    seed: int
    duration_s: float
    instructed: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    formula_cells: dict[int, str] = field(default_factory=dict)
    files_dropped: int = 0
    redelivered: int = 0
    _seen: dict[str, int] = field(default_factory=dict)
    _waiting: list[int] = field(default_factory=list)
    _lines: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _shipped: set[int] = field(default_factory=set)
    _others_left: list[tuple[str, bytes]] = field(default_factory=list)
    _again: list[tuple[str, bytes]] = field(default_factory=list)
    _rng: random.Random = field(init=False)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._others_left = list(self.workload.other_files)

    def start(self) -> WmsPlayer:
        """Play in the background."""
        self._thread = threading.Thread(target=self._run, name="wms-player", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop playing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def finished(self) -> bool:
        """Every order placed and confirmed, and every own event delivered."""
        return (
            self.workload.all_ordered
            and len(self._shipped) == len(self.workload.orders)
            and not self._others_left
            and not self._again
        )

    def _run(self) -> None:
        step = self.duration_s / max(1, len(self._others_left))
        wave = -(-len(self.workload.planned) // WAVES)
        started = next_other = time.monotonic()
        try:
            while not self._stop.is_set():
                due = min(WAVES, 1 + int((time.monotonic() - started) / self.duration_s * WAVES))
                if len(self.workload.orders) < min(due * wave, len(self.workload.planned)):
                    self.workload.create_orders(self.world.sandbox.state, wave)
                self._read_orders()
                self._confirm_shipments()
                if time.monotonic() >= next_other:
                    self._deliver_other()
                    next_other = time.monotonic() + step
                self._stop.wait(0.05)
        except BaseException as exc:  # reported by the campaign
            self.error = exc

    def _read_orders(self) -> None:
        for path in sorted(self.world.outbox.glob("orders-*.csv")):
            try:
                stamp = path.stat().st_mtime_ns
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            if self._seen.get(path.name) == stamp:
                continue
            self._seen[path.name] = stamp
            rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
            lines: dict[int, list[tuple[str, int]]] = defaultdict(list)
            for row in rows:
                order = int(row["ne_order_id"])
                lines[order].append((row["product_code"], int(row["quantity"])))
                if order in self.workload.formula_orders:
                    self.formula_cells[order] = row["consignee_name"]
            for order, order_lines in lines.items():
                known = order in self._lines
                self.instructed[order].add(path.name)
                if not known:
                    self._lines[order] = order_lines
                    self._waiting.append(order)

    def _confirm_shipments(self) -> None:
        if not self._waiting:
            return
        self._rng.shuffle(self._waiting)
        take = self._waiting[: self._rng.randint(50, 250)]
        del self._waiting[: len(take)]
        rows = []
        for order in take:
            tracking = self.workload.tracking(order)
            for product, qty in self._lines[order]:
                rows.append(f"S-{order},ITAKU,{order},{tracking},{AT},{product},{qty}")
        self._shipped.update(take)
        self._file(
            f"shipments-ne-{self.files_dropped:05d}.csv",
            "\n".join([SHIP_HEADER, *rows, ""]).encode("utf-8"),
        )

    def _deliver_other(self) -> None:
        if self._others_left:
            name, data = self._others_left.pop(0)
            self._file(name, data)
            if self._rng.random() < 0.08:  # the WMS sends this file again later
                self._again.append((name.replace(".csv", "-again.csv"), data))
        elif self._again:
            self._file(*self._again.pop(0))
            self.redelivered += 1

    def _file(self, name: str, data: bytes) -> None:
        self.world.drop(name, data)
        self.files_dropped += 1


def drop_products(world: World, workload: Workload) -> None:
    """Deliver the product master."""
    world.drop("products.csv", workload.products_csv())
