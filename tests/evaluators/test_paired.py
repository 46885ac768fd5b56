"""Paired accuracy differences: exact, conservative intervals from the discordant images."""

from __future__ import annotations

import numpy as np
import pytest

from vitsearch.evaluators.paired import pack, paired_drop, unpack
from vitsearch.spaces.errors import DataError


def _pair(n: int, ref_only: int, cand_only: int, both_wrong: int = 10):
    ref = np.ones(n, dtype=bool)
    cand = np.ones(n, dtype=bool)
    cand[:ref_only] = False
    ref[ref_only:ref_only + cand_only] = False
    ref[-both_wrong:] = cand[-both_wrong:] = False
    return ref, cand


def test_the_drop_counts_only_discordant_images_and_its_interval_is_far_tighter_than_two_wilsons():
    from vitsearch.evaluators.accuracy import wilson_interval

    ref, cand = _pair(500, ref_only=4, cand_only=1)
    d = paired_drop(ref, cand)
    assert (d.drop, d.ref_only, d.cand_only, d.n) == (3 / 500, 4, 1, 500)
    assert d.low < d.drop < d.high
    lo_r, hi_r = wilson_interval(ref.mean(), 500)
    lo_c, hi_c = wilson_interval(cand.mean(), 500)
    unpaired = (hi_r - lo_c) - (lo_r - hi_c)  # the range of differences two separate intervals allow
    assert d.high - d.low < unpaired / 2
    assert "pt [" in d.text() and "paired" in d.text()


def test_no_discordant_image_still_has_an_interval():
    d = paired_drop(*_pair(500, 0, 0))
    assert d.drop == 0 and d.low < 0 < d.high and d.high < 0.01  # under 1 point on 500 images


def test_the_interval_covers_the_true_drop_at_least_as_often_as_stated():
    """Simulated paired test sets with a known drop: the 95 % interval covers it in >= 95 % of them."""
    rng = np.random.default_rng(0)
    n, p_ref_only, p_cand_only, covered, trials = 500, 0.012, 0.004, 0, 2000
    for _ in range(trials):
        u = rng.random(n)
        ref = np.ones(n, dtype=bool)
        cand = np.ones(n, dtype=bool)
        cand[u < p_ref_only] = False
        ref[(u >= p_ref_only) & (u < p_ref_only + p_cand_only)] = False
        d = paired_drop(ref, cand)
        covered += d.low <= p_ref_only - p_cand_only <= d.high
    assert covered / trials >= 0.95


def test_results_on_different_images_are_refused():
    with pytest.raises(DataError, match="different images"):
        paired_drop(np.ones(500, dtype=bool), np.ones(499, dtype=bool))


def test_packed_bits_round_trip():
    bits = np.random.default_rng(1).random(1003) < 0.9
    assert np.array_equal(unpack(pack(bits), 1003), bits)
    with pytest.raises(DataError):
        unpack(pack(bits), 2000)


def test_evaluate_accuracy_keeps_which_images_were_right(builtin_model, mnist):
    from vitsearch.evaluators import evaluate_accuracy

    acc = evaluate_accuracy(builtin_model, mnist.val, "cpu", 128)
    mask = acc.correct_mask()
    assert mask.shape == (acc.n,) and mask.mean() == pytest.approx(acc.top1) and "correct" not in acc.to_dict()
