"""One company's stuck job on a fleet worker: it holds at most its share of the job slots,
is reported as overdue with its company and job, and the drain on stop does not wait for it
forever (#19)."""

from __future__ import annotations

import threading

from daemon.fleet.daemon import CompanySlots, company_share
from daemon.runtime import build_runtime
from daemon.scheduler import Scheduler, warehouse_job
from tests.conftest import ConfigFactory


def test_a_company_with_stuck_jobs_leaves_the_others_job_slots() -> None:
    worker_slots = threading.BoundedSemaphore(4)
    stuck = CompanySlots(worker_slots, company_share(4))
    other = CompanySlots(worker_slots, company_share(4))
    release = threading.Event()
    entered = threading.Semaphore(0)

    def hung_job() -> None:
        with stuck:
            entered.release()
            release.wait()  # a plugin hook that never returns

    threads = [threading.Thread(target=hung_job, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
        assert not entered.acquire(timeout=0.3)  # its 3rd and 4th job wait for its share
        for _ in range(2):  # the other company still gets two slots, without waiting
            assert other.own.acquire(blocking=False) and worker_slots.acquire(blocking=False)
        assert not worker_slots.acquire(blocking=False)  # the four slots are in use
        for _ in range(2):
            worker_slots.release()
            other.own.release()
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert company_share(1) == 1 and company_share(8) == 4


def test_a_stuck_job_is_reported_overdue_and_the_drain_gives_up_on_it(
    make_config: ConfigFactory,
) -> None:
    runtime = build_runtime(make_config())
    release = threading.Event()
    began = threading.Event()

    def hung_job() -> None:
        began.set()
        release.wait()

    scheduler = Scheduler(
        runtime, slots=CompanySlots(threading.BoundedSemaphore(2), 1), company="acme"
    )
    job_id = warehouse_job("MAIN")
    thread = threading.Thread(target=scheduler._guarded(hung_job, job_id), daemon=True)
    try:
        thread.start()  # as the scheduler's pool runs a warehouse's job
        assert began.wait(10)
        assert [job for job, _ in scheduler.overdue(0.0)] == [job_id]
        assert scheduler.overdue(0.0) == []  # each run reported once
        runtime.stop_event.set()
        assert scheduler.shutdown(0.3) == [job_id]  # returned, naming the job still running
    finally:
        release.set()
        thread.join(10)
        runtime.close()
    assert scheduler.shutdown(0.0) == []
