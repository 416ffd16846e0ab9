"""``python -m benchmarks.notify``: what notifications cost and how they behave (issue #14).

The real notifier (:mod:`daemon.notify`) with the real ``notify_webhook`` plugin (format
``json``) posting over HTTP to a receiver on loopback, on a SQLite store in a temporary folder,
default ``notify:`` settings. Time is simulated where the figure is about the rules (the
engine's clock is a variable; the notifier job is run once per ``interval_seconds`` of it);
wall time is measured where the figure is about speed. Printed:

1. messages sent when 1,000 orders are held at once (and when all 1,000 are resolved);
2. delivery latency from a problem to the message at the default interval: the measured wall
   time of one notifier run (scan + send), plus the wait for the next run (mean half the
   interval, at most the whole interval);
3. a 10-minute sink outage (the receiver answers 503) while problems keep arising: attempts
   made, messages delivered afterwards, copies received, and how long after the end of the
   outage the last one arrived.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from sqlmodel import select

from daemon import attention
from daemon.config import load_config
from daemon.runtime import Runtime, build_runtime
from daemon.store.engine import make_engine, upgrade, write_session
from daemon.store.models import ImportedOrder
from hooks.records import Problem


@dataclass
class Receiver:
    """What the loopback receiver got; while ``down`` it answers 503 and keeps nothing."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False
    refused: int = 0


@contextmanager
def receiver() -> Iterator[Receiver]:
    """An HTTP receiver on 127.0.0.1."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if state.down:
                state.refused += 1
                self.send_response(503)
            else:
                state.bodies.append(json.loads(body))
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class Clock:
    """The engine's simulated clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _runtime(folder: Path, url: str, clock: Clock) -> Runtime:
    config = {
        "state_dir": str(folder / "state"),
        "nextengine": {"client_id": "bench", "client_secret": "bench-secret"},
        "wms": {
            "connector": "csv",
            "csv": {"inbox": str(folder / "in"), "outbox": str(folder / "out")},
        },
        "warehouses": [{"code": "ITAKU", "ne_linked": True, "import_orders": True}],
        "plugins": {"notify_webhook": {"enabled": True, "format": "json", "url": url}},
    }
    path = folder / "daemon.yaml"
    with path.open("w", encoding="utf-8") as handle:
        YAML(typ="safe", pure=True).dump(config, handle)
    engine = make_engine(load_config(path).config.resolved_database_url)
    upgrade(engine)
    engine.dispose()
    runtime = build_runtime(path)
    runtime.clock = clock  # type: ignore[method-assign]
    return runtime


def held_at_once(orders: int) -> tuple[int, int, int]:
    """(messages for ``orders`` held at once, the digest's count, messages when resolved)."""
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp, receiver() as got:
        rt = _runtime(Path(tmp), got.url, clock)
        try:
            with write_session(rt.engine) as session:
                for n in range(orders):
                    session.add(
                        ImportedOrder(
                            ne_order_id=str(100000 + n),
                            warehouse="ITAKU",
                            state="held",
                            hold_reason="unknown goods code",
                            updated_at=clock(),
                        )
                    )
            rt.notifier().run_once()
            opened = len(got.bodies)
            count = got.bodies[0]["count"] if got.bodies else 0
            with write_session(rt.engine) as session:
                for order in session.scalars(select(ImportedOrder)):
                    order.state = "instructed"
                    session.add(order)
            clock.now += timedelta(minutes=1)
            rt.notifier().run_once()
            return opened, count, len(got.bodies) - opened
        finally:
            rt.close()


def run_seconds(samples: int) -> list[float]:
    """Wall seconds of notifier runs that each find one new problem and send it."""
    clock = Clock()
    times = []
    with tempfile.TemporaryDirectory() as tmp, receiver() as got:
        rt = _runtime(Path(tmp), got.url, clock)
        try:
            notifier = rt.notifier()
            for n in range(samples):
                clock.now += timedelta(minutes=10)  # outside the digest window
                attention.report(
                    rt.engine,
                    Problem(
                        key=f"wms_mismatch:{n}",
                        kind="wms_mismatch",
                        subject=str(n),
                        reason="renumbered",
                        fix="check it",
                    ),
                    now=clock(),
                )
                start = time.perf_counter()
                report = notifier.run_once()
                times.append(time.perf_counter() - start)
                assert report.sent == 1, report.errors
        finally:
            rt.close()
    return times


def outage(minutes: int, spread: bool = True) -> dict[str, Any]:
    """A sink down for ``minutes`` while one problem arises a minute (``spread``; else ten at
    the start, so every delivery is in its backoff when the sink comes back); the job runs
    every interval."""
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp, receiver() as got:
        rt = _runtime(Path(tmp), got.url, clock)
        try:
            notifier = rt.notifier()
            step = timedelta(seconds=rt.config.notify.interval_seconds)
            start = clock.now
            got.down = True
            arisen = 0
            while clock.now < start + timedelta(minutes=minutes):
                if (clock.now - start) % timedelta(minutes=1) == timedelta(0) and (
                    spread or clock.now == start
                ):
                    for _ in range(1 if spread else 10):
                        attention.report(
                            rt.engine,
                            Problem(
                                key=f"wms_mismatch:{arisen}",
                                kind="wms_mismatch",
                                subject=str(arisen),
                                reason="renumbered",
                                fix="check it",
                            ),
                            now=clock(),
                        )
                        arisen += 1
                notifier.run_once()
                clock.now += step
            got.down = False
            back, last = clock.now, clock.now
            while len({b["key"] for b in got.bodies}) < arisen and clock.now < back + timedelta(
                hours=1
            ):
                before = len(got.bodies)
                notifier.run_once()
                if len(got.bodies) > before:
                    last = clock.now
                clock.now += step
            keys = [b["key"] for b in got.bodies if b["event"] in ("open", "digest")]
            return {
                "arisen": arisen,
                "attempts_while_down": got.refused,
                "delivered": len(got.bodies),
                "distinct": len(set(keys)),
                "copies": len(keys) - len(set(keys)),
                "last_after_s": (last - back).total_seconds(),
                "events": sorted({b["event"] for b in got.bodies}),
            }
        finally:
            rt.close()


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--outage-minutes", type=int, default=10)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the outage's retries would log each failure
    opened, count, resolved = held_at_once(args.orders)
    print(
        f"held at once: {args.orders} orders → {opened} message(s) (a digest of {count}); "
        f"all resolved → {resolved} message(s)"
    )
    times = run_seconds(args.samples)
    interval = 30.0  # the default notify.interval_seconds
    median = statistics.median(times)
    print(
        f"one notifier run (scan + send, 1 problem): median {median * 1000:.1f} ms, max "
        f"{max(times) * 1000:.1f} ms over {len(times)} runs → latency at the default "
        f"{interval:.0f} s interval: mean {interval / 2 + median:.1f} s, at most "
        f"{interval + max(times):.1f} s"
    )
    for spread, how in ((True, "one a minute"), (False, "all at the start")):
        figures = outage(args.outage_minutes, spread)
        print(
            f"{args.outage_minutes}-minute sink outage, problems {how}: "
            f"{figures['arisen']} arose, {figures['attempts_while_down']} attempts refused "
            f"(backoff), afterwards {figures['delivered']} message(s) delivered "
            f"({', '.join(figures['events'])}), {figures['distinct']} distinct, "
            f"{figures['copies']} copies, the last {figures['last_after_s']:.0f} s "
            "(simulated) after the sink came back"
        )


if __name__ == "__main__":
    main()
