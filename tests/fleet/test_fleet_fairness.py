"""One company's stuck jobs on a fleet worker: they hold at most its share of the worker's
shared job threads, a job due meanwhile waits without holding a thread, the other companies
keep running, a stuck job is reported as overdue with its company and job, and the drain on
stop does not wait for it forever (#19)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

import pytest

from daemon.fleet.daemon import company_share
from daemon.fleet.leases import LeaseLost
from daemon.runtime import Runtime, build_runtime
from daemon.scheduler import INTAKE_JOB, JobHost, Scheduler, warehouse_job
from daemon.testing.installation import drop_file
from tests.conftest import ConfigFactory


def with_connector(config: Path) -> Runtime:
    """The runtime of ``config`` with its connector started, as a fleet worker starts it."""
    runtime = build_runtime(config)
    assert runtime.connector is not None
    runtime.connector.recover(runtime.connector_context())
    return runtime


def _wait(condition: object, seconds: float = 10.0) -> bool:
    done = threading.Event()
    for _ in range(int(seconds / 0.02)):
        if callable(condition) and condition():
            return True
        done.wait(0.02)
    return False


def test_a_company_with_stuck_jobs_leaves_the_others_the_shared_threads(
    make_config: ConfigFactory,
) -> None:
    runtime = with_connector(make_config())
    host = JobHost.for_worker(4)
    stuck = Scheduler(runtime, host=host, company="stuck", share=company_share(4))
    other = Scheduler(runtime, host=host, company="other", share=company_share(4))
    release = threading.Event()
    entered: list[str] = []
    ran: list[str] = []

    def hung(name: str) -> None:
        entered.append(name)
        release.wait()  # a plugin hook that never returns

    now = datetime.now().astimezone()
    host.start()
    try:
        for number in range(4):
            name = f"hung{number}"
            host.scheduler.add_job(
                stuck._guarded(lambda name=name: hung(name), name),
                id=f"stuck/{name}",
                executor=host.executor("default"),
                next_run_time=now,
            )
        assert _wait(lambda: len(entered) == 2)
        # its other two runs were deferred: they hold no thread while they wait
        assert _wait(lambda: host.busy() == 2)
        assert sorted(stuck._deferred) == sorted(set(f"hung{n}" for n in range(4)) - set(entered))
        for number in range(2):  # the other company runs on the two threads left
            name = f"work{number}"
            host.scheduler.add_job(
                other._guarded(lambda name=name: ran.append(name), name),
                id=f"other/{name}",
                executor=host.executor("outbox"),
                next_run_time=now,
            )
        assert _wait(lambda: sorted(ran) == ["work0", "work1"])
        assert len(entered) == 2  # never more than its share
        release.set()
        assert _wait(lambda: not stuck._running)
        # a deferred job is asked for again when one of the company's jobs ends
        assert stuck._run_requests.keys() >= set(f"hung{n}" for n in range(4)) - set(entered[:2])
    finally:
        release.set()
        runtime.stop_event.set()
        stuck.shutdown(5.0)
        other.shutdown(5.0)
        host.shutdown(wait=True)
        runtime.close()
    assert company_share(1) == 1 and company_share(8) == 4


def test_companies_on_one_host_share_its_threads_and_leave_when_they_stop(
    make_config: ConfigFactory,
) -> None:
    runtime = with_connector(make_config())
    host = JobHost.for_worker(2)
    schedulers = [
        Scheduler(runtime, host=host, company=f"c{number}", share=1) for number in range(50)
    ]
    before = threading.active_count()
    started = datetime.now().astimezone()
    host.start()
    try:
        for scheduler in schedulers:
            scheduler.start()
        ids = {job.id for job in host.scheduler.get_jobs()}
        assert {f"c7/{warehouse_job('ITAKU')}", "c7/dispatcher", "c49/intake"} <= ids
        # every first run was handed to a thread and has ended
        assert _wait(
            lambda: (
                host.busy() == 0
                and all(job.next_run_time > started for job in host.scheduler.get_jobs())
            )
        )
        # one scheduler thread, 2 work threads, the notification, poll and heartbeat pools:
        # the threads do not grow with the companies
        assert threading.active_count() - before <= 1 + 2 + 2 + 1 + 1
        runtime.stop_event.set()
        for scheduler in schedulers[:25]:
            assert scheduler.shutdown(5.0) == []
        left = {job.id.split("/")[0] for job in host.scheduler.get_jobs()} - {"heartbeat", "poll"}
        assert left == {f"c{number}" for number in range(25, 50)}
        assert host.healthy()
    finally:
        runtime.stop_event.set()
        for scheduler in schedulers:
            scheduler.shutdown(5.0)
        host.shutdown(wait=True)
        runtime.close()


def test_a_stuck_job_is_reported_overdue_and_the_drain_gives_up_on_it(
    make_config: ConfigFactory,
) -> None:
    runtime = with_connector(make_config())
    release = threading.Event()
    began = threading.Event()

    def hung_job() -> None:
        began.set()
        release.wait()

    scheduler = Scheduler(runtime, host=JobHost.for_worker(2), company="acme", share=1)
    job_id = warehouse_job("MAIN")
    thread = threading.Thread(target=scheduler._guarded(hung_job, job_id), daemon=True)
    try:
        thread.start()  # as the worker's pool runs a warehouse's job
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


def test_runs_waiting_for_a_thread_are_counted_and_reported_late(
    make_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = with_connector(make_config())
    host = JobHost.for_worker(1)
    first = Scheduler(runtime, host=host, company="first", share=1)
    second = Scheduler(runtime, host=host, company="second", share=1)
    release = threading.Event()
    began = threading.Event()
    ran = threading.Event()

    def hold() -> None:
        began.set()
        release.wait()

    now = datetime.now().astimezone()
    host.start()
    try:
        host.scheduler.add_job(
            first._guarded(hold, "hold"), id="first/hold", executor="work", next_run_time=now
        )
        assert began.wait(10)
        host.scheduler.add_job(
            second._guarded(ran.set, "due"),
            id="second/due",
            executor="work",
            next_run_time=now,
            misfire_grace_time=None,  # as the company jobs: late, never dropped
        )
        assert _wait(lambda: host.waiting() == 1)  # due, and no thread free
        assert host.busy() == 1
        release.wait(1.2)  # it waits more than a second for the one thread
        release.set()
        assert ran.wait(10)
        assert _wait(lambda: host.waiting() == 0 and host.busy() == 0), host._submitted
        count, longest, worst = host.late_runs()
        assert (count, worst) == (1, ["second/due"]) and longest >= 1.0
        host._late.append(("second/due", 5.0))
        host._late_reported -= 3600  # the minute is up at the next heartbeat
        with caplog.at_level(logging.WARNING, logger="daemon.scheduler"):
            assert _wait(lambda: "waited up to 5 s for a free thread" in caplog.text)
        assert "raise `fleet_job_slots` or start another worker" in caplog.text
    finally:
        release.set()
        runtime.stop_event.set()
        first.shutdown(5.0)
        second.shutdown(5.0)
        host.shutdown(wait=True)
        runtime.close()


def test_a_job_that_finds_its_lease_taken_over_logs_one_warning_without_a_traceback(
    make_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = with_connector(make_config())
    scheduler = Scheduler(runtime, host=JobHost.for_worker(2), company="acme", share=1)

    def lease_gone() -> None:
        raise LeaseLost("acme", 7, "taken over by worker other:1 (epoch 8)")

    try:
        with caplog.at_level(logging.INFO):
            for job_id in ("dispatcher", "intake", "dispatcher"):
                scheduler._guarded(lease_gone, job_id)()
    finally:
        runtime.close()
    warnings = [r for r in caplog.records if "lease (epoch 7) is no longer valid" in r.message]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert warnings[0].exc_info is None
    assert "scheduled job failed" not in caplog.text


def test_a_shared_host_polls_every_companys_intake_in_one_job(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(schedule={"interval_seconds": 3600, "intake_poll_seconds": 0.2})
    runtime = with_connector(config)
    host = JobHost.for_worker(2)
    scheduler = Scheduler(runtime, host=host, company="acme", share=1)
    stop = threading.Event()

    def wake_loop() -> None:  # as the fleet worker's wake thread
        while not stop.wait(0.1):
            scheduler.apply_run_requests()

    waker = threading.Thread(target=wake_loop, daemon=True)
    host.start()
    scheduler.start()
    waker.start()
    try:
        intake = host.scheduler.get_job(f"acme/{INTAKE_JOB}")
        assert intake.trigger.interval.total_seconds() == 3600  # no job every 0.2 s
        assert "poll" in {job.id for job in host.scheduler.get_jobs()}
        assert _wait(lambda: not runtime.connector.has_new_input())  # the first intake ran
        inbox = tmp_path / "wms" / "inbox"
        dropped = drop_file(inbox, "shipments-broken.csv", "not,a,shipment", ["x,y,z"])
        # the poll saw it and brought the intake forward, which took (and rejected) it
        assert _wait(lambda: bool(list((inbox / "rejected").glob("shipments-broken*"))))
        assert not dropped.exists()
        runtime.stop_event.set()
        assert scheduler.shutdown(5.0) == []
        assert host._polls == {}  # a company that stops is no longer polled
    finally:
        stop.set()
        runtime.stop_event.set()
        scheduler.shutdown(5.0)
        host.shutdown(wait=True)
        runtime.close()
