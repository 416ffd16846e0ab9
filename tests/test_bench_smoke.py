"""The benchmark runner keeps working: ``python -m benchmarks --smoke`` completes, prints its table.

No figure is asserted: timings belong to ``benchmarks/RESULTS.md``, not to tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_smoke_run_completes_and_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    header = done.stdout.splitlines()[0]
    assert header.startswith("NE ms") and "naive calls ×" in header
    for workload in ("ship-1k", "other-10k", "receipts-10k", "import-100k", "latency"):
        assert f"  {workload} " in done.stdout
