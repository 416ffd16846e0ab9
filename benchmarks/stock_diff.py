"""``nebridge stock diff`` at scale: N goods × 3 linked warehouses (not a test).

Starts the Next Engine sandbox with N goods, a linked configuration with three linked
warehouses and a product master of N products (every third link code in another letter
case), drops one ``stock-*.csv`` per warehouse (the goods' stock split over the three, 100
goods off by a few units), then runs the real CLI in child processes: ``nebridge stock take``
(the snapshots into the database) and ``nebridge stock diff --json`` (the comparison).
Measured per command: wall time, peak RSS of the child (``ru_maxrss``), and the Next Engine
calls the sandbox counted. The sandbox answers at once (``latency_ms`` 0), so the wall time
is nebridge's own plus loopback HTTP; each NE call adds its latency on top in production.

Targets (issue #16): diff ≤ 30 s + Next Engine time, ≤ 11 Next Engine calls, ≤ 250 MB.

Run from the repository root::

    .venv/bin/python -m benchmarks.stock_diff [GOODS]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.world import CLIENT_ID, CLIENT_SECRET, _yaml_text
from daemon.config import load_config
from daemon.nelink import connect
from daemon.sandbox import SandboxConfig, SandboxServer
from daemon.store.engine import make_engine, upgrade

WAREHOUSES = ("W1", "W2", "W3")
DRIFTING = 100
COUNTED_AT = "2026-11-27 12:00:00"


def goods(index: int) -> str:
    """The NE goods code of goods ``index``."""
    return f"G-{index:06d}"


def link(index: int) -> str:
    """The link code the WMS holds: every third in another letter case."""
    return goods(index).lower() if index % 3 == 0 else goods(index)


def quantity(index: int) -> int:
    """The NE stock of goods ``index``."""
    return 3 + index % 50


def write(path: Path, header: str, rows: Any) -> None:
    """A complete file, renamed into place (the inbox takes only finished files)."""
    temporary = path.with_name(f".{path.name}.part")
    with temporary.open("w", encoding="utf-8", newline="") as stream:
        stream.write(header + "\n")
        stream.writelines(row + "\n" for row in rows)
    os.replace(temporary, path)


def setup(root: Path, count: int) -> tuple[SandboxServer, Path]:
    """The sandbox with ``count`` goods and a linked configuration; the WMS files dropped."""
    sandbox = SandboxServer(
        SandboxConfig.from_mapping(
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "seed_size": 0}
        )
    ).start()
    for index in range(count):
        sandbox.state.create_goods(goods(index), quantity=quantity(index))
    inbox = root / "wms" / "inbox"
    inbox.mkdir(parents=True)
    settings = {
        "state_dir": str(root / "state"),
        "log_level": "WARNING",
        "nextengine": {
            "api_base": sandbox.base_url,
            "login_base": sandbox.base_url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        "wms": {
            "connector": "csv",
            "csv": {
                "inbox": str(inbox),
                "outbox": str(root / "wms" / "outbox"),
                "stable_seconds": 0.0,
            },
        },
        "warehouses": [
            {"code": code, "name": code, "ne_linked": True, "import_orders": False}
            for code in WAREHOUSES
        ],
        "plugins": {
            name: {"enabled": True}
            for name in (
                "status_update",
                "tracking_update",
                "stock_minus",
                "stock_plus",
                "case_insensitive_match",
            )
        },
    }
    config = root / "daemon.yaml"
    config.write_text(_yaml_text(settings), encoding="utf-8")
    loaded = load_config(config).config
    engine = make_engine(loaded.resolved_database_url)
    upgrade(engine)
    connect(loaded, engine, *sandbox.state.issue_login())
    engine.dispose()
    write(
        inbox / "products.csv",
        "product_code,link_code",
        (f"P-{i:06d},{link(i)}" for i in range(count)),
    )
    return sandbox, config


def drop_counts(config: Path, count: int) -> None:
    """One stock file per warehouse: each goods' NE stock split over the three; the first
    :data:`DRIFTING` goods counted one unit more at W1 (drift nebridge cannot explain)."""
    inbox = Path(load_config(config).config.wms.connector_section()["inbox"])
    for position, code in enumerate(WAREHOUSES):

        def rows(position: int = position, code: str = code) -> Any:
            for i in range(count):
                share = quantity(i) // 3 + (quantity(i) % 3 if position == 0 else 0)
                extra = 1 if position == 0 and i < DRIFTING else 0
                yield f"{code},P-{i:06d},{share + extra},{COUNTED_AT}"

        write(inbox / f"stock-{code}.csv", "warehouse,product_code,quantity,counted_at", rows())


def cli(config: Path, *args: str) -> tuple[float, float, int, str]:
    """Run ``nebridge`` in a child; (wall s, that child's peak RSS in MB, exit code, stdout)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(config), *args], stdout=out, stderr=err
        )
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode not in (0, 1):
        raise RuntimeError(f"nebridge {' '.join(args)} failed: {stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024, child.returncode, stdout


def calls(sandbox: SandboxServer) -> Counter[str]:
    """Next Engine calls the sandbox answered so far, by path."""
    return Counter(sandbox.state.traffic.snapshot()["calls_by_path"])


def main(count: int) -> dict[str, Any]:
    """Run the benchmark for ``count`` goods; print and return the figures."""
    with tempfile.TemporaryDirectory(prefix="nebridge-stock-bench-") as folder:
        root = Path(folder)
        sandbox, config = setup(root, count)
        try:
            cli(config, "run", "--once")  # takes the product master
            drop_counts(config, count)
            before = calls(sandbox)
            take_wall, take_peak, take_exit, _out = cli(config, "stock", "take")
            middle = calls(sandbox)
            diff_wall, diff_peak, diff_exit, diff_out = cli(config, "stock", "diff", "--json")
            after = calls(sandbox)
            data = json.loads(diff_out)
        finally:
            sandbox.stop()
    figures = {
        "goods": count,
        "warehouses": len(WAREHOUSES),
        "take_wall_s": round(take_wall, 2),
        "take_peak_rss_mb": round(take_peak, 1),
        "take_exit": take_exit,
        "take_ne_calls": sum((middle - before).values()),
        "diff_wall_s": round(diff_wall, 2),
        "diff_peak_rss_mb": round(diff_peak, 1),
        "diff_exit": diff_exit,
        "diff_ne_calls": dict(after - middle),
        "diff_ne_seconds": data["ne_seconds"],
        "diff_wall_minus_ne_s": round(diff_wall - data["ne_seconds"], 2),
        "compared": data["compared"],
        "unexplained": data["unexplained"],
        "check": (
            "ok"
            if data["compared"] == count
            and data["unexplained"] == DRIFTING
            and diff_exit == 1
            and take_exit == 0
            else "FAILED"
        ),
    }
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
