"""``nebridge demo``: run nebridge end to end on the example configuration, then check it.

The demo works in a fresh folder: it copies the example ``daemon.yaml`` there (pointing its
state and WMS folders into the folder), migrates the database, plays the WMS by dropping a
product master, shipment confirmations (with and without tracking numbers, from Next Engine
orders and from other channels, at linked and unlinked warehouses) and receipts, runs every
pipeline once and prints a per-warehouse summary. It then checks the summary against what
the demo put in, and exits non-zero if they disagree.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select

from daemon.admin import run_once
from daemon.cli.common import fail, info, print_table
from daemon.config import ConfigError, load_config, read_yaml
from daemon.runtime import build_runtime
from daemon.serialize import json_loads
from daemon.store.engine import make_engine, read_session, upgrade
from daemon.store.models import OutboxItem
from daemon.yamledit import dump, write_atomically

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "daemon.yaml"

PRODUCTS = [("P-RED-S", "red-s"), ("P-RED-M", "RED-M"), ("P-BLUE", "blue-01"),
            ("P-SHOP-ONLY", "")]
SHIPMENTS = [
    # shipment_id, warehouse, ne_order_id, tracking, product, qty
    ("S-1001", "ITAKU", "1001", "4912-3456-7890", "P-RED-S", 1),
    ("S-1002", "ITAKU", "1002", "", "P-RED-M", 2),
    ("S-2001", "ITAKU", "", "", "P-BLUE", 3),
    ("S-2002", "SHINJUKU", "", "", "P-BLUE", 5),
    ("S-2003", "ASAKUSA", "", "", "P-RED-S", 1),
]
RECEIPTS = [("R-1", "ITAKU", "P-RED-S", 10), ("R-2", "ITAKU", "P-BLUE", 4),
            ("R-3", "SHINJUKU", "P-BLUE", 7)]


def _write(path: Path, header: str, rows: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    tmp.rename(path)


def play_wms(inbox: Path) -> None:
    """Drop the demo's WMS files into the inbox folder."""
    inbox.mkdir(parents=True, exist_ok=True)
    at = "2026-11-27 10:00:00"
    _write(inbox / "products.csv", "product_code,link_code",
           [f"{p},{link}" for p, link in PRODUCTS])
    _write(inbox / "shipments-demo.csv",
           "shipment_id,warehouse,ne_order_id,tracking_number,confirmed_at,product_code,quantity",
           [f"{s},{w},{o},{t},{at},{p},{q}" for s, w, o, t, p, q in SHIPMENTS])
    _write(inbox / "receipts-demo.csv", "receipt_id,warehouse,confirmed_at,product_code,quantity",
           [f"{r},{w},{at},{p},{q}" for r, w, p, q in RECEIPTS])


def expected_summary(linked: set[str]) -> dict[str, dict[str, int]]:
    """What the example plugins must decide for the demo's input, computed independently."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for _s, wh, order, tracking, _p, qty in SHIPMENTS:
        if order:
            out[wh]["ship_orders"] += 1
            out[wh]["tracking_numbers"] += 1 if tracking else 0
        elif wh in linked:
            out[wh]["stock_delta"] -= qty
    for _r, wh, _p, qty in RECEIPTS:
        if wh in linked:
            out[wh]["stock_delta"] += qty
    return {wh: dict(v) for wh, v in out.items()}


def demo(
    workdir: Annotated[Path | None, typer.Option("--dir", help="Folder to run the demo in "
                                                  "(default: a new temporary folder).")] = None,
) -> None:
    """Run nebridge end to end on the example configuration and check the result."""
    if not EXAMPLE_CONFIG.is_file():
        fail(f"example configuration not found at {EXAMPLE_CONFIG}; run the demo from a "
             "source checkout (see the README's first command)")
    root = workdir or Path(tempfile.mkdtemp(prefix="nebridge-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    info(f"demo folder: {root}")
    raw = read_yaml(EXAMPLE_CONFIG)
    raw["state_dir"] = str(root / "state")
    raw["wms"]["csv"]["inbox"] = str(root / "wms" / "inbox")
    raw["wms"]["csv"]["outbox"] = str(root / "wms" / "outbox")
    config_path = root / "daemon.yaml"
    write_atomically(config_path, dump(raw))
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    engine = make_engine(loaded.config.resolved_database_url)
    upgrade(engine)
    engine.dispose()
    info("… the WMS drops a product master, 5 shipment confirmations and 3 receipts")
    play_wms(root / "wms" / "inbox")
    time.sleep(loaded.config.wms.connector_section().get("stable_seconds", 0.5) + 0.1)
    runtime = build_runtime(loaded=loaded)
    try:
        report = run_once(runtime, progress=lambda m: info(f"… {m}"))
        with read_session(runtime.engine) as session:
            items = list(session.scalars(select(OutboxItem)))
    finally:
        runtime.close()
    got: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in items:
        payload = json_loads(item.payload)
        if item.kind == "ship_order":
            got[item.warehouse]["ship_orders"] += 1
            got[item.warehouse]["tracking_numbers"] += 1 if payload["tracking_number"] else 0
        elif item.kind == "adjust_stock":
            got[item.warehouse]["stock_delta"] += int(payload["delta"])
    linked = {w.code for w in loaded.config.warehouses if w.ne_linked}
    expected = expected_summary(linked)
    rows = []
    for wh in loaded.config.warehouses:
        g, e = got.get(wh.code, {}), expected.get(wh.code, {})
        rows.append([wh.code, wh.name, "yes" if wh.ne_linked else "no",
                     g.get("ship_orders", 0), g.get("tracking_numbers", 0),
                     f"{g.get('stock_delta', 0):+d}", "ok" if dict(g) == e else f"expected {e}"])
    print_table("demo summary (actions queued for Next Engine)",
                ["warehouse", "name", "ne_linked", "ship orders", "tracking numbers",
                 "stock delta", "check"], rows)
    mismatched = [str(r[0]) for r in rows if r[-1] != "ok"]
    if report.intake is None or len(report.intake.accepted) != 2:
        fail("the demo's shipment and receipt files were not both accepted: "
             f"{report.intake.rejected if report.intake else 'no WMS connector'}")
    if mismatched:
        fail(f"demo check failed for warehouse(s) {', '.join(mismatched)}")
    info("demo check passed; the queued actions wait for Next Engine "
         "(the Next Engine link arrives with `nebridge connect`)")
