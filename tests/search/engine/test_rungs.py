"""The promotion logic of the rungs (pure: no Ray, no Optuna)."""

from __future__ import annotations

import numpy as np
import pytest

from vitsearch.search.engine.rungs import Ladder, greedy_order, hypervolume, nondominated_fronts, rank_order

MAX_MIN = (True, False)  # accuracy up, latency down


def test_nondominated_fronts_layers():
    values = np.array([[0.9, 1.0], [0.8, 0.5], [0.85, 1.2], [0.7, 0.6], [0.6, 2.0]])
    # 0 and 1 trade off; 2 is dominated by 0; 3 by 1; 4 by everything in front 1 too
    assert nondominated_fronts(values, MAX_MIN).tolist() == [0, 0, 1, 1, 2]


def test_hypervolume_is_exact_in_two_and_three_objectives():
    from vitsearch.search.engine.sampler_bench import hypervolume_2d

    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = rng.random((12, 2))
        assert hypervolume(pts, np.array([1.1, 1.2])) == pytest.approx(hypervolume_2d(pts, (1.1, 1.2)))
    # three boxes from the origin's corner: [0,1]x[0,2]x[0,1] + [0,2]x[0,1]x[0,1] overlap in [0,1]x[0,1]x[0,1]
    assert hypervolume(np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]]), np.array([2.0, 2.0, 3.0])) == pytest.approx(3.0)
    assert hypervolume(np.array([[3.0, 0.0]]), np.array([2.0, 2.0])) == 0.0  # not better than the reference


def test_greedy_order_takes_the_largest_added_area_each_time():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])  # boxes to (4, 4): 3, 4, 3; each adds 1 once two are in
    assert greedy_order(pts, np.array([4.0, 4.0])) == [1, 0, 2]  # the knee first, then the lower index


def test_near_twins_do_not_hide_each_other():
    """By exclusive contributions two near-identical knee points each count for almost nothing and both ends go
    first; greedy selection takes the knee first and its twin last."""
    values = np.array([[0.80, 1.0], [0.95, 2.0], [0.9501, 2.001], [0.98, 3.5]])  # (accuracy up, ms down)
    order = rank_order([0, 1, 2, 3], values, MAX_MIN)
    assert order[0] in (1, 2) and order[-1] in (1, 2)


def test_rank_order_in_three_objectives():
    values = np.array([[0.95, 2.0, 5.0], [0.90, 1.0, 6.0], [0.97, 3.0, 4.0], [0.85, 2.5, 7.0]])  # 3 dominated by 0
    order = rank_order([10, 11, 12, 13], values, (True, False, False))
    assert sorted(order[:3]) == [10, 11, 12] and order[3] == 13
    pts = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]])
    assert greedy_order(pts, np.array([2.0, 2.0, 3.0])) == [0, 1]  # equal boxes: the lower index


def test_rank_order_puts_the_area_a_point_adds_before_the_ends_of_the_front():
    """Crowding distance ranked both ends of a front first; the contribution ranks a mild end (nearly the
    uncompressed model's latency, a hair more accurate) below an interior point that opens a large area."""
    numbers = [0, 1, 2, 3]
    values = np.array([[0.980, 3.9],  # mild: most accurate, slowest
                       [0.975, 2.0],  # interior: nearly as accurate, twice as fast
                       [0.900, 1.8],
                       [0.600, 1.0]])  # fastest, far less accurate
    order = rank_order(numbers, values, MAX_MIN)
    assert order.index(1) < order.index(0)


def test_rank_order_front_then_area_then_number():
    numbers = [10, 11, 12, 13, 14]
    values = np.array([[0.90, 1.0], [0.80, 0.5], [0.85, 0.8], [0.70, 0.6], [0.90, 1.0]])
    order = rank_order(numbers, values, MAX_MIN)
    assert set(order[:4]) == {10, 11, 12, 14} and order[-1] == 13  # 13 is dominated by 11
    assert order.index(10) < order.index(14)  # identical points: the lower number first


def _ladder(**kw) -> Ladder:
    return Ladder(steps=(10, 60, 200), reduction=3, maximize=MAX_MIN, **kw)


def test_asynchronous_promotion_as_soon_as_the_quota_allows():
    lad = _ladder()
    lad.record(0, 0, (0.90, 2.0))
    lad.record(1, 0, (0.50, 2.5))
    assert lad.promotable() == []  # 2 results, quota floor(2/3) = 0: nobody waits, nobody is promoted
    lad.record(2, 0, (0.95, 1.0))  # dominates both
    assert lad.promotable() == [(2, 1)]
    lad.issue(2, 1)
    assert lad.promotable() == []  # issued once: not again
    for n, v in ((3, (0.2, 3.0)), (4, (0.3, 3.0)), (5, (0.4, 3.0))):
        lad.record(n, 0, v)
    assert lad.promotable() == [(0, 1)]  # 6 results: quota 2, the next best is trial 0


