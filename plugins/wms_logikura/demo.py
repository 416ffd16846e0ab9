"""``nebridge demo --wms logikura``: the seed scenario Logikura sandbox ⇄ nebridge ⇄ Next
Engine sandbox, played through both sandboxes' own APIs and checked against both.

Both sandboxes start on loopback. Logikura gets one product variant per Next Engine goods
(every third 紐付けコード in another letter case, little stock at 委託販売在庫).
nebridge signs in to Next Engine, is authorised in Logikura through its permission page and
the loopback redirect, imports the tagged orders as shipping schedules, and the warehouse
staff (an API client of their own) start and ship every schedule — half with tracking
numbers, booking a receipt first where stock is short — record wholesale and shop shipments
(one under the id of a Next Engine order nebridge skipped by tag) and book receipts at
every warehouse. After the pipelines ran until nothing is left, the demo checks Next Engine
(each order shipped once with the right tracking number, stock moved exactly by the linked
warehouse's shipments of other channels and receipts) and Logikura (one schedule per
imported order, all shipped, stock moved exactly as the staff did, nebridge never over
100 requests a minute). Exit 1 if anything differs.

Offered through ``nebridge_demos``: nebridge starts the Next Engine sandbox and lends the
demo a :class:`hooks.surface.DemoContext` (installation, engine passes, ``wms connect``, what
nebridge stored, output), so this module imports nothing from the engine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from hooks.surface import DemoContext, DemoOrder, DemoOutboxItem, DemoStage
from plugins.wms_logikura.sandbox import SandboxConfig, SandboxServer, StaffError, WarehouseStaff

CLIENT_ID, CLIENT_SECRET = "nebridge-demo-logikura", "nebridge-demo-logikura-secret"
LINKED, UNLINKED = "ITAKU", ("SHINJUKU", "ASAKUSA")
LINKED_STOCK = 2  # low: schedules needing more are short and wait for a receipt
DELIVERY_METHODS = {
    "ヤマト運輸(宅急便)": "yamato_b2",
    "日本郵便(ゆうパック)": "japanpost_yu_pack",
    "佐川急便(e飛伝2)": "sagawa_e_hiden_2",
    "ネコポス": "yamato_b2",
    "1": "yamato_b2",
    "2": "japanpost_yu_pack",
    "13": "sagawa_e_hiden_2",
    "30": "yamato_b2",
}


@dataclass
class Played:
    """What the warehouse staff did, computed independently of nebridge."""

    shipped: dict[str, str | None] = field(default_factory=dict)  # NE order id -> tracking
    ne_stock: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # goods code
    lk_stock: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    other_shipments: int = 0
    receipts: int = 0


def run_demo(ctx: DemoContext) -> None:
    """Start the Logikura sandbox, play the scenario in ``ctx.root`` with the Next Engine
    sandbox nebridge started, and check the end state."""
    logikura = SandboxServer(
        SandboxConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, seed=7, seed_size=0)
    )
    logikura.start()
    try:
        _play(ctx, logikura)
    finally:
        logikura.stop()


def _logikura_section(ctx: DemoContext, logikura: SandboxServer) -> Callable[[Any], None]:
    def configure(raw: Any) -> None:
        raw["wms"] = {
            "connector": "logikura",
            "logikura": {
                "api_base": logikura.base_url,
                "auth_base": logikura.base_url,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uri": f"http://127.0.0.1:{ctx.free_port()}/callback",
                "delivery_methods": DELIVERY_METHODS,
            },
        }

    return configure


def _catalog(ne: Any, logikura: SandboxServer) -> dict[str, str]:
    """One Logikura variant per Next Engine goods (but DEMO-NOLINK, created later); every
    third link code in another case."""
    codes = sorted(str(ne.state.goods_snapshot(k)["goods_id"]) for k in list(ne.state.goods))
    products: dict[str, str] = {}
    for i, code in enumerate(codes):
        product = f"WMS-{i:03d}"
        link = code.swapcase() if i % 3 == 0 else code
        stock = {LINKED: LINKED_STOCK, "SHINJUKU": 20, "ASAKUSA": 20}
        logikura.state.add_variant(product, name=code, link_code=link, stock=stock)
        products[product] = link
    return products


def _approve(url: str) -> None:
    """The person on Logikura's permission page approves; the browser follows the redirect
    to nebridge's loopback receiver (an ``OSError`` while it is not listening yet)."""
    answer = requests.get(url + "&auto=1", allow_redirects=False, timeout=10)
    requests.get(answer.headers["Location"], timeout=10)


