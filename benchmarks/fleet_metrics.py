"""A fleet worker's ``/metrics`` at 1,000 companies (issue #19): a scrape, and the refresh.

On a fresh schema of the database given (``--database-url``; dropped at the end with the
companies' schemas, nothing else is touched), ``--schemas`` company schemas are migrated and
each filled with ``--events`` inbox events, as many outbox items (pending, done, in doubt,
failed) and run records over three warehouses. ``--companies`` companies are then watched by
one :class:`~daemon.fleet.metrics.FleetMetrics`, company ``i`` reading schema ``i mod
--schemas`` (migrating a thousand schemas takes minutes; the reads per company are the same).

Printed: one refresh pass over every company (what a scrape would cost if it read every
company's tables: the design this cache avoids), per company; then the median and slowest of
``--scrapes`` scrapes over HTTP on loopback (rendered from the cache), their size and series.

Run from the repository root::

    .venv/bin/python -m benchmarks.fleet_metrics --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text

from daemon.fleet.metrics import FleetMetrics
from daemon.fleet.runtime import FleetDatabase, upgrade_company
from daemon.store.engine import make_engine, upgrade

STATES = ("done", "done", "done", "pending", "in_doubt", "failed")


def _fill(fleet: FleetDatabase, code: str, events: int) -> None:
    """``events`` inbox events, as many outbox items and run records in ``code``'s schema."""
    now = datetime.now(UTC)
    schema = f'"{fleet.schema(code)}"'  # raw SQL: the engine's schema_translate_map is not used
    with fleet.engine.begin() as connection:
        connection.execute(
            text(
                f"INSERT INTO {schema}.inbox_event (kind, external_id, warehouse, content_hash, "
                "payload, source, state, attempts, received_at) VALUES (:kind, :external, "
                ":warehouse, 'h', '{}', 'bench.csv', 'done', 0, :at)"
            ),
            [
                {
                    "kind": ("shipment", "receipt")[n % 2],
                    "external": f"E-{n}",
                    "warehouse": f"W{n % 3}",
                    "at": now,
                }
                for n in range(events)
            ],
        )
        connection.execute(
            text(
                f"INSERT INTO {schema}.outbox_item (idempotency_key, kind, warehouse, plugin, "
                "subject, payload, state, attempts, next_attempt_at, created_at, updated_at) "
                "VALUES (:key, 'ship', :warehouse, 'status_update', :key, '{}', :state, 0, "
                ":at, :at, :at)"
            ),
            [
                {
                    "key": f"K-{n}",
                    "warehouse": f"W{n % 3}",
                    "state": STATES[n % len(STATES)],
                    "at": now,
                }
                for n in range(events)
            ],
        )
        connection.execute(
            text(
                f"INSERT INTO {schema}.run_record (run_id, warehouse, stage, plugin, item, "
                "outcome, items_in, items_out, started_at, finished_at) VALUES (:run, :warehouse, "
                ":stage, '', '', 'ok', 1, 1, :at, :at)"
            ),
            [
                {
                    "run": f"r{n}",
                    "warehouse": f"W{n % 3}",
                    "stage": ("shipments", "receipts", "import_orders")[n % 3],
                    "at": now - timedelta(seconds=n),
                }
                for n in range(events)
            ],
        )


def _scrape(port: int) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as answer:
        body = answer.read()
    return time.perf_counter() - started, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--companies", type=int, default=1000)
    parser.add_argument("--schemas", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--scrapes", type=int, default=10)
    args = parser.parse_args()

    base = f"nbmetrics_{uuid.uuid4().hex[:10]}"
    admin = create_engine(args.database_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{base}"'))
    sep = "&" if "?" in args.database_url else "?"
    url = f"{args.database_url}{sep}options=-csearch_path%3D{base}"
    fleet: FleetDatabase | None = None
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        fleet = FleetDatabase(url, job_slots=4)
        schemas = [f"s{n}" for n in range(args.schemas)]
        started = time.perf_counter()
        for code in schemas:
            upgrade_company(url, code)
            _fill(fleet, code, args.events)
        print(
            f"{args.schemas} company schemas migrated and filled "
            f"({args.events} events, outbox items and runs each): "
            f"{time.perf_counter() - started:.1f} s"
        )
        metrics = FleetMetrics(refresh_seconds=3600.0)
        for n in range(args.companies):
            metrics.watch(f"c{n:04d}", fleet.company_engine(schemas[n % len(schemas)]))
        started, cpu = time.perf_counter(), time.process_time()
        read = metrics.refresh()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"refresh pass, {read} companies: {wall:.2f} s wall ({wall / read * 1000:.1f} ms "
            f"per company), {cpu:.2f} s CPU — a scrape reading every company would cost this"
        )
        metrics.serve("127.0.0.1", 0)
        assert metrics.port is not None
        try:
            times, body = [], b""
            for _ in range(args.scrapes):
                seconds, body = _scrape(metrics.port)
                times.append(seconds)
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            print(
                f"scrape of {args.companies} companies from the cache, {args.scrapes} times: "
                f"median {statistics.median(times) * 1000:.0f} ms, slowest "
                f"{max(times) * 1000:.0f} ms, {len(body) / 1e6:.1f} MB, {series} series "
                f"({series / args.companies:.0f} per company)"
            )
        finally:
            metrics.stop()
    finally:
        if fleet is not None:
            with fleet.engine.connect() as connection:
                owned = [
                    row[0]
                    for row in connection.execute(
                        text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
                        {"p": f"{base}__%"},
                    )
                ]
            fleet.close()
        else:
            owned = []
        with admin.begin() as connection:
            for schema in [*owned, base]:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
