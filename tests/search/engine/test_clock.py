"""The time budget's clock (search/engine/clock.py) on its own: no searcher, no study."""

from __future__ import annotations

import pickle
import time

import pytest

from vitsearch.search.engine.clock import FINISH_MARGIN, BudgetClock, chains_seconds, high_percentile
from vitsearch.search.engine.rungs import Ladder


def test_the_first_rung_is_priced_by_its_slow_evaluations():
    assert high_percentile([]) is None and high_percentile([7.0]) == 7.0
    assert high_percentile([2.0] * 5 + [140.0] * 4) == pytest.approx(140.0)  # the median would say 2 s


def test_chains_count_only_the_rungs_that_end_in_time_and_are_shared_by_the_workers():
    # 10 + 20 s and 40 s: shared by 2 workers 35 s, but the longest chain alone takes 40 s
    assert chains_seconds([[10.0, 20.0], [40.0]], left=1e9, workers=2) == pytest.approx(FINISH_MARGIN * 40)
    assert chains_seconds([[10.0, 20.0], [40.0]], left=1e9, workers=1) == pytest.approx(FINISH_MARGIN * 70)
    # 30 s left: the 40 s rung cannot run and the 20 s rung cannot end after the 10 s one, so nothing is kept for them
    assert chains_seconds([[10.0, 20.0], [40.0]], left=30.0, workers=2) == pytest.approx(FINISH_MARGIN * 10)
    assert chains_seconds([[40.0]], left=30.0, workers=2) == 0.0 and chains_seconds([], 30.0, 2) == 0.0


def test_without_a_deadline_nothing_is_limited_and_the_clock_pickles_whole():
    clock = BudgetClock(Ladder((10, 50), 3.0, (True, False)), workers=2)
    clock.record_first(60.0)
    assert not clock.passed() and clock.batch_room(True) is None and clock.finish_reserve() == 0.0
    assert clock.fits_in_time(0, 1)
    copy = pickle.loads(pickle.dumps(clock))
    assert copy.first_seconds == [60.0] and copy.ladder.steps == (10, 50)


def test_a_promotion_that_cannot_finish_before_the_deadline_is_not_handed_out():
    clock = BudgetClock(Ladder((10, 50), 3.0, (True, False)), workers=2, deadline=time.time() + 99)
    assert clock.batch_room(False) == 1 and clock.fits_in_time(0, 1)  # nothing timed: 1 candidate, any promotion
    clock.record_first(20.0)  # rung 1 adds 40 steps to the first rung's 10: 80 s, x1.25 = 100 s: over the 99 s left
    assert clock.rung_cost(1) == pytest.approx(80.0) and not clock.fits_in_time(0, 1)
    clock.record_rung(1, 30.0)  # measured: 30 s, x1.25 fits
    assert clock.fits_in_time(0, 1) and clock.batch_room(False) == 4  # 98.9.. s // 20 s
