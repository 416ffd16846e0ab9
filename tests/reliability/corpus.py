"""Phase 3 — bad input: every malformed input in ``corpus/`` gets a clear error naming the input
and the reason, nothing of it is applied, and the daemon stays up.

* ``corpus/csv/`` — WMS files, dropped into the inbox of a running daemon; each must be
  rejected whole into ``rejected/`` with ``<file>.errors.txt`` naming the file and the reason,
  with no event stored and the product master unchanged. ``expected.json``: file → reason.
* :mod:`tests.reliability.isolation` — inputs made at run time (links, a named pipe, a
  245-byte name, a 5 MB line, CR-only and unterminated files, a shipment of an order nebridge
  did not import, nebridge's own order file echoed back, a quarantine that cannot be written):
  each ends exactly one way (rejected with its reason, accepted, or held with its reason) and
  never blocks the good file behind it.
* ``corpus/config/`` — ``daemon.yaml`` fragments (merged over a valid configuration, or
  whole files when ``raw``); each must be refused naming the YAML path and the reason, and a
  running daemon sent SIGHUP with it must keep its old configuration and go on working.
* ``corpus/secrets/`` — unreadable client-secret credentials and token files: named with the
  reason by ``connect`` / ``run --once``, which never crash and never send anything.
* ``corpus/ne/`` — Next Engine answers (malformed JSON, HTML pages, HTTP 5xx, missing
  fields, ``redirect``) served by a loopback proxy in front of the sandbox, after Next Engine
  applied the call or instead of it; the error names the endpoint and the reason, nothing is
  marked done that Next Engine did not do, and afterwards everything is applied exactly once.
* :mod:`tests.reliability.held_items` — an order the WMS file cannot hold, a batch that
  cannot be delivered, a stock upload Next Engine refuses whole: only the item is held, its
  batch-mates go on, and after the fix each is applied exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from sqlmodel import col, select

from daemon.admin import run_once
from daemon.config import ConfigError, load_config
from daemon.nelink import connect
from daemon.runtime import build_runtime
from daemon.store.engine import read_session
from daemon.store.models import InboxBatch, InboxEvent, OutboxItem, OutboxState, WmsProduct
from tests.conftest import dump_yaml
from tests.reliability.badne import BadAnswer, NeProxy
from tests.reliability.held_items import case_count as held_case_count
from tests.reliability.held_items import run_held_items
from tests.reliability.isolation import case_count, run_isolation
from tests.reliability.results import CorpusReport
from tests.reliability.security import issued_secrets
from tests.reliability.settle import count_states
from tests.reliability.workload import AT, RECEIPT_HEADER, SHIP_HEADER
from tests.reliability.world import World, make_world, wait_until

CORPUS = Path(__file__).parent / "corpus"
PRODUCTS = b"product_code,link_code\nP-A,A-1\nP-B,b-2\n"


def _expected(group: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / group / "expected.json").read_text("utf-8"))
    return data


def corpus_size() -> int:
    """How many malformed inputs the corpus holds."""
    return (
        len(_expected("csv"))
        + len(_expected("config"))
        + len(_expected("secrets"))
        + len(json.loads((CORPUS / "ne" / "cases.json").read_text("utf-8")))
        + case_count()
        + held_case_count()
    )


def run_corpus(root: Path) -> CorpusReport:
    """Try every input of the corpus."""
    report = CorpusReport()
    started = time.monotonic()
    # a lost upload is looked for at once: the proxy never applies one late
    world = make_world(root / "world", overrides={"dispatch": {"upload_settle_seconds": 0}})
    try:
        world.sandbox.state.create_goods("A-1", quantity=1000)
        world.sandbox.state.create_goods("B-2", quantity=1000)
        world.drop("products.csv", PRODUCTS)
        daemon = world.start("run")
        try:
            _csv_corpus(world, report)
            run_isolation(world, report)
            _config_corpus(world, daemon.pid, report)
            if not daemon.alive():
                report.problems.append("the daemon stopped during the file and config corpus")
        finally:
            code = daemon.terminate()
            if code != 0:
                report.problems.append(f"the daemon exited with {code} after SIGTERM")
        _secrets_corpus(world, report)
        _ne_corpus(world, report)
        run_held_items(world, report)
    finally:
        report.secrets |= issued_secrets(world)
        world.sandbox.stop()
        report.seconds = time.monotonic() - started
    return report


# -- WMS files ----------------------------------------------------------------------------------


def _csv_corpus(world: World, report: CorpusReport) -> None:
    expected = _expected("csv")
    world.drop("shipments-good.csv", f"{SHIP_HEADER}\nS-GOOD-1,ITAKU,,TRK-1,{AT},P-A,1\n".encode())
    if not wait_until(lambda: (world.inbox / "processed" / "shipments-good.csv").exists(), 20):
        report.problems.append("csv: the good file was not taken")
        return
    for name in expected:
        world.drop(name, (CORPUS / "csv" / name).read_bytes())
    rejected = world.inbox / "rejected"
    wait_until(lambda: all((rejected / f"{n}.errors.txt").exists() for n in expected), 60)
    engine = world.engine()
    try:
        with read_session(engine) as session:
            sources = {e.source for e in session.scalars(select(InboxEvent))}
            batches = {(b.source, b.state) for b in session.scalars(select(InboxBatch))}
            products = {(p.product_code, p.link_code) for p in session.scalars(select(WmsProduct))}
    finally:
        engine.dispose()
    for name, reason in expected.items():
        report_file = rejected / f"{name}.errors.txt"
        text = report_file.read_text("utf-8") if report_file.exists() else ""
        kind_ok = name.startswith("products") or (name, "rejected") in batches
        ok = (
            text.startswith(f"{name}: rejected")
            and reason in text
            and name not in sources
            and (rejected / name).exists()
            and kind_ok
        )
        report.add("csv", name, ok, _first_error(text) or "not rejected")
    if products != {("P-A", "A-1"), ("P-B", "b-2")}:
        report.problems.append(f"csv: the product master changed: {sorted(products)}")
    world.drop("receipts-after.csv", f"{RECEIPT_HEADER}\nR-AFTER-1,ITAKU,{AT},P-B,2\n".encode())
    if not wait_until(lambda: (world.inbox / "processed" / "receipts-after.csv").exists(), 20):
        report.problems.append("csv: a good file after the corpus was not taken")


def _first_error(text: str) -> str:
    lines = text.splitlines()
    return lines[1] if len(lines) > 1 else ""


# -- configuration ------------------------------------------------------------------------------


def _merge(base: dict[str, Any], fragment: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in fragment.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _config_text(world: World, name: str, case: Mapping[str, Any]) -> str:
    source = (CORPUS / "config" / name).read_text("utf-8")
    if case.get("raw"):
        return source
    good = YAML(typ="safe", pure=True).load(world.config.read_text("utf-8"))
    return dump_yaml(_merge(good, YAML(typ="safe", pure=True).load(source)))


def _config_corpus(world: World, pid: int, report: CorpusReport) -> None:
    good = world.config.read_text("utf-8")
    daemon_log = sorted(world.logs.glob("*-daemon.log"))[-1]
    try:
        for name, case in _expected("config").items():
            probe = world.root / "config-probe" / "daemon.yaml"
            probe.parent.mkdir(exist_ok=True)
            text = _config_text(world, name, case)
            probe.write_text(text, encoding="utf-8")
            try:
                build_runtime(probe, check_db=False).close()
                message = "accepted"
            except ConfigError as exc:
                message = str(exc)
            except Exception as exc:  # a crash instead of a clear message
                message = f"crashed: {type(exc).__name__}: {exc}"
            named = all(part in message for part in (case["path"], case["reason"]))
            before = daemon_log.stat().st_size
            world.config.write_text(text, encoding="utf-8")
            os.kill(pid, signal.SIGHUP)
            kept = wait_until(
                lambda b=before: (
                    "reload failed; keeping the old configuration" in _tail(daemon_log, b)
                ),
                10,
            )
            world.config.write_text(good, encoding="utf-8")
            ok = named and kept and message.startswith(str(probe))
            detail = next(
                (ln.strip() for ln in message.splitlines() if case["reason"] in ln),
                message.splitlines()[0] if message else "",
            )
            report.add("config", name, ok, detail + ("" if kept else " — reload NOT refused"))
    finally:
        world.config.write_text(good, encoding="utf-8")
    world.drop(
        "receipts-after-config.csv", f"{RECEIPT_HEADER}\nR-AFTER-2,ITAKU,{AT},P-A,1\n".encode()
    )
    if not wait_until(
        lambda: (world.inbox / "processed" / "receipts-after-config.csv").exists(), 20
    ):
        report.problems.append("config: the daemon did not take a good file after the corpus")


def _tail(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", errors="replace")


# -- secrets ------------------------------------------------------------------------------------


def _secrets_corpus(world: World, report: CorpusReport) -> None:
    config = load_config(world.config).config
    token_file = config.token_file
    good_tokens = token_file.read_bytes()
    creds = world.root / "credentials"
    for name, case in _expected("secrets").items():
        calls = world.sandbox.state.traffic.calls
        if case["kind"] == "credential":
            shutil.rmtree(creds, ignore_errors=True)
            creds.mkdir()
            target = creds / "nextengine-client-secret"
            if case.get("make") == "directory":
                target.mkdir()
            elif case.get("make") == "dangling symlink":
                target.symlink_to(creds / "missing-secret")
            else:
                shutil.copyfile(CORPUS / "secrets" / name, target)
            world.extra_env = {"CREDENTIALS_DIRECTORY": str(creds)}
            uid, state = world.sandbox.state.issue_login()
            linked = world.cli("connect", "--uid", uid, "--state", state)
            once = world.cli("run", "--once")
            world.extra_env = {}
            ok = (
                linked.returncode == 1
                and str(target) in linked.stdout
                and case["reason"] in linked.stdout
                and "Traceback" not in once.stdout
                and str(target) in once.stdout
                and once.returncode in (0, 1)
            )
            detail = next((ln for ln in linked.stdout.splitlines() if str(target) in ln), "")
        else:
            shutil.copyfile(CORPUS / "secrets" / name, token_file)
            once = world.cli("run", "--once")
            status = world.cli("status")
            sent = world.sandbox.state.traffic.calls - calls
            token_file.write_bytes(good_tokens)
            ok = (
                "Traceback" not in once.stdout
                and case["reason"] in status.stdout
                and str(token_file) in status.stdout
                and sent == 0
            )
            detail = next((ln for ln in status.stdout.splitlines() if case["reason"] in ln), "")
            _reconnect(world)
        report.add("secrets", name, ok, " ".join(detail.split()))


def _reconnect(world: World) -> None:
    """The admin signs in again (``nebridge connect``'s function, in this process)."""
    engine = world.engine()
    try:
        connect(load_config(world.config).config, engine, *world.sandbox.state.issue_login())
    finally:
        engine.dispose()


# -- Next Engine answers ------------------------------------------------------------------------


class _Capture(logging.Handler):
    """Every warning and error logged while a case runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _captured() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _ne_corpus(world: World, report: CorpusReport) -> None:
    cases = json.loads((CORPUS / "ne" / "cases.json").read_text("utf-8"))
    state = world.sandbox.state
    expected_stock = 0
    orders: list[int] = []
    shipped_before = len(world.sandbox.ledger.shipped_order_ids())  # e.g. the echoed order
    with NeProxy(world.sandbox.base_url) as proxy:
        good = world.config.read_text("utf-8")
        world.config.write_text(good.replace(world.sandbox.base_url, proxy.base_url), "utf-8")
        try:
            for number, case in enumerate(cases):
                order = state.create_order([("A-1", 1)], shop_id=1)
                orders.append(order)
                _once(world)  # imports the order, settles the previous case
                world.drop(
                    f"shipments-ne-{number}.csv",
                    f"{SHIP_HEADER}\nS-NE-{order},ITAKU,{order},TRK{order},{AT},P-A,1\n".encode(),
                )
                world.drop(
                    f"receipts-ne-{number}.csv",
                    f"{RECEIPT_HEADER}\nR-NE-{number},ITAKU,{AT},P-B,{number + 1}\n".encode(),
                )
                expected_stock += number + 1
                body = (
                    (CORPUS / "ne" / case["body_file"]).read_bytes()
                    if "body_file" in case
                    else case["body"].encode("utf-8")
                )
                proxy.arm(
                    case["path"],
                    BadAnswer(
                        case["name"],
                        case["status"],
                        case["content_type"],
                        body,
                        case["forward"],
                        case.get("trickle", False),
                        case.get("declared_length"),
                    ),
                )
                seen, crashed = _run_case(world)
                proxy.disarm()
                named = any(case["path"] in line and case["reason"] in line for line in seen)
                served = (case["path"], case["name"]) in proxy.served
                detail = next(
                    (ln for ln in seen if case["reason"] in ln),
                    crashed or ("no error" if served else "the call was never made"),
                )
                report.add(
                    "ne", case["name"], named and served and not crashed, " ".join(detail.split())
                )
                if world.link_state() == "needs_reconnect":
                    _reconnect(world)
            _drain(world)
        finally:
            world.config.write_text(good, encoding="utf-8")
    _ne_end_state(world, orders, expected_stock, shipped_before, report)


def _run_case(world: World) -> tuple[list[str], str]:
    """One ``run --once`` pass in this process: the warnings, errors and stored reasons."""
    runtime = world.runtime()
    crashed = ""
    try:
        with _captured() as capture:
            try:
                result = run_once(runtime)
                capture.lines.extend(result.problems)
            except Exception as exc:
                crashed = f"run --once crashed: {type(exc).__name__}: {exc}"
        with read_session(runtime.engine) as session:
            errors = [
                i.last_error or ""
                for i in session.scalars(
                    select(OutboxItem).where(col(OutboxItem.last_error).is_not(None))
                )
            ]
    finally:
        runtime.close()
    return [*capture.lines, *errors, world.link_reason()], crashed


def _once(world: World) -> None:
    runtime = world.runtime()
    try:
        run_once(runtime)
    finally:
        runtime.close()


def _drain(world: World) -> None:
    """Run passes until no action waits or is in flight (retry delays pass meanwhile)."""
    for _ in range(40):
        _once(world)
        if not count_states(world, (OutboxState.PENDING.value, OutboxState.IN_FLIGHT.value)):
            return
        time.sleep(0.3)


def _ne_end_state(
    world: World, orders: list[int], stock: int, shipped_before: int, report: CorpusReport
) -> None:
    """After the bad answers: each order shipped once with its tracking, stock exact."""
    ledger, state = world.sandbox.ledger, world.sandbox.state
    state.process_ques()
    shipped = ledger.shipped_order_ids()[shipped_before:]
    if sorted(shipped) != sorted(orders):
        report.problems.append(
            f"ne: orders shipped {sorted(shipped)}, expected each of {sorted(orders)} once"
        )
    wrong = [
        o
        for o in orders
        if state.order_snapshot(o)["receive_order_delivery_cut_form_id"] != f"TRK{o}"
    ]
    if wrong:
        report.problems.append(f"ne: wrong tracking numbers on {wrong}")
    uploaded = sum(e.delta or 0 for e in ledger.entries(kind="stock.upload", goods_code="B-2"))
    want = stock + 2  # and R-AFTER-1, the good receipt sent after the file corpus
    if uploaded != want:
        report.problems.append(f"ne: stock of B-2 moved by {uploaded}, expected {want}")
