"""A fleet worker for the lease tests, run as its own process (``python -m``).

It keeps leases with :class:`~daemon.fleet.leases.LeaseKeeper` on a background thread, like the
daemon would, and on its main thread commits one "effect" row per held company every
``--every`` seconds, each in a transaction fenced with the epoch it believes it holds. Each
refused effect prints one JSON line ``{"refused": company, "epoch": n}``; each balance change
prints ``{"held": [...]}``. A work cycle keeps the leases it started with for ``--cycle``
seconds, as a daemon's round for a company runs with the lease it started under.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from daemon.fleet.leases import LeaseKeeper, LeaseLost, fence, fleet_engine


def say(record: dict[str, object]) -> None:
    """One JSON line on stdout, flushed (the test reads it while we run)."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--companies", type=int, required=True)
    parser.add_argument("--lease", type=float, required=True)
    parser.add_argument("--every", type=float, default=0.1)
    parser.add_argument(
        "--cycle",
        type=float,
        default=1.0,
        help="seconds a work cycle keeps the leases it started with",
    )
    args = parser.parse_args()
    engine = fleet_engine(args.url, lease_seconds=args.lease)
    codes = [f"c{n:03d}" for n in range(args.companies)]
    keeper = LeaseKeeper(engine, codes, lease_seconds=args.lease)
    keeper.start()
    say({"worker": keeper.worker_id, "pid": os.getpid()})
    shown: list[str] = []
    held: dict[str, int] = {}
    cycle_start = -args.cycle
    while True:
        if time.monotonic() - cycle_start >= args.cycle:  # a cycle works with what it started
            held, cycle_start = keeper.held(), time.monotonic()
        if sorted(held) != shown:
            shown = sorted(held)
            say({"held": shown})
        for company, epoch in held.items():
            try:
                with engine.begin() as connection:
                    connection.execute(
                        text(
                            "INSERT INTO fleet_effect (company, epoch, worker) "
                            "VALUES (:company, :epoch, :worker)"
                        ),
                        {"company": company, "epoch": epoch, "worker": keeper.worker_id},
                    )
                    fence(connection, company, epoch)
            except LeaseLost:
                say({"refused": company, "epoch": epoch})
            except OperationalError:  # paused inside a transaction: the server ended it
                say({"dropped": company, "epoch": epoch})
        time.sleep(args.every)


if __name__ == "__main__":
    main()
