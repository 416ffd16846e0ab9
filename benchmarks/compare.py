"""Before and after, SQLite and PostgreSQL, side by side in one run (issue #18, not a test).

``python -m benchmarks.compare --before REF [--database-url URL] [--repeat N] [-- RUNNER
OPTIONS]`` runs the table of :mod:`benchmarks.runner` (``python -m benchmarks``) for every
combination of tree (``REF`` checked out into a temporary git worktree, and this tree) and
database (SQLite, and the PostgreSQL database given; the ``benchmarks`` package of this tree
measures both trees), ``--repeat`` times, the combinations
interleaved round by round so that the machine's load falls on all of them alike. It prints
one Markdown table: per workload and database, the median inbox → plugins → outbox rate (per
wall second, and per CPU second of intake and pipelines, which a busy machine hardly
changes), wall time and peak RSS of each tree, and the Next Engine calls (which must be equal), with
the load average before and after.

Run from the repository root, e.g.::

    .venv/bin/python -m benchmarks.compare --before 17cbd16 --repeat 3 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1/bench \\
        -- --workloads ship-10k,receipts-10k --latencies 0 --strategies nebridge
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import calls_text

REPO = Path(__file__).resolve().parents[1]
SQLITE = "SQLite"
POSTGRES = "PostgreSQL"


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` if it does not exist (through ``postgres``)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).first()
            if found is None:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def run_table(
    tree: Path, database_url: str | None, runner_args: Sequence[str], out: Path
) -> dict[str, Any]:
    """The figures of one ``python -m benchmarks`` run of ``tree`` (its JSON: ``rows`` and
    the passes, ``runs``)."""
    command = [sys.executable, "-m", "benchmarks", *runner_args, "--json", str(out)]
    if database_url:
        ensure_database(database_url)  # a test suite running alongside may have dropped it
        command += ["--database-url", database_url]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: python -m benchmarks failed:\n{done.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


def inbound_per_cpu_s(data: dict[str, Any], row: dict[str, Any]) -> float | None:
    """Events per CPU second of intake and pipelines in the nebridge pass behind ``row``
    (None for a tree whose worker did not record it)."""
    for run in data["runs"]:
        if (
            run["strategy"] == "nebridge"
            and run["latency_ms"] == row["latency_ms"]
            and run["size"] == row["events"]
            and row["workload"].startswith(run["kind"])
        ):
            cpu = run["job"].get("inbound_cpu_s")
            return run["size"] / cpu if cpu else None
    return None


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _calls(row: dict[str, Any]) -> str:
    return calls_text(row["calls"]) or "—"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def render(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    trees: Sequence[str],
    databases: Sequence[str],
) -> str:
    """One Markdown line per workload and database: medians per tree, calls, checks."""
    head = ["workload", "database"]
    for tree in trees:
        head += [f"{tree} pipe ev/s", f"{tree} pipe ev/CPU s", f"{tree} wall s", f"{tree} RSS"]
    head += ["NE calls (" + " / ".join(trees) + ")", "check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = results[(trees[0], databases[0])][0]["rows"]
    for index, base in enumerate(first):
        for database in databases:
            cells = [f"{base['workload']} ({base['latency_ms']} ms)", database]
            calls, checks = [], []
            for tree in trees:
                runs = results[(tree, database)]
                rounds = [data["rows"][index] for data in runs]
                cells += [
                    _num(_median([r["pipeline_events_per_s"] for r in rounds])),
                    _num(_median([inbound_per_cpu_s(data, data["rows"][index]) for data in runs])),
                    _num(_median([r["wall_s"] for r in rounds]), 2),
                    rounds[-1]["rss"],
                ]
                calls.append(_calls(rounds[-1]))
                checks.append("/".join(sorted({r["check"] for r in rounds})))
            cells.append(calls[0] if len(set(calls)) == 1 else " / ".join(calls))
            cells.append(" / ".join(checks))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run every tree × database ``--repeat`` times, interleaved; print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--before", help="git revision to compare with (a temporary worktree)")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="also run on this PostgreSQL database (emptied by every run)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians")
    parser.add_argument(
        "runner_args", nargs="*", help="options for python -m benchmarks (after --)"
    )
    opts = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="nebridge-compare-"))
    trees = {"after": REPO}
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
        # The same harness measures both trees: only the code measured differs.
        shutil.copytree(
            REPO / "benchmarks",
            trees["before"] / "benchmarks",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    databases = {SQLITE: None, **({POSTGRES: opts.database_url} if opts.database_url else {})}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    loads = [_load()]
    try:
        for round_no in range(opts.repeat):
            for database, url in databases.items():
                for name, tree in trees.items():
                    print(
                        f"round {round_no + 1}/{opts.repeat}: {name} on {database} "
                        f"(load {_load()})",
                        file=sys.stderr,
                        flush=True,
                    )
                    data = run_table(tree, url, opts.runner_args, work / "figures.json")
                    results.setdefault((name, database), []).append(data)
        loads.append(_load())
        print(render(results, list(trees), list(databases)))
        print(
            f"\nmedians of {opts.repeat} rounds; load average (1, 5, 15 min) before "
            f"{loads[0]}, after {loads[-1]}"
        )
    finally:
        if opts.before:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees["before"])],
                check=False,
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
