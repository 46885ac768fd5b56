"""`vitsearch pick`'s choice rules on synthetic fronts: within a latency budget, within a paired drop, by the
teacher, and the budgets it refuses. The end-to-end picks on a real run are test_pick_run.py's."""

from __future__ import annotations

import pandas as pd
import pytest

from vitsearch.spaces.errors import ConfigError, NothingWithinBudget


def front(*rows):
    return pd.DataFrame([{"number": n, "accuracy": a, "budget_ms": ms, "size_mb": mb, "summary": f"cfg{n}",
                          "budget_source": "measured (as recorded)"} for n, a, ms, mb in rows])


FRONT = front((1, 0.90, 1.0, 1.0), (2, 0.95, 2.0, 2.0), (3, 0.97, 3.0, 4.0), (4, 0.98, 4.0, 5.0))


def test_most_accurate_within_budget_wins():
    from vitsearch.search.results.pick import choose, runner_up_line

    c = choose(FRONT, 3.5)
    assert int(c.winner["number"]) == 3 and int(c.runner_up["number"]) == 2
    assert "most accurate (97.00%)" in c.why and "1 more accurate" in c.why
    assert "runner-up: trial 2" in runner_up_line(c)
    assert int(choose(FRONT, 3.0).winner["number"]) == 3  # the budget is inclusive
    assert int(choose(FRONT, 100, max_size_mb=2.5).winner["number"]) == 2
    assert int(choose(FRONT, 100, min_accuracy=0.975).winner["number"]) == 4
    only = choose(FRONT, 1.5)
    assert int(only.winner["number"]) == 1 and only.runner_up is None


def test_with_closeness_the_variant_closest_to_the_teacher_wins():
    """``closeness`` ranks only the variants within what was asked (it is called with those rows), the smallest val KL
    from the teacher first, ties to the faster; the most accurate on val top-1 need not win."""
    from vitsearch.search.results.pick import choose, runner_up_line

    kls = {1: 0.09, 2: 0.04, 3: 0.05, 4: 0.01}
    called = []

    def closeness(rows):
        called.append(sorted(int(n) for n in rows["number"]))
        return rows["number"].map(kls)

    c = choose(FRONT, 3.5, closeness=closeness)
    assert called == [[1, 2, 3]]  # trial 4 is over the budget: never rebuilt
    assert int(c.winner["number"]) == 2 and int(c.runner_up["number"]) == 3  # 97 % val lost to 95 %
    assert "closest to the teacher on val (KL 0.0400; 95.00% val top-1) of 3 Pareto variant(s)" in c.why
    assert c.asked["choose_by"] == "teacher" and choose(FRONT, 3.5).asked["choose_by"] == "top1"
    assert "KL +0.0100" in runner_up_line(c)
    tie = choose(FRONT, 3.5, closeness=lambda rows: rows["number"].map({1: 0.05, 2: 0.05, 3: 0.05}))
    assert int(tie.winner["number"]) == 1  # equally close: the faster
    # values for other rows than those within what was asked (here positional, while trial 1 is filtered out): refused
    with pytest.raises(ValueError, match="closeness: its values are for rows"):
        choose(FRONT, 3.5, min_accuracy=0.92, closeness=lambda rows: pd.Series([0.01, 0.02]))
    # the fastest within a drop (no latency budget) is chosen on latency: closeness is not asked
    assert int(choose(FRONT, max_drop=5, base_accuracy=0.98, closeness=lambda rows: 1 / 0).winner["number"]) == 2


def test_the_teacher_ranks_the_front_and_the_top_rungs_other_trials():
    """A trial off the front by val top-1 that reached the top rung is a candidate; one that did not, an infeasible
    one and a reused duplicate are not; a study without rungs offers its front alone."""
    from types import SimpleNamespace

    from vitsearch.search.results.pick import choose, runner_up_line
    from vitsearch.search.results.runview import Remeasure, front_latency, top_rung_pool

    cols = ["number", "state", "feasible", "reused_from", "rung", "accuracy", "latency_ms"]
    frame = pd.DataFrame([(0, "COMPLETE", True, None, 2, 0.97, 1.0), (1, "COMPLETE", True, None, 2, 0.99, 3.0),
                          (2, "COMPLETE", True, None, 2, 0.96, 2.0),  # off the front (0 is faster and better)
                          (3, "COMPLETE", True, None, 1, 0.95, 1.5),  # stopped a rung lower
                          (4, "COMPLETE", False, None, 2, 0.99, 0.5),  # infeasible
                          (5, "COMPLETE", True, 2, 2, 0.96, 2.0),  # a duplicate of trial 2
                          (6, "FAIL", None, None, None, None, None)], columns=cols)
    front = frame.iloc[[0, 1]]
    view = SimpleNamespace(frame=frame, front=front, objectives=[("accuracy", "maximize"), ("latency_ms", "minimize")],
                           spec=SimpleNamespace(recovery=SimpleNamespace(ladder=(10, 50, 150))))
    pool = top_rung_pool(view)
    assert list(pool["number"]) == [0, 2, 1]  # by latency
    rows = pool.assign(budget_ms=pool["latency_ms"], size_mb=1.0, summary="cfg", budget_source="measured")
    c = choose(rows, 2.5, closeness=lambda r: r["number"].map({0: 0.05, 2: 0.03}), pool="top-rung or Pareto")
    assert int(c.winner["number"]) == 2 and "of 2 top-rung or Pareto variant(s) within 2.5 ms" in c.why
    assert "1 more accurate or slower top-rung or Pareto variant(s)" in c.why
    assert c.asked == {"latency_ms": 2.5, "choose_by": "teacher", "ranked_among": "top-rung or Pareto"}
    with pytest.raises(NothingWithinBudget, match="no top-rung or Pareto variant within 0.5 ms"):
        choose(rows, 0.5, closeness=lambda r: r["number"].map({}), pool="top-rung or Pareto")
    alone = choose(rows.iloc[[1]], 2.5, closeness=lambda r: r["number"].map({2: 0.03}), pool="top-rung or Pareto")
    assert "the only top-rung or Pareto variant within" in runner_up_line(alone)
    # re-measured latencies must cover every row ranked: one left out would drop out of the budget unsaid
    table = pd.DataFrame({"number": [0, 1], **{k: [1.0, 3.0] for k in ("remeasured_ms", "remeasured_low_ms",
                          "remeasured_high_ms", "remeasured_p10_ms", "remeasured_p90_ms", "remeasured_ratio")},
                          "remeasured_confidence": 0.95, "remeasured_runs": 10})
    with pytest.raises(ValueError, match=r"trial\(s\) \[2\] were not re-measured"):
        front_latency(view, Remeasure(True, "", table=table), pool)
    assert list(front_latency(view, Remeasure(True, "", table=table), front)["budget_ms"]) == [1.0, 3.0]
    view.spec.recovery.ladder = (0,)
    assert top_rung_pool(view) is front


