"""The reliability campaign, bounded to about a minute and a half (``python -m tests.reliability
--bounded``): crashes, a Next Engine fault storm, the bad-input corpus and the security checks.

The full campaign (2,000 + 2,000 events, 24 kills) is ``python -m tests.reliability``; its
figures are in ``tests/reliability/RESULTS.md``.
"""

from __future__ import annotations

import pytest

from tests.reliability.campaign import Settings, run_campaign
from tests.reliability.corpus import corpus_size
from tests.reliability.results import Figures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Figures:
    return run_campaign(
        Settings.bounded(),
        "python -m tests.reliability --bounded",
        tmp_path_factory.mktemp("reliability"),
    )


def test_sigkill_at_random_points_loses_and_doubles_nothing(figures: Figures) -> None:
    crash = next(p for p in figures.phases if p.name == "crash consistency")
    assert crash.ok, crash.problems + crash.outcome.problems
    assert sum(crash.kills.values()) >= Settings.bounded().kills
    assert crash.outcome.events_lost == 0 and crash.outcome.effects_doubled == 0
    assert crash.settlement.ok and crash.notes["most requests in flight for the company"] == 1


def test_a_fault_storm_reaches_the_same_exact_end_state(figures: Figures) -> None:
    storm = next(p for p in figures.phases if p.name == "fault storm")
    assert storm.ok, storm.problems + storm.outcome.problems
    assert storm.failing_share >= 0.2
    for kind in (
        "overload",
        "maintenance",
        "transient 000001",
        "system error 999999",
        "dropped before applying",
        "dropped after applying",
        "token expiry",
    ):
        assert storm.faults[kind] > 0, kind
    assert storm.outcome.events_lost == 0 and storm.outcome.effects_doubled == 0
    assert storm.notes["most requests in flight for the company"] == 1


def test_every_bad_input_gets_a_clear_error_and_nothing_is_applied(figures: Figures) -> None:
    assert figures.corpus is not None
    assert len(figures.corpus.results) == corpus_size() >= 60
    assert figures.corpus.ok, figures.corpus.problems


def test_no_secret_leaks_and_listeners_stay_on_loopback(figures: Figures) -> None:
    assert figures.security is not None
    assert figures.security.ok, figures.security.problems
    assert figures.security.scanned_files > 50 and figures.security.secrets_known > 10


def test_the_figures_are_printed_and_written(figures: Figures) -> None:
    assert figures.ok, figures.problems()
    summary = figures.summary()
    assert "events lost 0, effects doubled 0" in summary
    text = figures.markdown()
    assert "python -m tests.reliability --bounded" in text and "| fault storm |" in text