def _play(ctx: DemoContext, logikura: SandboxServer) -> None:
    ne = ctx.next_engine
    ctx.info(f"… Next Engine sandbox on {ne.base_url}, Logikura sandbox on {logikura.base_url}")
    ctx.install(_logikura_section(ctx, logikura))
    products = _catalog(ne, logikura)
    ctx.plant_unlinked_order()
    ctx.info(f"… authorised in Logikura: {ctx.connect_wms(_approve)}")
    ctx.info("… importing orders as Logikura shipping schedules")
    stages = ctx.run_until_quiet()
    skipped = next(
        (order for stage in stages for order in stage.subjects.get("skipped", [])), "99999"
    )
    staff = WarehouseStaff(logikura.base_url)
    try:
        played = _work(staff, logikura, products, skipped)
    finally:
        staff.close()
    ctx.info(
        f"… the staff shipped {len(played.shipped)} schedule(s), "
        f"{played.other_shipments} shipment(s) of other channels and booked "
        f"{played.receipts} receipt(s)"
    )
    stages += ctx.run_until_quiet()
    _check(ctx, logikura, played, stages)


def _work(
    staff: WarehouseStaff, logikura: SandboxServer, products: dict[str, str], lookalike: str
) -> Played:
    """The warehouse's day, through Logikura's API only; a shop ships under ``lookalike``, a
    Next Engine order id nebridge did not import (skipped by tag)."""
    played = Played()
    today = logikura.clock.today().isoformat()
    for n, schedule in enumerate(sorted(staff.open_schedules(), key=lambda s: int(s["id"]))):
        order_id = str(schedule["sales_order"]["order_number"])
        tracking = f"4912{int(order_id):08d}" if n % 2 == 0 else None
        if tracking:
            staff.set_tracking(schedule["id"], tracking)
        try:
            staff.start(schedule["id"], LINKED)
        except StaffError as exc:
            if exc.status != 422:
                raise
            short = set(exc.body.get("shipping_item_ids") or [])
            lines = [
                (
                    staff.product_code(int(item["product_variant_id"])),
                    int(item["sales_order_quantity"]) + 5,
                )
                for item in schedule["shipping_items"]
                if item["id"] in short
            ]
            _receive(staff, played, products, LINKED, lines, today)
            staff.start(schedule["id"], LINKED)
        staff.ship(schedule["id"])
        played.shipped[order_id] = tracking
        for item in schedule["shipping_items"]:
            product = staff.product_code(int(item["product_variant_id"]))
            played.lk_stock[(LINKED, product)] -= int(item["sales_order_quantity"])
    codes = sorted(products)
    for i, (warehouse, number) in enumerate(
        ((LINKED, "W-1001"), ("SHINJUKU", lookalike), ("ASAKUSA", None))
    ):
        product = codes[i + 1]
        staff.ship_direct(warehouse, [(product, 2)], order_number=number)
        played.other_shipments += 1
        played.lk_stock[(warehouse, product)] -= 2
        if warehouse == LINKED:
            played.ne_stock[products[product].casefold()] -= 2
    for i, warehouse in enumerate((LINKED, *UNLINKED)):
        lines = [(codes[(i * 2 + j + 5) % len(codes)], 10 + j) for j in range(2)]
        _receive(staff, played, products, warehouse, lines, today)
    return played


def _receive(
    staff: WarehouseStaff,
    played: Played,
    products: dict[str, str],
    warehouse: str,
    lines: list[tuple[str, int]],
    day: str,
) -> None:
    staff.receive(warehouse, lines, received_date=day)
    played.receipts += 1
    for product, quantity in lines:
        played.lk_stock[(warehouse, product)] += quantity
        if warehouse == LINKED:
            played.ne_stock[products[product].casefold()] += quantity


