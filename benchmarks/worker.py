"""The measured daemon process: ``python -m benchmarks.worker JOBS.json`` (used by the runner).

Each job is one full daemon pass — :func:`daemon.admin.run_once`: intake, every warehouse
pipeline, the dispatcher — on a configuration the runner prepared, with nebridge's executors
or the naive ones. Its phases are timed through ``run_once``'s progress messages. One JSON
line per job goes to stdout: wall and phase seconds, CPU seconds of this process during the
pass, peak RSS of this process so far, and what the pass reported.

With ``NEBRIDGE_BENCH_PROFILE=FOLDER`` in the environment each pass runs under ``cProfile``
and leaves ``FOLDER/<label>.prof`` (read with ``python -m pstats``); its times are then the
profiler's, not figures for the table.
"""

from __future__ import annotations

import cProfile
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.naive import build_naive_runtime
from daemon.admin import run_once
from daemon.runtime import Runtime, build_runtime

STRATEGIES = ("nebridge", "naive")
#: Environment variable naming a folder: profile every pass into it (see the module text).
PROFILE_ENV = "NEBRIDGE_BENCH_PROFILE"


@dataclass
class JobResult:
    """What one measured pass did and cost."""

    label: str
    wall_s: float = 0.0
    intake_s: float = 0.0
    pipelines_s: float = 0.0
    dispatch_s: float = 0.0
    cpu_s: float = 0.0
    #: CPU seconds of intake and pipelines (inbox -> plugins -> outbox): unlike their wall
    #: time, hardly changed by other processes on a busy machine.
    inbound_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    events: int = 0
    imported: int = 0
    executed: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class _Phases:
    """Timestamps of ``run_once``'s progress messages (intake, warehouses, dispatch)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float, float]] = []

    def __call__(self, message: str) -> None:
        self.marks.append((message, time.perf_counter(), time.process_time()))

    def first(self, prefix: str, default: float) -> float:
        return next((t for m, t, _cpu in self.marks if m.startswith(prefix)), default)

    def first_cpu(self, prefix: str, default: float) -> float:
        return next((cpu for m, _t, cpu in self.marks if m.startswith(prefix)), default)


def peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` would include the parent's at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _runtime(config: Path, strategy: str) -> Runtime:
    if strategy == "naive":
        return build_naive_runtime(config)
    return build_runtime(config)


def run_job(label: str, config: Path, strategy: str) -> JobResult:
    """Build the runtime (not measured), then measure one full pass."""
    runtime = _runtime(config, strategy)
    try:
        phases = _Phases()
        profile_dir = os.environ.get(PROFILE_ENV)
        profiler = cProfile.Profile() if profile_dir else None
        cpu_started, started = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = run_once(runtime, progress=phases)
        ended, cpu_ended = time.perf_counter(), time.process_time()
        if profiler is not None and profile_dir:
            profiler.disable()
            profiler.dump_stats(Path(profile_dir) / f"{label}.prof")
    finally:
        runtime.close()
    warehouses = phases.first("warehouse", ended)
    dispatch = phases.first("dispatching", ended)
    imported = sum(s.counts.get("imported", 0) for s in report.stages)
    return JobResult(
        label=label,
        wall_s=ended - started,
        intake_s=warehouses - phases.first("reading", started),
        pipelines_s=dispatch - warehouses,
        dispatch_s=ended - dispatch,
        cpu_s=cpu_ended - cpu_started,
        inbound_cpu_s=(
            phases.first_cpu("dispatching", cpu_ended) - phases.first_cpu("reading", cpu_started)
        ),
        peak_rss_mb=peak_rss_mb(),
        events=report.intake.events if report.intake else 0,
        imported=imported,
        executed=dict(report.dispatch.executed) if report.dispatch else {},
        problems=report.problems[:5],
    )


def main() -> None:
    """Run every job of the JSON file named on the command line, in order."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    jobs: list[dict[str, Any]] = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    for job in jobs:
        if job["strategy"] not in STRATEGIES:
            raise SystemExit(f"unknown strategy {job['strategy']!r}")
        result = run_job(job["label"], Path(job["config"]), job["strategy"])
        print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
