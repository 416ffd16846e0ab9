"""A CLI command's hold on one company's lease: what fences ``run --once --company`` against
the worker serving that company (issue #19).

A command that does a company's engine work takes the company's lease as a worker would —
free or expired only, with a new epoch that fences its commits and Next Engine calls — keeps
it renewed on a thread while it runs, and releases it when it ends (also on Ctrl-C or an
exception; a process killed outright leaves it to expire within the lease time). Its holder
id is ``host:pid:cli-<random>``, never a row of ``fleet_worker``: the workers' fair share
does not count it, and ``companies list`` shows it as the company's holder meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from daemon.fleet.leases import RENEWALS_PER_LEASE, Lease

log = logging.getLogger(__name__)


class LeaseHeld(Exception):
    """Someone else holds the company's lease now; the message names the holder (id, host)
    and what to do."""


def cli_holder() -> str:
    """``host:pid:cli-<random>``: a command's holder id, told apart from a worker's."""
    return f"{socket.gethostname()}:{os.getpid()}:cli-{uuid.uuid4().hex[:8]}"[:200]


def _take(engine: Engine, company: str, holder: str, lease_seconds: float) -> int | None:
    """Take ``company``'s lease if it is free or expired (epoch + 1); its epoch, or None."""
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO fleet_lease (company) VALUES (:company) ON CONFLICT DO NOTHING"),
            {"company": company},
        )
        epoch = connection.execute(
            text(
                "UPDATE fleet_lease SET holder = :holder, epoch = epoch + 1, "
                "acquired_at = clock_timestamp(), "
                "expires_at = clock_timestamp() + make_interval(secs => :lease) "
                "WHERE company = :company AND (holder IS NULL OR expires_at IS NULL "
                "OR expires_at < clock_timestamp()) RETURNING epoch"
            ),
            {"company": company, "holder": holder, "lease": lease_seconds},
        ).scalar()
    return None if epoch is None else int(epoch)


#: Why a command that holds the lease waits for the worker serving the company (the
#: worker's own work, such as a pass, which must never run twice at once).
WORKERS_WORK = "That worker does this work itself"


def _refusal(engine: Engine, company: str, what: str, why: str) -> str | None:
    """Why ``what`` may not run for ``company`` now (its holder), or None if it is free;
    ``why`` says why it waits for a live worker."""
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT l.holder, extract(epoch FROM l.expires_at - clock_timestamp()) AS left, "
                "w.host, w.expires_at > clock_timestamp() AS live FROM fleet_lease l "
                "LEFT JOIN fleet_worker w ON w.worker_id = l.holder WHERE l.company = :company "
                "AND l.holder IS NOT NULL AND l.expires_at > clock_timestamp()"
            ),
            {"company": company},
        ).first()
    if row is None:
        return None
    holder, left = str(row.holder), float(row.left)
    host = row.host or holder.split(":")[0]
    if row.live:
        return (
            f"company {company!r} is served by worker {holder} on host {host} (its lease has "
            f"{left:.0f} s left): {what} would run beside it. {why}; to run it from here, "
            "stop the workers (`systemctl stop nebridge` on each host; a live one takes the "
            "company within one lease time), run the command again, then start them — "
            "`nebridge companies list` shows who serves what"
        )
    if row.host is None:
        return (
            f"company {company!r} is held by another command, {holder} on host {host} (its "
            f"lease has {left:.0f} s left): wait until it has finished and run the command "
            "again — `nebridge companies list` shows the holder"
        )
    return (
        f"company {company!r} is still held by worker {holder} on host {host}, which stopped "
        f"renewing (no heartbeat): its lease runs out in {left:.0f} s; run the command again "
        "then"
    )


@contextmanager
def hold_company(
    engine: Engine, company: str, *, lease_seconds: float, what: str, why: str = WORKERS_WORK
) -> Iterator[Lease]:
    """Hold ``company``'s lease for the block, renewed every third of ``lease_seconds``, and
    release it after; :class:`LeaseHeld` (naming the holder, saying what to do) when a
    worker or another command holds it. ``what`` names the command in that message, ``why``
    says why it does not run beside a worker."""
    holder = cli_holder()
    epoch = None
    for _attempt in range(3):  # a lease released between the two statements: take it again
        epoch = _take(engine, company, holder, lease_seconds)
        if epoch is not None:
            break
        refusal = _refusal(engine, company, what, why)
        if refusal is not None:
            raise LeaseHeld(refusal)
    if epoch is None:
        raise LeaseHeld(
            f"company {company!r}: its lease changed hands three times while {what} tried to "
            "take it (workers starting?); run the command again"
        )
    lease = Lease(company, epoch)
    stop = threading.Event()
    keys = {"company": company, "holder": holder, "epoch": epoch, "lease": lease_seconds}

    def renew() -> None:
        while not stop.wait(lease_seconds / RENEWALS_PER_LEASE):
            try:
                with engine.begin() as connection:
                    kept = connection.execute(
                        text(
                            "UPDATE fleet_lease SET expires_at = clock_timestamp() + "
                            "make_interval(secs => :lease) WHERE company = :company AND "
                            "holder = :holder AND epoch = :epoch"
                        ),
                        keys,
                    ).rowcount
            except Exception as exc:  # the database away: the lease runs out, fences refuse
                log.error("company %s: lease not renewed (%s)", company, exc)
                continue
            if not kept:
                log.error("company %s: lease lost; nothing more is committed or sent", company)
                return

    renewer = threading.Thread(target=renew, name=f"lease-{company}", daemon=True)
    renewer.start()
    log.info("company %s: lease taken by %s (epoch %d)", company, holder, epoch)
    try:
        yield lease
    finally:
        stop.set()
        renewer.join()
        with engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE fleet_lease SET holder = NULL, expires_at = NULL WHERE "
                    "company = :company AND holder = :holder AND epoch = :epoch"
                ),
                keys,
            )
        log.info("company %s: lease released by %s", company, holder)