def _check(
    ctx: DemoContext, logikura: SandboxServer, played: Played, stages: list[DemoStage]
) -> None:
    """Compare both sandboxes' end state with what the staff did; print the summary."""
    ne = ctx.next_engine
    items = ctx.outbox()
    imported = ctx.orders()
    problems: list[str] = []
    instructed = {o.ne_order_id for o in imported if o.state == "instructed"}
    held = [o for o in imported if o.state == "held"]
    created = logikura.ledger.schedules_created()
    if set(created) != instructed:
        problems.append(
            f"Logikura schedules exist for {sorted(created)}, nebridge imported "
            f"{sorted(instructed)}"
        )
    problems += [f"order {o} has {n} Logikura schedules" for o, n in created.items() if n != 1]
    if set(played.shipped) != instructed:
        problems.append("not every imported order was shipped in Logikura")
    shipped_ne = ne.ledger.shipped_order_ids()
    if len(shipped_ne) != len(set(shipped_ne)):
        problems.append("an order was shipped twice in Next Engine")
    if {str(o) for o in shipped_ne} != set(played.shipped):
        problems.append(
            f"Next Engine shipped {sorted(map(str, shipped_ne))}, Logikura {sorted(played.shipped)}"
        )
    for order_id, tracking in played.shipped.items():
        order = ne.state.order_snapshot(int(order_id))
        if (order["receive_order_delivery_cut_form_id"] or None) != tracking:
            problems.append(
                f"order {order_id}: tracking number in Next Engine is "
                f"{order['receive_order_delivery_cut_form_id']!r}, not {tracking!r}"
            )
    for code, delta in played.ne_stock.items():
        got = sum(e.delta or 0 for e in ne.ledger.entries(kind="stock.upload", goods_code=code))
        if got != delta:
            problems.append(f"Next Engine stock of {code} moved {got:+d}, expected {delta:+d}")
    for (warehouse, product), delta in played.lk_stock.items():
        got = logikura.ledger.net_stock_change(product, warehouse)
        if got != delta:
            problems.append(
                f"Logikura stock of {product} at {warehouse} moved {got:+d}, expected {delta:+d}"
            )
    if any(i.kind == "adjust_stock" and i.warehouse in UNLINKED for i in items):
        problems.append("an unlinked warehouse changed Next Engine stock")
    traffic = logikura.state.traffic
    grants = {
        f"grant:{e.record_id}"
        for e in logikura.ledger.entries(kind="oauth.token")
        if e.detail.get("grant_type") == "authorization_code"
    }
    busiest = max((traffic.max_in_window(60.0, key) for key in grants), default=0)
    if busiest > 100 or any(traffic.rate_limited(key) for key in grants):
        problems.append(f"nebridge sent {busiest} Logikura requests in one minute")
    _summary(ctx, played, items, stages, created, held, busiest)
    for order in held:
        ctx.info(f"held: order {order.ne_order_id}: {order.hold_reason}")
    if problems:
        ctx.fail("demo check failed:\n  " + "\n  ".join(problems))
    ctx.info(
        f"demo check passed against both sandboxes: {len(played.shipped)} order(s) became one "
        "Logikura schedule each and were shipped once in Next Engine with the right tracking "
        "numbers; stock moved exactly, in Logikura and Next Engine"
    )


def _summary(
    ctx: DemoContext,
    played: Played,
    items: list[DemoOutboxItem],
    stages: list[DemoStage],
    created: dict[str, int],
    held: list[DemoOrder],
    busiest: int,
) -> None:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for stage in stages:
        for key in ("imported", "matched_ignoring_case", "skipped"):
            counts[stage.warehouse][key] += stage.counts.get(key, 0)
    rows = []
    for warehouse in (LINKED, *UNLINKED):
        mine = [i for i in items if i.warehouse == warehouse and i.state == "done"]
        ships = [i for i in mine if i.kind == "ship_order"]
        c = counts.get(warehouse, {})
        lk_delta = sum(d for (w, _p), d in played.lk_stock.items() if w == warehouse)
        ne_delta = sum(played.ne_stock.values()) if warehouse == LINKED else 0
        rows.append(
            [
                warehouse,
                c.get("imported", 0),
                c.get("skipped", 0),
                c.get("matched_ignoring_case", 0),
                len(created) if warehouse == LINKED else 0,
                len(ships),
                sum(1 for i in ships if played.shipped.get(i.subject)),
                f"{ne_delta:+d}",
                f"{lk_delta:+d}",
                sum(1 for h in held if h.warehouse == warehouse),
            ]
        )
    ctx.table(
        "demo summary (Logikura)",
        [
            "warehouse",
            "imported",
            "skipped by tag",
            "matched ignoring case",
            "Logikura schedules",
            "shipped in NE",
            "tracking written",
            "NE stock delta",
            "Logikura stock delta",
            "held",
        ],
        rows,
    )
    ctx.info(f"busiest minute of nebridge's Logikura traffic: {busiest} request(s) (limit 100)")
