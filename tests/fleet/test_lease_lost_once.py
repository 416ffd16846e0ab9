"""A worker resumed past its lease logs one WARNING per company it lost, whether its jobs or
its lease keeper find the loss first (review fleet F11). Real leases on the CI PostgreSQL."""

from __future__ import annotations

import logging
import time

import pytest

from daemon.fleet.leases import LeaseKeeper, LeaseLost, fence, fleet_engine


@pytest.mark.parametrize("first_to_see", ["job", "keeper"])
def test_one_warning_per_lost_company(
    fleet_url: str, caplog: pytest.LogCaptureFixture, first_to_see: str
) -> None:
    engine = fleet_engine(fleet_url, lease_seconds=1.0)
    company = f"acme-{first_to_see}"
    paused = LeaseKeeper(engine, [company], lease_seconds=1.0, worker_id="paused")
    taker = LeaseKeeper(engine, [company], lease_seconds=1.0, worker_id="taker")
    log = logging.getLogger("daemon.scheduler")
    try:
        assert paused.tick().acquired
        epoch = paused.held()[company]  # what its jobs' fences carry
        time.sleep(1.2)  # paused past its lease
        assert [lease.company for lease in taker.tick().acquired] == [company]
        caplog.clear()
        with caplog.at_level(logging.WARNING):

            def jobs() -> None:
                for _ in range(3):  # three of its jobs meet the loss
                    with pytest.raises(LeaseLost) as lost, engine.begin() as conn:
                        fence(conn, company, epoch)
                    lost.value.warn(log)

            if first_to_see == "job":
                jobs()
                assert paused.tick().lost == (company,)
            else:
                assert paused.tick().lost == (company,)
                jobs()
        warnings = [r.getMessage() for r in caplog.records if company in r.getMessage()]
        assert len(warnings) == 1, warnings
    finally:
        taker.stop()
        paused.stop()
        engine.dispose()