def test_nothing_within_budget_names_the_fastest():
    from vitsearch.search.results.pick import choose

    with pytest.raises(NothingWithinBudget, match=r"within 0.5 ms with high probability; the fastest is trial 1 at 1.000 ms") as exc:
        choose(FRONT, 0.5)
    assert exc.value.exit_code == 3
    with pytest.raises(NothingWithinBudget, match="accuracy >= 99.00%"):
        choose(FRONT, 10, min_accuracy=0.99)


def test_within_budget_means_the_interval_high_end():
    from vitsearch.search.results.pick import choose

    f = FRONT.assign(budget_high_ms=[1.1, 2.2, 3.3, 4.4], budget_confidence=[0.95, 0.95, 0.9, 0.95])
    c = choose(f, 3.0)  # trial 3's point estimate (3.0) is within, its interval's high end (3.3) is not
    assert int(c.winner["number"]) == 2
    assert "within budget with >= 97.5 % probability" in c.why and "high end 2.200 ms of its 95 % interval" in c.why
    assert int(choose(f, 3.3).winner["number"]) == 3
    assert "within budget with >= 95.0 % probability" in choose(f, 3.3).why


def test_fastest_within_max_drop_wins():
    """--max-drop alone: the fastest variant at most P val points below the uncompressed model; with a latency
    budget too: the most accurate within both."""
    from vitsearch.search.results.pick import choose, runner_up_line

    c = choose(FRONT, max_drop=1, base_accuracy=0.98)  # floor 97 %: trials 3 and 4
    assert int(c.winner["number"]) == 3 and int(c.runner_up["number"]) == 4
    assert "the fastest of 2 Pareto variant(s) within 1 val point of the uncompressed model (98.00% val)" in c.why
    assert "2 more Pareto variant(s) are not within what was asked" in c.why
    assert "(+1.0 val points, unpaired, +1.000 ms latency vs the winner)" in runner_up_line(c)
    assert c.asked == {"max_drop_points": 1}
    assert int(choose(FRONT, max_drop=0, base_accuracy=0.98).winner["number"]) == 4
    assert int(choose(FRONT, max_drop=10, base_accuracy=0.98).winner["number"]) == 1
    both = choose(FRONT, 3.5, max_drop=3, base_accuracy=0.98)  # floor 95 %, within 3.5 ms: trials 2 and 3
    assert int(both.winner["number"]) == 3 and "most accurate (97.00%)" in both.why
    assert both.asked == {"latency_ms": 3.5, "max_drop_points": 3, "choose_by": "top1", "ranked_among": "Pareto"}
    # the floor is a float sum: 0.984 - 0.01 is 0.9739999..., and a variant at 97.4 % is within 1 point
    edge = front((1, 0.974, 1.0, 1.0), (2, 0.984, 2.0, 2.0))
    assert int(choose(edge, max_drop=1, base_accuracy=0.984).winner["number"]) == 1


def test_nothing_within_max_drop_names_the_most_accurate():
    from vitsearch.search.results.pick import choose

    with pytest.raises(NothingWithinBudget, match=r"within 0.5 val points of the uncompressed model \(99.00% val\); "
                                                  r"the most accurate is trial 4 at 4.000 ms"):
        choose(FRONT, max_drop=0.5, base_accuracy=0.99)
    with pytest.raises(NothingWithinBudget, match=r"within 0.5 ms with high probability and within 1 val point of.*the "
                                                  r"fastest is trial 1"):
        choose(FRONT, 0.5, max_drop=1, base_accuracy=0.98)


@pytest.mark.parametrize("kw", [{}, {"max_drop": -1, "base_accuracy": 0.9}, {"max_drop": 101, "base_accuracy": 0.9},
                                {"max_drop": float("nan"), "base_accuracy": 0.9}, {"max_drop": 1},
                                {"max_drop": 1, "base_accuracy": float("nan")},
                                {"latency_ms": 0}, {"latency_ms": -2}, {"latency_ms": float("nan")},
                                {"latency_ms": 5, "min_accuracy": 1.5}, {"latency_ms": 5, "max_size_mb": 0}])
def test_meaningless_budgets_are_refused(kw):
    from vitsearch.search.results.pick import choose

    with pytest.raises(ConfigError) as exc:
        choose(FRONT, **kw)
    assert exc.value.exit_code == 2
