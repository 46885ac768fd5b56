"""The sitting-to-sitting spread: estimated by the profile, read back by a study, put into intervals.

Pure arithmetic on rows with known values, and the profile state a study reads; the
measurement side (intervals widened by it) is in timing/test_interleaved.py.
"""

from __future__ import annotations

import json

import pytest

from vitsearch.evaluators.latency.timing.results import PROTOCOL


def test_sitting_spread_is_what_a_second_sitting_moves_beyond_both_sittings_own_noise():
    import math

    from vitsearch.evaluators.latency.profile.sitting import sitting_spread

    def pair(key, r1, r2, hw):
        return [{"kind": "model", "phase": p, "key": key, "ratio": r, "ratio_low": r * math.exp(-hw),
                 "ratio_high": r * math.exp(hw), "protocol": PROTOCOL} for p, r in (("profile", r1), ("repeat", r2))]

    tight = [row for i, d in enumerate((0.04, -0.04, 0.04, -0.04)) for row in pair(f"c{i}", 1.0, math.exp(d), 1e-6)]
    sd, n = sitting_spread(tight)
    assert n == 4 and sd == pytest.approx(math.sqrt(0.04 ** 2 / 2), rel=1e-3)
    noisy = [row for i in range(4) for row in pair(f"c{i}", 1.0, 1.01, 0.1)]  # moves less than its own noise
    assert sitting_spread(noisy) == (0.0, 4)
    assert sitting_spread(tight[:4]) == (None, 2)  # fewer than 3 pairs: not measured


def test_a_study_reads_the_spread_of_its_matching_profile_only(tmp_path):
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint
    from vitsearch.evaluators.latency.predict.base import FORMAT_VERSION, PREDICTOR_FILE
    from vitsearch.evaluators.latency.predict.study import profile_basis
    from vitsearch.search.study import parse_study

    state = {"format_version": FORMAT_VERSION, "reference_ms": 5.5, "sitting_sd": 0.021, "input_shape": [1, 1, 28, 28],
             "fingerprint": device_fingerprint("cpu", 1)}
    (tmp_path / PREDICTOR_FILE).write_text(json.dumps(state))
    spec = parse_study({"latency": {"threads": 1, "predictor": str(tmp_path)}})
    assert profile_basis(spec, "cpu", 1) == {"reference_ms": 5.5, "sitting_sd": 0.021}
    (tmp_path / PREDICTOR_FILE).write_text(json.dumps({**state, "sitting_sd": 0.0}))  # measured, and nothing left
    assert profile_basis(spec, "cpu", 1) == {"reference_ms": 5.5, "sitting_sd": 0.0}
    (tmp_path / PREDICTOR_FILE).write_text(json.dumps({**state, "sitting_sd": None}))  # a profile without repeats
    assert profile_basis(spec, "cpu", 1) == {"reference_ms": 5.5, "sitting_sd": None}
    # a profile's ratios are against the model in fp32 (older profiles say nothing): not a bf16 study's basis
    assert profile_basis(spec, "cpu", 1, base_precision="bf16") == {"reference_ms": None, "sitting_sd": None}
    (tmp_path / PREDICTOR_FILE).write_text(json.dumps({**state, "base_precision": "bf16"}))
    assert profile_basis(spec, "cpu", 1, base_precision="bf16")["reference_ms"] == 5.5
    assert profile_basis(spec, "cpu", 1)["reference_ms"] is None
    other = {**state, "fingerprint": {**state["fingerprint"], "fingerprint_id": "another-machine"}}
    (tmp_path / PREDICTOR_FILE).write_text(json.dumps(other))
    assert profile_basis(spec, "cpu", 1) == {"reference_ms": None, "sitting_sd": None}
