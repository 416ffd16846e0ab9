"""Orders cancelled or edited in Next Engine → their Logikura shipping schedules deleted.

``DELETE /api/v1/shipping_schedules/{id}`` while the schedule is still idle. Logikura answers
422 once picking started (stock allocated, 出荷作業中) or the schedule is shipped: the order
is refused (:class:`~hooks.errors.CancellationsRefused`) and the engine puts it in front of a
person. A schedule already gone (404, or deleted by staff) counts as withdrawn. Each withdrawn
schedule is recorded (state ``withdrawn``), so a re-delivered batch deletes nothing twice and
an edited order's new content creates a new schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hooks.connectors import CancellationBatch
from hooks.errors import CancellationsRefused
from plugins.wms_logikura.client import LogikuraClient
from plugins.wms_logikura.errors import LogikuraRefused
from plugins.wms_logikura.store import CREATED, DELETED, SENDING, LocalStore

_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


def withdraw(
    batch: CancellationBatch,
    client: LogikuraClient,
    store: LocalStore,
    clock: Callable[[], float],
    log: _Log,
) -> None:
    """Delete the schedule of every order of ``batch``; raise CancellationsRefused naming
    those Logikura keeps (every other one is deleted)."""
    records = store.schedules(c.ne_order_id for c in batch.cancellations)
    refused: dict[str, str] = {}
    for cancellation in batch.cancellations:
        oid = cancellation.ne_order_id
        record = records.get(oid)
        if record is None or record.state not in (CREATED, DELETED, SENDING):
            continue  # never created, or withdrawn already
        if record.state == SENDING or record.schedule_id is None:
            refused[oid] = (
                "the request creating its shipping schedule got no answer, so "
                "nebridge cannot name the schedule to delete; look for order "
                f"{oid} in Logikura's shipping schedules"
            )
            continue
        if record.state == CREATED:
            try:
                client.request("DELETE", f"/api/v1/shipping_schedules/{record.schedule_id}")
            except LogikuraRefused as exc:
                if exc.status != 404:
                    started = " (picking started)" if exc.status == 422 else ""
                    refused[oid] = (
                        f"Logikura keeps shipping schedule {record.schedule_id}{started}: {exc}"
                    )
                    continue
        store.mark_withdrawn(oid, clock())
        log.info(
            "order %s %s in Next Engine: Logikura shipping schedule %s deleted",
            oid,
            cancellation.reason,
            record.schedule_id,
        )
    if refused:
        raise CancellationsRefused(refused)
