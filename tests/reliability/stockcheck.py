"""The proof that ③ and ④ never lose or double a delta: after a phase, the warehouse counts
its stock and ``nebridge stock diff`` (the real CLI) must find zero unexplained drift.

The counts are the warehouse's own, computed from the workload alone (not from nebridge or
Next Engine): every goods starts with :data:`INITIAL_STOCK` on hand in the linked warehouses
(all but :data:`ASAKUSA_START` at ITAKU), then moves by each event the WMS confirmed at a
linked warehouse — its own shipments and receipts, and the shipments of Next Engine orders
(all from ITAKU).
"""

from __future__ import annotations

import csv
import io
import json

from tests.reliability.workload import AT, INITIAL_STOCK, LINKED, Workload
from tests.reliability.world import World

ASAKUSA_START = 10_000
COUNTED_AT = "2026-11-27 23:00:00"  # after every event of the campaign (all at AT)


def warehouse_counts(workload: Workload) -> dict[str, dict[str, int]]:
    """On hand per linked warehouse and WMS product at the end of the phase."""
    counts: dict[str, dict[str, int]] = {
        "ITAKU": {g.product: INITIAL_STOCK - ASAKUSA_START for g in workload.goods},
        "ASAKUSA": {g.product: ASAKUSA_START for g in workload.goods},
    }
    assert set(counts) == set(LINKED)
    for name, data in workload.other_files:
        sign = 1 if name.startswith("receipts") else -1
        for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
            if row["warehouse"] in counts:
                counts[row["warehouse"]][row["product_code"]] += sign * int(row["quantity"])
    product_of = {g.code.casefold(): g.product for g in workload.goods}
    for rows in workload.orders.values():
        for code, qty in rows:
            counts["ITAKU"][product_of[code.casefold()]] -= qty
    return counts


def unexplained_drift(world: World, workload: Workload) -> list[str]:
    """Drop the counts, take them and compare through the CLI; the goods that drift without
    a known cause (or why the comparison could not be made)."""
    lines = [
        f"{warehouse},{product},{quantity},{COUNTED_AT}"
        for warehouse, products in sorted(warehouse_counts(workload).items())
        for product, quantity in sorted(products.items())
    ]
    assert AT < COUNTED_AT
    world.drop(
        "stock-campaign.csv",
        ("\n".join(["warehouse,product_code,quantity,counted_at", *lines]) + "\n").encode("utf-8"),
    )
    taken = world.cli("stock", "take")
    if taken.returncode != 0:
        return [f"`stock take` exited {taken.returncode}: {taken.stdout[-500:]}"]
    diff = world.cli("stock", "diff", "--json")
    text = diff.stdout
    try:
        data = json.loads(
            text[text.index("\n{") + 1 if not text.startswith("{") else 0 : text.rindex("\n}") + 2]
        )
    except ValueError:
        return [f"`stock diff --json` exited {diff.returncode} without JSON: {text[-500:]}"]
    found = [
        f"{d['goods']} {d['drift']:+d} ({d['explanation'][:80]})"
        for d in data["drifts"]
        if d["unexplained"]
    ]
    if diff.returncode != (1 if found else 0):
        found.append(f"`stock diff` exited {diff.returncode} with {len(found)} unexplained")
    if data["compared"] != len(workload.goods):
        found.append(f"`stock diff` compared {data['compared']} goods, not {len(workload.goods)}")
    return found
