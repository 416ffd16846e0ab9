"""``python -m benchmarks.order_watch``: what watching imported orders costs (issue #15).

Against the Next Engine sandbox over HTTP with the CSV connector and ``order_import.claim:
tag`` (nebridge writes a tag on every order it imports, so every imported order is modified
by nebridge itself right after import — the watch's worst ordinary case):

1. **Calls per interval**: the order-import stage (import + watch) run ``--intervals`` times
   with nothing changed in Next Engine, with and without ``order_watch``; the Next Engine calls
   each run made (the sandbox counts them).
2. **One watch pass over N watched orders** (``--orders``, default 10,000): after the import
   of N orders and the claim tags it wrote, the next import run reads all N again (modified
   since the cursor) and compares each with the instruction it was sent with. Printed: CPU
   seconds of that pass in the importing thread (``time.thread_time``: the sandbox's server
   threads are not counted), and the growth of the process's resident memory across the pass
   (the sandbox answering in the same process is counted: an upper bound).
3. **Detection**: one order cancelled and one edited, then one import run: what the WMS got.
"""

from __future__ import annotations

import argparse
import csv
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from benchmarks.world import WAREHOUSE, World, start_world
from daemon.admin import run_once
from daemon.runtime import Runtime, build_runtime
from hooks.records import WarehouseInfo


def _rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    with open("/proc/self/statm", encoding="ascii") as stream:
        pages = int(stream.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def _configure(world: World, watch: bool) -> None:
    """Switch ``order_watch`` and the tag claim in the world's ``daemon.yaml``."""
    yaml = YAML(typ="safe", pure=True)
    data: dict[str, Any] = yaml.load(world.config.read_text(encoding="utf-8"))
    data["plugins"]["order_watch"] = {"enabled": watch}
    data["order_import"] = {"claim": "tag"}
    with world.config.open("w", encoding="utf-8") as stream:
        yaml.dump(data, stream)


def _calls(world: World) -> Counter[str]:
    return Counter(world.sandbox.state.traffic.snapshot()["calls_by_path"])


def _import_run(rt: Runtime, world: World) -> tuple[int, float, float]:
    """One order-import stage run: (NE calls, thread CPU s, RSS growth MB)."""
    importer = rt.order_importer()
    assert importer is not None
    info = WarehouseInfo(code=WAREHOUSE, name="委託販売在庫", ne_linked=True, import_orders=True)
    before, cpu, rss = _calls(world), time.thread_time(), _rss_mb()
    result = importer.run(info, dry_run=False)
    cpu, rss = time.thread_time() - cpu, _rss_mb() - rss
    assert not result.failures, result.failures
    return sum((_calls(world) - before).values()), cpu, rss


def _prime(rt: Runtime, world: World) -> tuple[int, float]:
    """The first whole daemon pass (product master, full scan, instructions, claim tags):
    (NE calls, thread CPU s)."""
    before, cpu = _calls(world), time.thread_time()
    report = run_once(rt)
    assert report.problems == [], report.problems
    return sum((_calls(world) - before).values()), time.thread_time() - cpu


def _world(root: Path, watch: bool) -> World:
    world = start_world(root, 0, import_orders=True)
    _configure(world, watch)
    return world


def calls_per_interval(root: Path, orders: int, intervals: int) -> dict[str, list[int]]:
    """NE calls of each import run with nothing changed, with and without the watch."""
    out: dict[str, list[int]] = {}
    for watch in (False, True):
        world = _world(root / f"calls-{watch}", watch)
        try:
            world.create_orders(orders)
            rt = build_runtime(world.config)
            try:
                _prime(rt, world)
                runs = [_import_run(rt, world)[0] for _ in range(intervals + 1)]
            finally:
                rt.close()
            out["import + watch" if watch else "import alone"] = runs[1:]
        finally:
            world.close()
    return out


def watch_pass(root: Path, orders: int) -> dict[str, float]:
    """CPU and memory of the pass that re-reads and compares ``orders`` watched orders."""
    world = _world(root / "pass", True)
    try:
        world.create_orders(orders)
        rt = build_runtime(world.config)
        try:
            first = _prime(rt, world)  # full scan, instruct, claim tags (own writes)
            calls, cpu, rss = _import_run(rt, world)
            quiet = _import_run(rt, world)
        finally:
            rt.close()
        cancels = list(world.outbox.glob("cancellations-*.csv"))
        assert sum(1 for p in world.outbox.glob("orders-*.csv")) == 1
        return {
            "orders": orders,
            "import_calls": first[0],
            "import_cpu_s": first[1],
            "pass_calls": calls,
            "pass_cpu_s": cpu,
            "pass_rss_growth_mb": rss,
            "quiet_calls": quiet[0],
            "quiet_cpu_s": quiet[1],
            "false_changes": len(cancels),
        }
    finally:
        world.close()


def detection(root: Path) -> dict[str, Any]:
    """Cancel one order and edit another: what the WMS files say after one import run."""
    world = _world(root / "detect", True)
    try:
        ids = world.create_orders(5)
        rt = build_runtime(world.config)
        try:
            _prime(rt, world)
            _import_run(rt, world)
            st = world.sandbox.state
            st.human_edit(ids[0], {"receive_order_cancel_type_id": "1"})
            st.human_edit(ids[1], {"receive_order_consignee_address1": "大阪府大阪市北区1-1"})
            calls = _import_run(rt, world)[0]
        finally:
            rt.close()
        rows = [
            r
            for p in sorted(world.outbox.glob("cancellations-*.csv"))
            for r in csv.DictReader(p.open(encoding="utf-8", newline=""))
        ]
        return {
            "calls": calls,
            "cancellations": [(r["ne_order_id"], r["reason"]) for r in rows],
            "expected": [(str(ids[0]), "cancelled"), (str(ids[1]), "edited")],
        }
    finally:
        world.close()


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.order_watch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--intervals", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nebridge-watch-bench-") as tmp:
        root = Path(tmp)
        for name, runs in calls_per_interval(root, 50, args.intervals).items():
            print(f"NE calls per import run, nothing changed, {name}: {runs}")
        found = detection(root)
        print(
            f"one change each: {found['calls']} NE call(s); cancellations file: "
            f"{found['cancellations']} (expected {found['expected']})"
        )
        figures = watch_pass(root, args.orders)
        print(
            f"{figures['orders']:,} orders: import {figures['import_calls']} NE calls, "
            f"{figures['import_cpu_s']:.2f} s CPU; watch pass over all of them (claim tags "
            f"written by nebridge): {figures['pass_calls']} NE calls, "
            f"{figures['pass_cpu_s']:.2f} s CPU, RSS growth "
            f"{figures['pass_rss_growth_mb']:.1f} MB, {figures['false_changes']} false "
            f"change(s); quiet pass: {figures['quiet_calls']} NE calls, "
            f"{figures['quiet_cpu_s']:.2f} s CPU"
        )


if __name__ == "__main__":
    main()
