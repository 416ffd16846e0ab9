"""Corpus part 2 — one bad input never blocks the rest (issue #12 findings 2, 4, 6, 7).

Inputs that cannot be kept as files in ``corpus/`` (links, a named pipe, a 245-byte name, a
5 MB single line, files without final newline or with CR-only line ends) are made here and
dropped, all at once and older than a good file, into the inbox of the running daemon. Each
must end exactly one way — rejected with its reason in ``<file>.errors.txt`` (and nothing of
it stored, nothing outside the inbox read), accepted with the right content, or held with its
reason — and the good file must be taken in the same pass (nothing blocked). Then nebridge's
own order file is echoed back as a shipments file (the same product on two lines: accepted,
quantities added, the order shipped once), and a quarantine that cannot be written makes a
file "not taken": shown as an attention item while the next file flows, resolved once the
quarantine works again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import col, select

from daemon.attention import AttentionKind, collect
from daemon.store.engine import read_session
from daemon.store.models import InboxEvent
from tests.reliability.results import CorpusReport
from tests.reliability.workload import AT, SHIP_HEADER
from tests.reliability.world import World, wait_until

GROUP = "isolation"
SECRET_LINE = "root:CAMPAIGN-SECRET-HASH:19000:0:99999:7:::"
LONG_NAME = "shipments-iso-" + "n" * 227 + ".csv"  # 245 bytes: <name>.errors.txt did not fit
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class Case:
    """One generated input and the one way it must end."""

    name: str
    outcome: str  # rejected | accepted | held
    expect: str  # the reason (rejected, held) or the event id (accepted)
    make: Callable[[Path, Path], None]  # (inbox, outside folder) -> None
    event: str = ""  # the event id that must (held) or must not (rejected) be stored


def _write(data: bytes) -> Callable[[Path, Path], None]:
    def make(target: Path, _outside: Path) -> None:
        target.write_bytes(data)

    return make


def _link(to: str) -> Callable[[Path, Path], None]:
    def make(target: Path, outside: Path) -> None:
        os.symlink(outside / to, target)

    return make


def _fifo(target: Path, _outside: Path) -> None:
    os.mkfifo(target)


def _rows(*rows: str, end: str = "\n", last_end: bool = True) -> bytes:
    text = end.join([SHIP_HEADER, *rows]) + (end if last_end else "")
    return text.encode("utf-8")


CASES: tuple[Case, ...] = (
    Case("shipments-iso-link-secret.csv", "rejected", "a symbolic link", _link("shadow")),
    Case(
        "shipments-iso-link-valid.csv",
        "rejected",
        "never follows a link",
        _link("valid.csv"),
        event="S-ISO-OUTSIDE",
    ),
    Case("shipments-iso-fifo.csv", "rejected", "not a regular file", _fifo),
    Case(
        LONG_NAME,
        "rejected",
        "unknown product 'P-ISO-NONE'",
        _write(_rows(f"S-ISO-LONG,ITAKU,,,{AT},P-ISO-NONE,1")),
        event="S-ISO-LONG",
    ),
    Case(
        "shipments-iso-one-line.csv",
        "rejected",
        f"line longer than {MAX_LINE:,} bytes",
        _write(b"x" * (80 * MAX_LINE) + b"\n"),
    ),
    Case(
        "shipments-iso-long-id.csv",
        "rejected",
        "longer than 128 characters (200)",
        _write(_rows(f"{'S' * 200},ITAKU,,,{AT},P-A,1")),
    ),
    Case(
        "shipments-iso-long-product.csv",
        "rejected",
        "longer than 128 characters (300)",
        _write(_rows(f"S-ISO-LP,ITAKU,,,{AT},{'P' * 300},1")),
        event="S-ISO-LP",
    ),
    Case(
        "shipments-iso-order-0016.csv",
        "rejected",
        "not a Next Engine order number",
        _write(_rows(f"S-ISO-0016,ITAKU,0016,,{AT},P-A,1")),
        event="S-ISO-0016",
    ),
    Case(
        "shipments-iso-cr-only.csv",
        "accepted",
        "S-ISO-CR",
        _write(_rows(f"S-ISO-CR,ITAKU,,,{AT},P-A,1", end="\r")),
    ),
    Case(
        "shipments-iso-no-final-newline.csv",
        "accepted",
        "S-ISO-NONL",
        _write(_rows(f"S-ISO-NONL,ITAKU,,,{AT},P-A,2", end="\r\n", last_end=False)),
    ),
    Case(
        "shipments-iso-unimported-order.csv",
        "held",
        "order 987654 was not imported by nebridge into ITAKU",
        _write(_rows(f"S-ISO-UNIMPORTED,ITAKU,987654,TRK-X,{AT},P-A,1")),
        event="S-ISO-UNIMPORTED",
    ),
)
GOOD = "shipments-iso-zz-good.csv"


def case_count() -> int:
    """How many inputs this part tries (the cases, the echo and the unwritable quarantine)."""
    return len(CASES) + 2


def run_isolation(world: World, report: CorpusReport) -> None:
    """Drop every case with a good file, check each ended its one way; then the echo and the
    quarantine that cannot be written."""
    outside = world.root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "shadow").write_text(SECRET_LINE + "\n", encoding="utf-8")
    (outside / "valid.csv").write_bytes(_rows(f"S-ISO-OUTSIDE,ITAKU,,,{AT},P-A,1"))
    staging = world.root / "staging"
    staging.mkdir(exist_ok=True)
    for case in CASES:  # made beside the inbox, then renamed in: complete at first sight
        case.make(staging / case.name, outside)
    old = time.time() - 120  # finished long ago (past the wait for a final newline)
    for case in CASES:
        os.utime(staging / case.name, (old, old), follow_symlinks=False)
        os.rename(staging / case.name, world.inbox / case.name)
    world.drop(GOOD, _rows(f"S-ISO-GOOD,ITAKU,,,{AT},P-A,1"))
    if not wait_until(lambda: (world.inbox / "processed" / GOOD).exists(), 60):
        report.problems.append("isolation: the good file behind the bad ones was not taken")
    wait_until(lambda: _settled(world), 60)
    engine = world.engine()
    try:
        wait_until(lambda: _state(engine, "S-ISO-UNIMPORTED")[0] == "held", 30)
        for case in CASES:
            ok, detail = _check(case, world, engine)
            report.add(GROUP, case.name[:60], ok, detail)
        _echo(world, engine, report)
        _unwritable_quarantine(world, engine, report)
    finally:
        engine.dispose()


def _settled(world: World) -> bool:
    """Every case left the inbox (a rejected long name is kept shortened)."""
    return not any(os.path.lexists(world.inbox / case.name) for case in CASES)


def _state(engine: Engine, external_id: str) -> tuple[str, str]:
    with read_session(engine) as session:
        row = session.scalars(
            select(InboxEvent).where(col(InboxEvent.external_id) == external_id)
        ).first()
    return (row.state, row.last_error or "") if row else ("absent", "")


def _report_of(rejected: Path, name: str) -> str:
    """The errors report of a rejected file (found by its first line for a shortened name)."""
    try:
        return (rejected / f"{name}.errors.txt").read_text("utf-8")
    except OSError:  # not there, or a name too long to have a report beside it
        pass
    for path in rejected.glob("*.errors.txt"):
        text = path.read_text("utf-8")
        if text.startswith(f"{name}: rejected"):
            return text
    return ""


def _check(case: Case, world: World, engine: Engine) -> tuple[bool, str]:
    rejected, processed = world.inbox / "rejected", world.inbox / "processed"
    if case.outcome == "rejected":
        text = _report_of(rejected, case.name)
        stored = bool(case.event) and _state(engine, case.event)[0] != "absent"
        ok = (
            text.startswith(f"{case.name}: rejected")
            and case.expect in text
            and SECRET_LINE not in text
            and not stored
        )
        first = text.splitlines()[1] if len(text.splitlines()) > 1 else "not rejected"
        return ok, first + (" — but its event was stored" if stored else "")
    state, reason = _state(engine, case.event or case.expect)
    if case.outcome == "accepted":
        ok = (processed / case.name).exists() and state == "processed"
        return ok, f"accepted, event {case.expect} {state}"
    ok = state == "held" and reason.startswith(case.expect)
    return ok, f"held: {reason.splitlines()[0] if reason else state}"


def _echo(world: World, engine: Engine, report: CorpusReport) -> None:
    """Import an order with one product on two lines, echo nebridge's own order file back."""
    st = world.sandbox.state
    order = st.create_order([("A-1", 1), ("A-1", 2)], shop_id=1)
    found: list[Path] = []

    def order_file() -> bool:
        found[:] = [
            p
            for p in world.outbox.glob("orders-*.csv")
            if f"\n{order}," in p.read_text("utf-8").replace("\r\n", "\n")
        ]
        return bool(found)

    name = "shipments-iso-echo.csv"
    if not wait_until(order_file, 60):
        report.add(GROUP, name, False, f"order {order} was never written to the outbox")
        return
    lines = found[0].read_text("utf-8").splitlines()
    echoed = [f"shipment_id,tracking_number,confirmed_at,{lines[0]}"] + [
        f"S-ISO-ECHO,TRK-ECHO,{AT},{line}" for line in lines[1:] if line.startswith(f"{order},")
    ]
    world.drop(name, ("\r\n".join(echoed) + "\r\n").encode("utf-8"))
    shipped = wait_until(
        lambda: world.sandbox.ledger.count("order.shipped", order_id=order) > 0, 60
    )
    with read_session(engine) as session:
        event = session.scalars(
            select(InboxEvent).where(col(InboxEvent.external_id) == "S-ISO-ECHO")
        ).first()
    quantities = event.payload if event else ""
    ok = (
        shipped
        and len(echoed) == 3
        and event is not None
        and '"quantity":3' in quantities.replace(" ", "")
        and world.sandbox.ledger.count("order.shipped", order_id=order) == 1
    )
    report.add(
        GROUP,
        name,
        ok,
        f"{len(echoed) - 1} echoed lines of one product: "
        f"{'one line of quantity 3, shipped once' if ok else quantities or 'not stored'}",
    )


