"""The statistics behind every interval: Wilson, z, the ratio's bootstrap, the sitting spread's widening."""

from __future__ import annotations

import math

import pytest

from vitsearch.evaluators.latency.stats import Z90, ratio_interval, wilson, z_value


def test_ratio_interval_is_seeded_and_exact_on_constant_ratios():
    assert ratio_interval([0.0] * 10) == (1.0, 1.0, 1.0)
    logs = [0.1, -0.05, 0.2, 0.0, 0.07, 0.3, -0.1, 0.12]
    assert ratio_interval(logs, seed=3) == ratio_interval(logs, seed=3)
    r, lo, hi = ratio_interval(logs)
    assert lo < r < hi


def test_z_values_and_wilson_known_values():
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6) and Z90 == pytest.approx(1.6448536, abs=1e-7)
    lo, hi = wilson(8, 10)  # Wilson 95 % of 8/10: [0.490, 0.943]
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 20)[0] == pytest.approx(0.0, abs=1e-12) and wilson(0, 20)[1] > 0.1 and wilson(20, 20)[1] == pytest.approx(1.0)
    assert wilson(8, 10, confidence=0.99)[0] < lo  # a higher confidence widens the interval
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_accuracy_interval_is_the_one_wilson():
    from vitsearch.evaluators.accuracy import wilson_interval

    assert wilson_interval(0.98, 500) == pytest.approx(wilson(0.98 * 500, 500))
