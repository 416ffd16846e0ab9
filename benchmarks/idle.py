"""Idle cost (issue #18, 5): Next Engine calls per hour and memory with nothing to do.

A linked world (order import on, 1,000 orders already imported, the product master read)
is left with nothing new. A child process runs the daemon's pass — :func:`daemon.admin.run_once`:
intake, the warehouse pipelines, the dispatcher — once per ``schedule.interval_seconds``
(default 60 s) of simulated time: after each pass the sandbox clock moves on by the interval,
so 24 h of idle running are 1,440 passes, run back to back. Figures: Next Engine calls per
hour (counted by the sandbox, after 10 warm-up passes), and the child's RSS after the
warm-up and at the end (target: neither grows). Not measured here: the scheduler's own
timers (APScheduler) and the 1 s intake poll, which make no Next Engine call.

Run from the repository root::

    .venv/bin/python -m benchmarks.idle [--hours 24]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

WARMUP = 10
INTERVAL_S = 60.0  # the default schedule.interval_seconds


def _rss_mb() -> float:
    """This process's resident memory now (``VmRSS``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _post(base: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=30).read()


def _calls(base: str) -> dict[str, int]:
    """The Next Engine calls the sandbox received so far, by path."""
    with urllib.request.urlopen(base + "/_sandbox/stats", timeout=30) as answer:
        return dict(json.loads(answer.read())["calls_by_path"])


def child(config: Path, base: str, passes: int) -> None:
    """The measured process: ``passes`` daemon passes, one simulated interval apart."""
    from daemon.admin import run_once
    from daemon.runtime import build_runtime

    runtime = build_runtime(config)
    try:
        figures: dict[str, Any] = {}
        for number in range(WARMUP + passes):
            if number == WARMUP:
                figures.update(rss_warm_mb=_rss_mb(), calls_warm=_calls(base))
            report = run_once(runtime)
            failures = [f for stage in report.stages for f in stage.failures]
            if failures:
                raise SystemExit(f"pass {number}: {failures[0]}")
            _post(base, "/_sandbox/clock", {"advance_seconds": INTERVAL_S})
        figures.update(rss_end_mb=_rss_mb(), calls_end=_calls(base))
    finally:
        runtime.close()
    print(json.dumps(figures))


def main() -> None:
    """Prepare the world, run the child, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated idle hours")
    parser.add_argument(
        "--child", nargs=3, metavar=("CONFIG", "BASE", "PASSES"), help=argparse.SUPPRESS
    )
    opts = parser.parse_args()
    if opts.child:
        child(Path(opts.child[0]), opts.child[1], int(opts.child[2]))
        return
    from benchmarks.world import start_world

    passes = round(opts.hours * 3600 / INTERVAL_S)
    with tempfile.TemporaryDirectory(prefix="nebridge-idle-") as scratch:
        world = start_world(
            Path(scratch), 0, import_orders=True, schedule={"interval_seconds": INTERVAL_S}
        )
        try:
            world.create_orders(1_000)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.idle",
                    "--child",
                    str(world.config),
                    world.sandbox.base_url,
                    str(passes),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=6 * 3600,
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr[-2000:])
            figures = json.loads(done.stdout.splitlines()[-1])
        finally:
            world.close()
    by_path = Counter(figures["calls_end"]) - Counter(figures["calls_warm"])
    calls = sum(by_path.values())
    names = ", ".join(f"{path.removeprefix('/api_v1_')} {n}" for path, n in sorted(by_path.items()))
    hours = passes * INTERVAL_S / 3600
    print(f"| idle, default interval {INTERVAL_S:.0f} s | figure |")
    print("|---|---|")
    print(f"| simulated idle time | {hours:g} h ({passes} passes after {WARMUP} warm-up) |")
    print(f"| Next Engine calls | {calls} ({calls / hours:.1f} per hour: {names or 'none'}) |")
    print(
        f"| RSS after warm-up / after {hours:g} h | {figures['rss_warm_mb']:.0f} MB / "
        f"{figures['rss_end_mb']:.0f} MB |"
    )


if __name__ == "__main__":
    main()
