"""The benchmark runner keeps working: ``python -m benchmarks --smoke`` completes, prints its table.

No figure is asserted: timings belong to ``benchmarks/RESULTS.md``, not to tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ENV, PG_SKIP

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


@pytest.mark.slow
def test_observed_fleet_benchmark_runs_real_workers_and_prints_its_figures(
    tmp_path: Path,
) -> None:
    """benchmarks.fleet_observed with 3 companies, a 4 s interval and a 4 s lease: real
    workers, the sandbox process, the SIGKILL; every row printed, no company ever had two
    Next Engine calls in flight."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    figures = tmp_path / "fleet.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fleet_observed",
            "--database-url",
            base,
            "--companies",
            "3",
            "--interval",
            "4",
            "--observe",
            "10",
            "--workers",
            "2",
            "--lease",
            "4",
            "--json",
            str(figures),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for row in (
        "| companies started by one worker (3,",
        "| on a 4 s schedule, watched",
        "| lateness (gap between a company's rounds − interval) | p50 ",
        "| worker with 3 companies ",
        "| memory per idle company (worker with N vs with 1) | ",
        "| a company with two NE calls in flight | none |",
        "| takeover after SIGKILL (2 workers, 3 companies, lease 4 s;",
    ):
        assert row in done.stdout, done.stdout
    saved = json.loads(figures.read_text(encoding="utf-8"))
    assert saved["schedule"]["rounds_min"] >= 1  # every company's rounds were seen
    assert saved["takeovers"][0]["victim_companies"] >= 1
    assert "two calls in flight: none" in done.stdout
