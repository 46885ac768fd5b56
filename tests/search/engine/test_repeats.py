"""A run's own sitting-to-sitting spread: early candidates timed again at its end, intervals widened by it."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from vitsearch.search.engine.repeats import MIN_PAIRS, Sitting, pair_coverage, pair_spread
from vitsearch.search.results.sitting import run_sitting_sd, sitting_line, widen_frame


def _exact(ratio: float) -> Sitting:
    return Sitting(ratio, ratio * (1 - 1e-9), ratio * (1 + 1e-9))


def test_the_spread_is_what_the_pairs_move_beyond_their_own_intervals():
    d = 0.04
    pairs = [(_exact(0.5), _exact(0.5 * math.exp(s * d))) for s in (1, -1, 1, -1)]
    assert pair_spread(pairs) == pytest.approx(d / math.sqrt(2), rel=1e-6)  # the spread enters a difference twice
    # pairs that move less than their own intervals say: no spread beyond them
    wide = Sitting(0.5, 0.45, 0.55)
    assert pair_spread([(wide, Sitting(0.51, 0.46, 0.56))] * 4) == 0.0
    assert pair_spread(pairs[:MIN_PAIRS - 1]) is None


def test_coverage_counts_second_measurements_inside_the_first_interval_as_stated_and_widened():
    first = Sitting(0.5, 0.49, 0.51)
    pairs = [(first, Sitting(0.505, 0.5, 0.51)), (first, Sitting(0.53, 0.52, 0.54)), (first, Sitting(0.60, 0.59, 0.61))]
    assert pair_coverage(pairs, None, 0.95) == {"n": 3, "within_stated": 1, "within_widened": 1}
    # a spread of 4 % (log sd): each side's log half-width sqrt(2) x hypot(2 %, 1.96 x 4 %) = 11.5 %:
    # 0.53 falls inside, 0.60 does not
    assert pair_coverage(pairs, 0.04, 0.95) == {"n": 3, "within_stated": 1, "within_widened": 2}


def test_a_stated_interval_covers_a_re_measurement_as_often_as_it_says():
    """Simulated sittings with a known spread and noise: the predictive interval covers ~95 % of second
    measurements; the interval for the value itself (widen) covers visibly fewer."""
    import random

    from vitsearch.evaluators.latency.stats import predictive, widen

    rng, z, spread, noise = random.Random(0), 1.959964, 0.03, 0.015
    inside = {"predictive": 0, "value": 0}
    n = 4000
    for _ in range(n):
        true = math.log(0.6) + rng.gauss(0, 0.2)
        a, b = (true + rng.gauss(0, spread) + rng.gauss(0, noise) for _ in range(2))
        r, lo, hi = math.exp(a), math.exp(a - z * noise), math.exp(a + z * noise)
        for name, f in (("predictive", predictive), ("value", widen)):
            low, high = f(r, lo, hi, spread, 0.95)
            inside[name] += low <= math.exp(b) <= high
    assert 0.93 <= inside["predictive"] / n <= 0.97
    assert inside["value"] / n < 0.88


def test_widen_frame_widens_measured_rows_only_and_leaves_its_input_alone():
    frame = pd.DataFrame([
        {"latency_ms": 2.0, "latency_low_ms": 1.96, "latency_high_ms": 2.04, "latency_confidence": 0.95,
         "latency_source": "measured"},
        {"latency_ms": 3.0, "latency_low_ms": 2.7, "latency_high_ms": 3.3, "latency_confidence": 0.95,
         "latency_source": "predicted"},
        {"latency_ms": 4.0, "latency_low_ms": None, "latency_high_ms": None, "latency_confidence": None,
         "latency_source": "measured"},
    ])
    out = widen_frame(frame, 0.03)
    assert out.loc[0, "latency_low_ms"] < 1.96 and out.loc[0, "latency_high_ms"] > 2.04
    assert math.log(out.loc[0, "latency_high_ms"] / 2.0) == pytest.approx(
        math.sqrt(2) * math.hypot(math.log(1.02), 1.96 * 0.03), rel=1e-3)
    assert (out.loc[1, "latency_low_ms"], out.loc[1, "latency_high_ms"]) == (2.7, 3.3)
    assert out.loc[2, "latency_low_ms"] is None or out.loc[2, "latency_low_ms"] != out.loc[2, "latency_low_ms"]
    assert frame.loc[0, "latency_low_ms"] == 1.96
    assert widen_frame(frame, None) is frame
    assert widen_frame(frame, 0.0).loc[0, "latency_high_ms"] > 2.04  # no spread: still the re-measurement's noise


def test_the_line_under_the_front_says_what_the_intervals_include():
    assert run_sitting_sd({}) is None
    line = sitting_line({"sitting_sd": 0.031, "how": "8 early candidates", "coverage":
                         {"n": 8, "within_stated": 3, "within_widened": 8}})
    assert "3.1 %" in line and "of those 8, 3 fell inside the first interval as measured" in line
    assert "8 inside it as stated" in line and "re-measurement in another sitting" in line
    assert "alone" in sitting_line({"sitting_sd": None, "how": "not estimated: 2 candidate(s)"})


@pytest.mark.slow
def test_a_run_with_no_profile_measures_its_early_candidates_again(run_dir):
    """The shared small run (no profile): summary.json holds the spread, its pairs and their coverage."""
    summary = json.loads((run_dir / "summary.json").read_text())
    sitting = summary["sitting"]
    assert sitting["pairs"] >= MIN_PAIRS and sitting["sitting_sd"] is not None and sitting["sitting_sd"] >= 0
    numbers = [r["number"] for r in sitting["rows"]]
    assert numbers == sorted(numbers) and len(numbers) == sitting["pairs"]
    for r in sitting["rows"]:
        assert r["first"]["low"] <= r["first"]["ratio"] <= r["first"]["high"]
        assert r["again"]["ratio"] > 0
    assert sitting["coverage"]["n"] == sitting["pairs"]
    assert sitting["coverage"]["within_widened"] >= sitting["coverage"]["within_stated"]


@pytest.mark.slow
def test_list_report_and_pick_read_the_run_with_its_spread(run_dir):
    """load_run (behind list, report and pick) widens each measured interval by the spread the run measured."""
    from vitsearch.search.results.runview import load_run
    from vitsearch.search.results.tables import trials_frame

    view = load_run(run_dir)
    sd = run_sitting_sd(json.loads((run_dir / "summary.json").read_text()))
    raw = trials_frame(view.study).set_index("number")
    measured = view.frame[(view.frame["latency_source"] == "measured") & view.frame["latency_low_ms"].notna()]
    assert not measured.empty
    for _, r in measured.iterrows():
        before = raw.loc[r["number"]]
        if sd is not None:  # a spread of 0 still leaves the re-measurement's own noise
            assert r["latency_low_ms"] < before["latency_low_ms"] and r["latency_high_ms"] > before["latency_high_ms"]
        else:
            assert (r["latency_low_ms"], r["latency_high_ms"]) == (before["latency_low_ms"], before["latency_high_ms"])
