"""How fast the CLI answers, before and after, side by side in one run (issue #18, not a test).

Each command runs as a whole process (``python -m daemon ARGS`` in a folder holding a
``daemon.yaml`` on a SQLite database that tree migrated, so ``status`` of either tree reads
a database at its own latest migration), ``--runs`` times per tree, the trees
interleaved run by run so that the machine's load falls on both alike. The figures are the
median wall time and the median CPU time (user + system) of the process: on a busy machine
the wall time waits for a core, the CPU time much less so. ``--before REF`` checks REF out
into a temporary git worktree (removed afterwards) and runs it with the same interpreter
and packages (``PYTHONPATH`` puts that tree first). Targets (wall, idle machine):
``--help`` ≤ 0.20 s, ``plugins list`` ≤ 0.40 s, ``status`` ≤ 0.50 s.

Run from the repository root::

    .venv/bin/python -m benchmarks.cli_startup --before 17cbd16 [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS: tuple[tuple[str, ...], ...] = (("--help",), ("plugins", "list"), ("status",))
TARGETS = {"--help": 0.20, "plugins list": 0.40, "status": 0.50}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall(tree: Path, args: tuple[str, ...], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one whole ``python -m daemon ARGS`` process of ``tree``."""
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{tree}: nebridge {' '.join(args)} failed: {done.stderr[-500:]}")
    return elapsed, _children_cpu() - cpu


def main() -> None:
    """Measure and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision to compare with (a temporary worktree)")
    parser.add_argument("--runs", type=int, default=10)
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nebridge-cli-bench-"))
    trees = {"after": REPO}
    try:
        if opts.before:
            trees = {"before": work / "before", "after": REPO}
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO),
                    "worktree",
                    "add",
                    "-q",
                    "--detach",
                    str(trees["before"]),
                    opts.before,
                ],
                check=True,
            )
        folders = {}
        for name, tree in trees.items():  # each tree on a database at its own latest migration
            folders[name] = work / f"cfg-{name}"
            folders[name].mkdir()
            shutil.copy(REPO / "daemon.yaml", folders[name] / "daemon.yaml")
            wall(tree, ("db", "upgrade"), folders[name])
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        load = os.getloadavg()[0]
        for _ in range(opts.runs):
            for args in COMMANDS:
                for name, tree in trees.items():
                    times.setdefault((name, " ".join(args)), []).append(
                        wall(tree, args, folders[name])
                    )
        head = " | ".join(f"{name} wall s | {name} CPU s" for name in trees)
        print(f"| command | {head} | target s (wall) |")
        print("|---|" + "---|---|" * len(trees) + "---|")
        for args in COMMANDS:
            label = " ".join(args)
            cells = " | ".join(
                f"{statistics.median(w for w, _ in times[(n, label)]):.2f} | "
                f"{statistics.median(c for _, c in times[(n, label)]):.2f}"
                for n in trees
            )
            print(f"| `nebridge {label}` | {cells} | ≤ {TARGETS[label]:.2f} |")
        print(
            f"\nmedians of {opts.runs} runs; load average (1 min) {load:.2f} before, "
            f"{os.getloadavg()[0]:.2f} after"
        )
    finally:
        if opts.before:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "before")],
                check=False,
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