def test_no_double_promotion_and_promotion_needs_a_result():
    lad = _ladder()
    for n in range(3):
        lad.record(n, 0, (0.9 - n / 10, 1.0))
    lad.issue(0, 1)
    with pytest.raises(ValueError, match="already promoted"):
        lad.issue(0, 1)
    with pytest.raises(ValueError, match="no result at rung 1"):
        lad.issue(1, 2)
    with pytest.raises(ValueError, match="never promoted"):
        lad.record(1, 1, (0.9, 1.0))


def test_higher_rungs_promote_first_and_the_top_never():
    lad = _ladder()
    for n in range(9):
        lad.record(n, 0, (0.5 + n / 100, 1.0))
    due = lad.promotable()
    assert due == [(8, 1), (7, 1), (6, 1)]
    for n, k in due:
        lad.issue(n, k)
        lad.record(n, k, (0.9 + n / 1000, 1.0))
    assert lad.promotable()[0] == (8, 2)  # rung 1 holds 3: quota 1, handed out before anything else
    lad.issue(8, 2)
    lad.record(8, 2, (0.99, 1.0))
    assert all(k <= 2 for _, k in lad.promotable()) and lad.reached(8) == 2
    assert lad.counts() == [9, 3, 1]


def test_lost_promotions_are_handed_out_again_failures_are_not():
    lad = _ladder()
    for n in range(6):
        lad.record(n, 0, (0.5 + n / 100, 1.0))
    lad.issue(5, 1)
    lad.issue(4, 1)
    assert lad.lost(in_flight={(5, 1)}) == [(4, 1)]  # issued, no result, not in flight: a killed driver's
    lad.record_failure(4, 1)
    assert lad.lost(in_flight={(5, 1)}) == []
    lad.record(5, 1, (0.9, 1.0))
    assert lad.lost() == [] and (4, 1) not in lad.promotable()


def test_held_candidates_rank_but_are_never_promoted():
    lad = _ladder(held={0})
    lad.record(0, 0, (0.99, 0.2))  # the uncompressed model here dominates all: best, but nothing to recover
    lad.record(1, 0, (0.5, 0.5))
    lad.record(2, 0, (0.4, 0.9))
    assert lad.promotable() == []  # quota 1 is spent on the held one
    for n in range(3, 6):
        lad.record(n, 0, (0.3, 0.95))
    assert lad.promotable() == [(1, 1)]


def test_the_front_is_drawn_from_each_candidates_highest_rung():
    lad = _ladder()
    lad.record(0, 0, (0.90, 1.0))
    lad.record(1, 0, (0.80, 0.5))
    lad.record(2, 0, (0.70, 0.9))  # dominated by 1
    assert sorted(lad.front()) == [0, 1]
    lad.issue(2, 1)
    lad.record(2, 1, (0.95, 0.9))  # recovered at rung 1: now it dominates 0 (its rung-0 value no longer counts)
    assert sorted(lad.front()) == [1, 2]


def test_finishing_takes_the_front_one_rung_up_toward_the_top_before_any_quota():
    lad = _ladder(held={9})
    lad.record(9, 0, (0.99, 2.0))  # the uncompressed model: on the front, never promoted
    lad.record(0, 0, (0.90, 1.0))
    lad.record(1, 0, (0.80, 0.5))
    lad.record(2, 0, (0.70, 0.9))  # dominated
    assert lad.promotable() == [(0, 1)]  # the quota (4 // 3 = 1) takes the front's knee
    lad.finishing = True
    assert set(lad.finishing_promotions()) == {(0, 1), (1, 1)} and 2 not in dict(lad.promotable())
    assert set(lad.promotable()) == {(0, 1), (1, 1)}  # the quota's pick appears once
    for n in range(10, 18):  # eight more, dominated: the quota (12 // 3 = 4) reaches beyond the front, to 2
        lad.record(n, 0, (0.60, 0.95))
    assert set(lad.promotable()) == {(0, 1), (1, 1), (2, 1)}
    lad.quotas = False  # the end of a time budget: the front alone
    assert set(lad.promotable()) == {(0, 1), (1, 1)}
    assert lad.finishing_work() and sorted(map(len, lad.finishing_work())) == [2, 2]
    lad.issue(0, 1)
    lad.issue(1, 1)
    assert lad.finishing_promotions() == []  # both in flight: nothing new, but their work is still ahead
    assert sorted(map(len, lad.finishing_work())) == [2, 2]
    lad.record(0, 1, (0.93, 1.0))
    lad.record_failure(1, 1)  # it stays at rung 0, never tried again
    assert lad.finishing_promotions() == [(0, 2)] and lad.finishing_work() == [[2]]
    lad.issue(0, 2)
    lad.record(0, 2, (0.95, 1.0))
    assert lad.finishing_promotions() == [] and lad.finishing_work() == []
