"""The fleet section of the benchmarks keeps working: ``python -m benchmarks.fleet`` at tiny
sizes and a short lease completes, prints its table and leaves no schema behind.

No timing is asserted (they belong to ``benchmarks/RESULTS.md``); what is checked are facts:
an idle round calls Next Engine, a takeover happens at all, and the drop of every schema.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_ENV, PG_SKIP

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fleet_benchmark_runs_at_tiny_sizes_and_cleans_up(tmp_path: Path) -> None:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(PG_SKIP)
    figures = tmp_path / "fleet.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fleet",
            "--database-url",
            url,
            "--round-companies",
            "2",
            "--rounds",
            "1",
            "--memory-companies",
            "3",
            "--lease-companies",
            "20",
            "--lease",
            "2",
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
    assert done.stdout.startswith("| fleet (PostgreSQL) | figure |")
    for row in ("idle round per company", "memory per idle company", "takeover after SIGKILL"):
        assert row in done.stdout
    data = json.loads(figures.read_text(encoding="utf-8"))
    assert data["calls_per_round"] > 0 and data["takeover_three_workers_s"] > 0
    own = re.findall(r"^fleet: schema (nbfleetbench_[0-9a-f]+) ", done.stderr, re.M)
    assert len(own) == 6  # round, memory, lease rounds of 1 and 3 workers, 2 takeovers
    assert not bench_schemas(url, own)  # its schemas, the companies' too, are gone


def bench_schemas(url: str, own: list[str]) -> list[str]:
    """The schemas left of ``own`` and their companies' (another run may be going on)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    text(
                        "SELECT nspname FROM pg_namespace WHERE nspname = ANY(CAST(:own AS "
                        "text[])) "
                        "OR split_part(nspname, '_', 1) || '_' || split_part(nspname, '_', 2) "
                        "= ANY(CAST(:own AS text[]))"
                    ),
                    {"own": own},
                ).scalars()
            )
    finally:
        engine.dispose()
