"""The naive integration nebridge is compared with: same inbox, plugins, outbox and client.

Only the Next Engine side differs, as a straightforward integration would do it:

* ships order by order: search the order, ``update`` its tracking number (if any), search it
  again for the new last-modified date, ``shipped`` (4 calls with, 2 without tracking);
* uploads every stock change on its own (one ``upload`` per outbox item; the queue is not
  even polled, which flatters the naive side);
* polls for work at the schedule interval (``python -m benchmarks.naive --config X``) instead
  of reacting to new files.

Database bookkeeping is batched like nebridge's, so the comparison is about Next Engine calls.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from sqlmodel import col, select

from daemon.admin import run_once
from daemon.nextengine.client import NextEngineClient
from daemon.nextengine.errors import NextEngineError
from daemon.nextengine.search import Where
from daemon.outbox import Executor, transition
from daemon.runtime import Runtime, build_runtime
from daemon.serialize import json_loads
from daemon.store.engine import Bind, read_session
from daemon.store.models import OutboxItem, OutboxState, WmsProduct

TRACKING_FIELD = "receive_order_delivery_cut_form_id"
ORDER_FIELDS = ("receive_order_id", "receive_order_last_modified_date")
FLUSH_EVERY = 50


class _Marks:
    """Outcomes collected per state and written in batches (like nebridge's executors)."""

    def __init__(self, engine: Bind, result: str) -> None:
        self.engine = engine
        self.result = result
        self.done: list[int] = []

    def ok(self, item_id: int | None) -> None:
        if item_id is not None:
            self.done.append(item_id)
        if len(self.done) >= FLUSH_EVERY:
            self.flush()

    def failed(self, item_id: int | None, error: str) -> None:
        if item_id is not None:
            transition(self.engine, [item_id], OutboxState.FAILED, error=error)

    def flush(self) -> None:
        transition(self.engine, self.done, OutboxState.DONE, result=self.result)
        self.done = []


class NaiveShipExecutor:
    """Ships each order on its own: search, update, search, shipped."""

    kind = "ship_order"

    def __init__(self, engine: Bind, client: NextEngineClient) -> None:
        self.engine = engine
        self.client = client

    def reconcile(self, items: Sequence[OutboxItem]) -> None:
        """Nothing is ever left in flight by this executor."""

    def _last_modified(self, order_id: str) -> str:
        rows = list(
            self.client.search_orders(ORDER_FIELDS, where=Where().eq("receive_order_id", order_id))
        )
        if not rows:
            raise LookupError(f"order {order_id} not found")
        return str(rows[0]["receive_order_last_modified_date"])

    def execute(self, items: Sequence[OutboxItem]) -> None:
        """Ship every item, one order after another."""
        marks = _Marks(self.engine, "shipped")
        for item in items:
            payload: Mapping[str, str | None] = json_loads(item.payload)
            order_id, number = item.subject, payload.get("tracking_number")
            try:
                last_modified = self._last_modified(order_id)
                if number:
                    self.client.update_order(order_id, last_modified, {TRACKING_FIELD: number})
                    last_modified = self._last_modified(order_id)
                self.client.shipped(order_id, last_modified)
            except (NextEngineError, LookupError) as exc:
                marks.failed(item.id, str(exc))
                continue
            marks.ok(item.id)
        marks.flush()


class NaiveStockExecutor:
    """Uploads every stock change on its own and does not wait for the queue."""

    kind = "adjust_stock"

    def __init__(self, engine: Bind, client: NextEngineClient) -> None:
        self.engine = engine
        self.client = client

    def reconcile(self, items: Sequence[OutboxItem]) -> None:
        """Nothing is ever left in flight by this executor."""

    def execute(self, items: Sequence[OutboxItem]) -> None:
        """One upload per item."""
        codes = sorted({i.subject for i in items})
        with read_session(self.engine) as session:
            links = {
                str(p): str(link)
                for p, link in session.execute(
                    select(col(WmsProduct.product_code), col(WmsProduct.link_code)).where(
                        col(WmsProduct.product_code).in_(codes)
                    )
                ).all()
                if link
            }
        marks = _Marks(self.engine, "uploaded")
        for item in items:
            link = links.get(item.subject)
            if link is None:
                marks.failed(item.id, "no link code")
                continue
            delta = int(json_loads(item.payload)["delta"])
            try:
                self.client.upload_stock_deltas({link: delta})
            except NextEngineError as exc:
                marks.failed(item.id, str(exc))
                continue
            marks.ok(item.id)
        marks.flush()


class NaiveRuntime(Runtime):
    """A runtime whose dispatcher uses the naive executors."""

    def executors(self) -> dict[str, Executor]:
        """The naive executors on the same client."""
        client = self.ne_client()
        return {
            NaiveShipExecutor.kind: NaiveShipExecutor(self.db, client),
            NaiveStockExecutor.kind: NaiveStockExecutor(self.db, client),
        }


def build_naive_runtime(config: Path) -> NaiveRuntime:
    """Build the product's runtime for ``config``, then swap in the naive executors."""
    base = build_runtime(config)
    base.http.close()
    return NaiveRuntime(
        loaded=base.loaded,
        host=base.host,
        engine=base.engine,
        connector=base.connector,
        connector_error=base.connector_error,
    )


def main() -> None:
    """The naive daemon: a full pass at every schedule interval until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    runtime = build_naive_runtime(args.config)
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    interval = float(runtime.config.schedule.interval_seconds)
    if runtime.connector is not None:
        runtime.connector.recover(runtime.connector_context())
    print("naive daemon running", file=sys.stderr, flush=True)
    try:
        while not stop.is_set():
            started = time.monotonic()
            run_once(runtime)
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
