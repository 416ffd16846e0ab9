"""The fleet scenario of issue #19: three `nebridge run` workers serve many companies, each
with its own Next Engine sandbox (over HTTP on loopback) and its own CSV WMS folders, on the
CI PostgreSQL. One worker is SIGKILLed and another paused past its lease (SIGSTOP, SIGCONT);
at the end every company is exactly as the single-company scenario leaves it: each order
imported and shipped once with its tracking number, stock exact, nothing in doubt, and no
sandbox ever saw two calls in flight for its company.

``NEBRIDGE_FLEET_COMPANIES`` sets how many companies (default 30).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select

from daemon import attention
from daemon.config import LoadedConfig, load_config
from daemon.fleet.companies import Companies
from daemon.fleet.runtime import FleetDatabase, company_runtime
from daemon.fleet.vault import KEY_CREDENTIAL, load_keys
from daemon.nelink import connect
from daemon.sandbox import SandboxServer
from daemon.store.engine import read_session
from daemon.store.models import InboxEvent, OutboxItem
from daemon.testing.installation import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEFAULT_PLUGINS,
    DEFAULT_WAREHOUSES,
    Installation,
    dump_yaml,
    kit_sandbox_config,
    write_config,
)

pytestmark = pytest.mark.slow

COMPANIES = int(os.environ.get("NEBRIDGE_FLEET_COMPANIES", "30"))
LEASE_SECONDS = 4.0
WORKERS = 3
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Shipper:
    """One company: its code, its sandbox and WMS folders (the kit's helpers), its orders."""

    code: str
    wms: Installation
    orders: tuple[int, int] = (0, 0)
    #: An order created as the chaos begins: imported while a worker is killed or paused.
    late: int = 0

    def instructed(self) -> list[int]:
        """Every order line written to the WMS, by order id (an order twice: twice)."""
        return sorted(int(row["ne_order_id"]) for row in self.wms.instructed())

    @property
    def sandbox(self) -> SandboxServer:
        return self.wms.sandbox


def wait_until(
    what: str,
    condition: Callable[[], bool],
    timeout: float,
    workers: list[subprocess.Popen[bytes]],
    logs: list[Path],
    describe: Callable[[], str] = lambda: "",
) -> float:
    """Seconds until ``condition()``; fails with what is missing and the workers' logs."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            for worker in workers:  # every thread's stack into its log (SIGUSR1)
                if worker.poll() is None:
                    worker.send_signal(signal.SIGCONT)
                    worker.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            tails = "\n".join(
                f"--- {p.name} (exit {w.poll()}) ---\n"
                + "\n".join(p.read_text(errors="replace").splitlines()[-400:])
                for w, p in zip(workers, logs, strict=True)
            )
            pytest.fail(f"{what}: not reached in {timeout:.0f} s: {describe()}\n{tails}")
        time.sleep(0.25)
    return time.monotonic() - start


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(config), "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )


@pytest.fixture
def shippers(tmp_path: Path) -> Iterator[list[Shipper]]:
    """One sandbox (a company of its own) and WMS folders per company."""
    with ExitStack() as stack:
        result = []
        for index in range(COMPANIES):
            code = f"co{index:03d}"
            sandbox = stack.enter_context(SandboxServer(kit_sandbox_config()))
            wms = tmp_path / code / "wms"
            result.append(
                Shipper(
                    code,
                    Installation(sandbox, tmp_path / "daemon.yaml", wms / "inbox", wms / "outbox"),
                )
            )
        yield result


def write_fleet(folder: Path, fleet_url: str, shippers: list[Shipper]) -> Path:
    """daemon.yaml (shared settings, lease, vault key) and one company file per shipper."""
    credentials = folder / "credentials"
    credentials.mkdir(mode=0o700)
    key = credentials / KEY_CREDENTIAL
    key.write_text("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", encoding="utf-8")
    key.chmod(0o600)
    companies = folder / "companies"
    companies.mkdir()
    for shipper in shippers:
        base = shipper.sandbox.base_url
        (companies / f"{shipper.code}.yaml").write_text(
            dump_yaml(
                {
                    "wms": {
                        "connector": "csv",
                        "csv": {
                            "inbox": str(shipper.wms.inbox),
                            "outbox": str(shipper.wms.outbox),
                            "stable_seconds": 0.0,
                        },
                    },
                    "warehouses": DEFAULT_WAREHOUSES,
                    "plugins": DEFAULT_PLUGINS,
                    "nextengine": {"api_base": base, "login_base": base},
                }
            ),
            encoding="utf-8",
        )
    return write_config(
        folder,
        migrate=False,
        database_url=fleet_url,
        companies_dir="companies",
        credentials_dir=str(credentials),
        fleet_lease_seconds=LEASE_SECONDS,
        nextengine={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        dispatch={"queue_poll_seconds": 0.1, "queue_timeout_seconds": 30},
        schedule={
            "interval_seconds": 2,
            "jitter_seconds": 0,
            "dispatch_interval_seconds": 1,
            "intake_poll_seconds": 0.5,
        },
    )


def company_state(
    loaded: LoadedConfig, companies: Companies, fleet: FleetDatabase, code: str
) -> dict[str, Any]:
    """What a company's own tables hold: outbox and inbox states, what waits for a person
    (read-only)."""
    runtime = company_runtime(loaded, companies.companies[code], fleet=fleet)
    try:
        with read_session(runtime.db) as session:
            outbox = sorted(str(item.state) for item in session.exec(select(OutboxItem)))
            inbox = sorted(str(event.state) for event in session.exec(select(InboxEvent)))
        waiting = attention.collect(runtime.db).counts
    finally:
        runtime.close()
    return {"outbox": outbox, "inbox": inbox, "attention": waiting}


def test_three_workers_serve_every_company_once_through_a_kill_and_a_pause(
    fleet_url: str, shippers: list[Shipper], tmp_path: Path
) -> None:
    config = write_fleet(tmp_path, fleet_url, shippers)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(config), "db", "upgrade"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    print(f"\n`db upgrade` of {COMPANIES} company schemas: {time.monotonic() - started:.1f} s")
    loaded = load_config(config)
    companies = Companies(loaded)
    assert sorted(companies.companies) == [s.code for s in shippers]
    fleet = FleetDatabase(fleet_url, keys=load_keys(tmp_path / "credentials"))
    workers: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"worker-{n}.log" for n in range(WORKERS)]
    try:
        for shipper in shippers:
            connect(
                companies.companies[shipper.code].config,
                fleet.company_engine(shipper.code),
                *shipper.sandbox.state.issue_login(),
                store=fleet.vault.store(shipper.code),
            )
            st = shipper.sandbox.state
            for goods, quantity in (("A-1", 10), ("B-2", 5), ("C-3", 20)):
                st.create_goods(goods, quantity=quantity)
            shipper.orders = (
                st.create_order([("A-1", 1)], shop_id=1),
                st.create_order([("B-2", 2)], shop_id=1),
            )
            shipper.wms.products([("P-A", "A-1"), ("P-B", "B-2"), ("P-C", "C-3")])

        workers = [start_worker(config, log) for log in logs]

        def imported() -> bool:
            return all(
                sorted(int(r["ne_order_id"]) for r in s.wms.instructed()) == sorted(s.orders)
                for s in shippers
            )

        def not_imported() -> str:
            return "; ".join(
                f"{s.code}: {[r['ne_order_id'] for r in s.wms.instructed()]} of {s.orders}"
                for s in shippers
            )

        took = wait_until(
            "every company's orders written to its WMS", imported, 180, workers, logs, not_imported
        )
        print(f"{COMPANIES} companies imported by {WORKERS} workers in {took:.1f} s")
        with fleet.engine.connect() as connection:
            holders = dict(
                connection.execute(text("SELECT company, holder FROM fleet_lease")).tuples().all()
            )
        assert len(set(holders.values())) == WORKERS  # the companies are shared out

        for shipper in shippers:
            o1, o2 = shipper.orders
            shipper.wms.ship(o1, [("P-A", 1)], tracking=f"T-{shipper.code}")
            shipper.wms.ship(o2, [("P-B", 2)])
            shipper.wms.ship(None, [("P-C", 4)])
            shipper.wms.receive([("P-A", 5)])
            shipper.late = shipper.sandbox.state.create_order([("C-3", 1)], shop_id=1)
        dropped = time.monotonic()
        killed, paused = workers[0], workers[1]
        killed.send_signal(signal.SIGKILL)
        paused.send_signal(signal.SIGSTOP)
        time.sleep(LEASE_SECONDS * 2)  # past the lease: its companies are taken over
        paused.send_signal(signal.SIGCONT)

        def shipped() -> bool:
            return all(
                sorted(s.sandbox.ledger.shipped_order_ids()) == sorted(s.orders)
                and s.wms.uploaded("A-1") == 5
                and s.wms.uploaded("C-3") == -4
                and s.late in s.instructed()
                for s in shippers
            )

        def not_shipped() -> str:
            return "; ".join(
                f"{s.code}: shipped {s.sandbox.ledger.shipped_order_ids()} of {s.orders}, "
                f"A-1 {s.wms.uploaded('A-1')}, C-3 {s.wms.uploaded('C-3')}, "
                f"instructed {s.instructed()} (late {s.late}), "
                f"{company_state(loaded, companies, fleet, s.code)}"
                for s in shippers
                if sorted(s.sandbox.ledger.shipped_order_ids()) != sorted(s.orders)
                or s.wms.uploaded("A-1") != 5
                or s.wms.uploaded("C-3") != -4
                or s.late not in s.instructed()
            )

        wait_until(
            "every company's shipments confirmed in Next Engine",
            shipped,
            240,
            workers,
            logs,
            not_shipped,
        )
        print(
            f"shipped and stock uploaded for every company {time.monotonic() - dropped:.1f} "
            f"s after the files were dropped (one worker killed, one paused "
            f"{2 * LEASE_SECONDS:.0f} s)"
        )

        def settled() -> bool:
            return all(
                set(company_state(loaded, companies, fleet, s.code)["outbox"])
                <= {"done", "skipped"}
                for s in shippers
            )

        def unsettled() -> str:
            return "; ".join(
                f"{s.code}: {company_state(loaded, companies, fleet, s.code)}" for s in shippers
            )

        wait_until("every company's outbox settled", settled, 120, workers, logs, unsettled)
        for worker in workers[1:]:
            worker.send_signal(signal.SIGTERM)
        for worker in workers[1:]:
            assert worker.wait(60) == 0
        with fleet.engine.connect() as connection:  # SIGTERM released every lease
            assert (
                connection.execute(
                    text(
                        "SELECT count(*) FROM fleet_lease WHERE holder IS NOT NULL AND "
                        "expires_at > clock_timestamp()"
                    )
                ).scalar()
                == 0
            )
        log_text = "\n".join(p.read_text(errors="replace") for p in logs)
        assert "took over the expired lease" in log_text
        paused_log = logs[1].read_text(errors="replace")  # the paused one noticed, once
        assert "lease lost" in paused_log or "is no longer valid" in paused_log

        for shipper in shippers:
            o1, o2 = shipper.orders
            ledger = shipper.sandbox.ledger
            assert sorted(ledger.shipped_order_ids()) == sorted(shipper.orders), shipper.code
            order = shipper.wms.order(o1)
            assert order["receive_order_delivery_cut_form_id"] == f"T-{shipper.code}"
            assert shipper.wms.order(o2)["receive_order_order_status_id"] == "50"
            assert shipper.instructed() == sorted((*shipper.orders, shipper.late)), (
                shipper.code
            )  # each order written to the WMS once, the late one too
            assert shipper.wms.uploaded("A-1") == 5 and shipper.wms.uploaded("C-3") == -4
            assert shipper.wms.uploaded("B-2") == 0
            state = company_state(loaded, companies, fleet, shipper.code)
            assert set(state["outbox"]) <= {"done", "skipped"}, (shipper.code, state)
            assert "in_doubt" not in state["inbox"] and "held" not in state["inbox"], state
            assert state["attention"] == {}, (shipper.code, state)  # nobody needs to look
            traffic = shipper.sandbox.state.traffic
            assert traffic.max_in_flight(shipper.sandbox.state.company_id) == 1, shipper.code
            assert traffic.dead_pair_uses() == [], shipper.code  # no rotated pair sent again
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.kill()
                worker.wait()
        with fleet.engine.begin() as connection:
            for shipper in shippers:
                connection.execute(
                    text(f'DROP SCHEMA IF EXISTS "{fleet.schema(shipper.code)}" CASCADE')
                )
        fleet.close()
