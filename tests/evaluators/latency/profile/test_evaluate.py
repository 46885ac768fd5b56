"""predictor-eval's scores: shares within +-10 % / +-5 %, MAPE, rank correlations, where the search decides."""

from __future__ import annotations

import pytest

from vitsearch.evaluators.latency.profile.evaluate import scores


def test_scores_known_values():
    s = scores([10, 20, 30, 40], [10.5, 19, 36, 40])
    assert s["within_10pct"] == 0.75 and s["within_5pct"] == 0.75
    assert s["mape"] == pytest.approx((0.05 + 0.05 + 0.2 + 0) / 4)
    assert s["spearman"] == pytest.approx(1.0) and s["kendall"] == pytest.approx(1.0)


def test_decision_scores_select_by_prediction_and_judge_the_no_gain_side():
    """Where the search acts: configs *predicted* at <= 1x the uncompressed model are scored apart; for all,
    whether prediction and measurement fall on the same side of 1 (the no-gain settlement)."""
    from vitsearch.evaluators.latency.profile.evaluate import _decision_scores

    keys = ["a", "b", "c", "d", "e"]
    measured = [0.50, 0.80, 0.95, 1.10, 9.0]
    predicted = [0.52, 0.70, 0.90, 0.98, 8.0]  # d: predicted a gain, measured none; e: far off but settled alike
    again = {k: {"ratio": m * 1.01} for k, m in zip(keys, measured)}
    out = _decision_scores(keys, measured, predicted, again)
    assert out["n"] == 4 and out["no_gain_agreement"] == pytest.approx(0.8)
    assert out["predicted"]["n"] == 4 and out["predicted"]["within_10pct"] == pytest.approx(0.5)  # b, d: 12.5, 10.9 % off
    assert out["repeatability"]["within_5pct"] == 1.0  # e's 11 % miss never counts where it is settled
    assert "predicted" not in _decision_scores(keys[:2], measured[:2], predicted[:2], again)  # too few to score
