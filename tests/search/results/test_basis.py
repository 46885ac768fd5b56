"""One ms basis: every ms a run states is its ratio times one uncompressed time (search/results/basis.py)."""

import pandas as pd
import pytest


def test_one_ms_basis_for_every_sitting():
    """Two sittings of one variant, timed beside references of 6 and 5 ms, come out in one basis: their ms
    differ only by their ratios; a row without a ratio keeps its ms as timed."""
    from vitsearch.search.results.basis import rebase, report_basis

    records = [{"ratio": 0.5, "reference_ms_now": r, "reference_ms_profile": None} for r in (5.0, 6.0, 7.0)]
    basis = report_basis(records + [{}, {"median_ms": 3.0}])
    assert basis.reference_ms == 6.0 and "median over the 3 times" in basis.text()
    assert report_basis(records + [{"ratio": 0.4, "reference_ms_profile": 4.0}]).reference_ms == 4.0
    assert report_basis([{"median_ms": 3.0}]).reference_ms is None
    front = pd.DataFrame({"number": [7, 8], "latency_ratio": [0.70, None], "latency_ms": [4.2, 3.0],
                          "latency_low_ms": [3.9, 2.9], "latency_high_ms": [4.5, 3.1],
                          "remeasured_ratio": [0.72, None], "remeasured_ms": [3.6, 3.1],
                          "remeasured_low_ms": [3.5, 3.0], "remeasured_high_ms": [3.7, 3.2], "budget_ms": [3.6, 3.1]})
    out = rebase(front, basis)
    assert out["latency_ms"].tolist() == pytest.approx([0.70 * 6.0, 3.0])
    assert out["remeasured_ms"].tolist() == pytest.approx([0.72 * 6.0, 3.1])
    assert out["latency_high_ms"][0] == pytest.approx(4.5 * 0.7 * 6.0 / 4.2)  # the interval scales with its point
    assert out["latency_ms_as_timed"].tolist() == [4.2, 3.0] and out["speedup"][0] == pytest.approx(1 / 0.70)
    assert out["budget_ms"].tolist() == out["remeasured_ms"].tolist()  # decided on the re-measurement
    assert out["budget_high_ms"].tolist() == pytest.approx([3.7 * 0.72 * 6.0 / 3.6, 3.2])
    timed = report_basis([{"median_ms": 3.0}])  # a run that recorded no ratio (burst timings): ms as timed, said so
    assert timed.text().startswith("ms as timed (this run recorded no ratio") and "no speed-up" in timed.text()
    assert rebase(front, timed)["latency_ms"].tolist() == [4.2, 3.0]


def test_the_front_is_ordered_on_the_basis():
    """Trial 2 was timed faster (1.9 ms) only because its reference ran fast: on the basis it is slower than
    trial 1, so it is listed after it. Membership stays as the search judged it, on the values as timed
    (its rungs finished that front): trial 3, timed slower than 1 and less accurate, stays off though it is
    faster on the basis."""
    from vitsearch.search.results.basis import MsBasis, in_basis_order
    from vitsearch.search.results.tables import pareto_front

    frame = pd.DataFrame({"number": [1, 2, 3], "state": "COMPLETE", "feasible": True, "reused_from": None,
                          "accuracy": [0.98, 0.97, 0.96], "latency_ratio": [0.50, 0.52, 0.45],
                          "latency_ms": [2.00, 1.90, 2.10]}, index=[10, 11, 12])
    objectives = [("accuracy", "maximize"), ("latency_ms", "minimize")]
    assert pareto_front(frame, objectives)["number"].tolist() == [2, 1]  # as timed
    on_basis = in_basis_order(pareto_front(frame, objectives), MsBasis(4.0, "test"))
    assert on_basis["number"].tolist() == [1, 2]
    assert on_basis["latency_ms"].tolist() == [2.00, 1.90]  # the rows keep their ms as timed
    assert in_basis_order(pareto_front(frame, objectives), MsBasis(None, "no ratio"))["number"].tolist() == [2, 1]
