"""Database round trips of an idle fleet company, job by job (issue #19).

One worker keeps ~1,000 idle companies on schedule only if each company's minute is cheap in
what it asks PostgreSQL, which runs on the same cores. This counts, for one idle company
(linked, order import on, nothing new, Next Engine a loopback sandbox), every round trip
each of its scheduled jobs makes in one run after two warm-up runs: transactions begun,
statements, commits, rollbacks and connection pings, on the worker's pool and on its
control pool. Multiplied by how often each job runs at the default schedule, it gives the
round trips per idle company-minute, the figure :mod:`benchmarks.fleet_observed` pays for
a thousand times over.
Counts, not seconds: the figures are the same on a busy machine.

Run from the repository root::

    .venv/bin/python -m benchmarks.fleet_roundtrips --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from benchmarks.fleet import CLIENT_ID, CLIENT_SECRET, bench_schema, write_fleet

#: What is counted as a round trip (the intake poll, every second, makes none).
KINDS = ("begin", "statement", "commit", "rollback", "ping")


def count_round_trips(engines: dict[str, Engine], counts: Counter[str]) -> None:
    """Count every round trip of ``engines`` into ``counts`` (``pool.kind``)."""
    for name, engine in engines.items():

        def on_statement(*_: Any, pool: str = name, **__: Any) -> None:
            counts[f"{pool}.statement"] += 1

        def on_begin(*_: Any, pool: str = name) -> None:
            counts[f"{pool}.begin"] += 1

        def on_commit(*_: Any, pool: str = name) -> None:
            counts[f"{pool}.commit"] += 1

        def on_rollback(*_: Any, pool: str = name) -> None:
            counts[f"{pool}.rollback"] += 1

        event.listen(engine, "before_cursor_execute", on_statement)
        event.listen(engine, "begin", on_begin)
        event.listen(engine, "commit", on_commit)
        event.listen(engine, "rollback", on_rollback)
        dialect = engine.dialect
        ping = dialect.do_ping

        def counted_ping(connection: Any, pool: str = name, ping: Any = ping) -> bool:
            counts[f"{pool}.ping"] += 1
            return bool(ping(connection))

        dialect.do_ping = counted_ping  # type: ignore[method-assign,assignment]


#: The plugins of the benchmark's companies, and with ``--with-sink`` a notification sink
#: (a webhook nothing listens to: an idle company has nothing to say).
PLUGINS = ("status_update", "tracking_update", "stock_minus", "stock_plus")
SINK = {"notify_webhook": {"enabled": True, "format": "json", "url": "http://127.0.0.1:9/hook"}}


def measure(database_url: str, with_sink: bool = False) -> dict[str, Any]:
    """Round trips per run of each job, and per idle company-minute."""
    from daemon.config import load_config
    from daemon.fleet.companies import Companies
    from daemon.fleet.leases import LeaseKeeper
    from daemon.fleet.runtime import FleetDatabase, company_runtime
    from daemon.nelink import connect
    from daemon.pipeline import Stage
    from daemon.sandbox import SandboxConfig, SandboxServer
    from daemon.scheduler import EVENT_STAGES, JobHost, Scheduler

    sandbox = SandboxServer(
        SandboxConfig.from_mapping(
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "seed_size": 0}
        )
    ).start()
    counts: Counter[str] = Counter()
    per_run: dict[str, dict[str, int]] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch, bench_schema(database_url) as url:
            plugins: dict[str, Any] = {name: {"enabled": True} for name in PLUGINS}
            settings = {"plugins": plugins | (SINK if with_sink else {})}
            config = write_fleet(
                Path(scratch), url, ["c1"], {"c1": sandbox.base_url}, True, settings
            )
            loaded = load_config(config)
            fleet = FleetDatabase(url, credentials_dir=loaded.config.credentials_dir)
            keeper = LeaseKeeper(fleet.engine, ["c1"], worker_id="bench-roundtrips")
            keeper.start()
            company = Companies(loaded).companies["c1"]
            runtime = company_runtime(loaded, company, lease=keeper.lease("c1"), fleet=fleet)
            try:
                login = sandbox.state.issue_login()
                connect(runtime.config, runtime.engine, *login, store=fleet.vault.store("c1"))
                runtime.start_connector()
                scheduler = Scheduler(runtime, host=JobHost.for_worker(8), company="c1", share=4)
                scheduler.run_now = lambda job_id: None  # type: ignore[method-assign]
                pipeline = runtime.pipelines()[0]
                jobs: dict[str, Callable[[], None]] = {
                    "dispatcher": scheduler._dispatch,
                    "notify": scheduler._notify,
                    "database alarm": scheduler._database_alarm,
                    "intake": scheduler._intake,
                    "warehouse (shipments, receipts)": scheduler._pipeline_job(
                        pipeline, EVENT_STAGES
                    ),
                    "order import": scheduler._pipeline_job(pipeline, (Stage.IMPORT_ORDERS,)),
                    "token guard": scheduler._guard_tokens,
                }
                count_round_trips({"work": fleet.engine, "control": fleet.control}, counts)
                for name, job in jobs.items():
                    for _ in range(3):
                        scheduler._last_full_intake = 0.0  # the intake's once-an-interval run
                        counts.clear()
                        job()
                    per_run[name] = dict(counts)
                schedule = runtime.config.schedule
                notify_runs = 60 / runtime.config.notify.interval_seconds if with_sink else 0
                runs = {
                    "dispatcher": 60 / schedule.dispatch_interval_seconds,
                    # scheduled only for a company with a sink to tell
                    "notify": notify_runs,
                    "database alarm": notify_runs,
                    "intake": 60 / schedule.interval_seconds,
                    "warehouse (shipments, receipts)": 60 / schedule.interval_seconds,
                    "order import": 60 / schedule.interval_seconds,
                    "token guard": 1 / schedule.token_guard_minutes,
                }
            finally:
                keeper.stop()
                runtime.close()
                fleet.close()
    finally:
        sandbox.stop()
    return {"per_run": per_run, "runs_per_minute": runs}


def render(figures: dict[str, Any]) -> str:
    """The table: round trips per run by kind, runs per minute, round trips per minute."""
    lines = [
        "| job (idle company, fleet) | begins | statements | commits | rollbacks | pings | "
        "round trips per run | runs per minute | round trips per minute |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    for name, counts in figures["per_run"].items():
        by_kind = {kind: sum(n for k, n in counts.items() if k.endswith(kind)) for kind in KINDS}
        trips = sum(by_kind.values())
        runs = figures["runs_per_minute"][name]
        total += trips * runs
        cells = " | ".join(str(by_kind[kind]) for kind in KINDS)
        lines.append(f"| {name} | {cells} | {trips} | {runs:g} | {trips * runs:.0f} |")
    lines.append(f"| **per idle company-minute** | | | | | | | | **{total:.0f}** |")
    return "\n".join(lines)


def main() -> None:
    """Measure and print the table (``--json`` also writes the figures)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL database")
    parser.add_argument(
        "--with-sink", action="store_true", help="the company has a notification sink (webhook)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = measure(args.database_url, args.with_sink)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    print(render(figures))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