def _unwritable_quarantine(world: World, engine: Engine, report: CorpusReport) -> None:
    """A file that can be neither taken nor rejected is shown; the next file still flows."""
    name, good = "shipments-iso-not-taken.csv", "shipments-iso-zz-after.csv"
    rejected = world.inbox / "rejected"
    parked = world.root / "rejected-parked"
    os.rename(rejected, parked)
    rejected.write_text("not a folder\n", encoding="utf-8")
    try:
        world.drop(name, _rows(f"S-ISO-NT,ITAKU,,,{AT},P-ISO-NONE,1"))
        time.sleep(0.05)
        world.drop(good, _rows(f"S-ISO-AFTER,ITAKU,,,{AT},P-A,1"))
        flowed = wait_until(lambda: (world.inbox / "processed" / good).exists(), 60)
        shown = wait_until(lambda: AttentionKind.FILE_NOT_TAKEN in collect(engine).counts, 30)
    finally:
        rejected.unlink()
        os.rename(parked, rejected)
    resolved = wait_until(
        lambda: (
            (rejected / f"{name}.errors.txt").exists()
            and AttentionKind.FILE_NOT_TAKEN not in collect(engine).counts
        ),
        60,
    )
    ok = flowed and shown and resolved
    report.add(
        GROUP,
        name,
        ok,
        f"next file flowed: {flowed}; shown as file_not_taken: {shown}; "
        f"rejected and resolved once the quarantine worked: {resolved}",
    )
