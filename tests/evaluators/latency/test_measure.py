"""Latency measurement through ``measure_latency`` (the burst protocol): statistics, caps, restored state, refusals.

Timings on shared CI machines are noisy: nothing here asserts a speed, only the
structure and invariants of the measurements. Measurements use one thread and small
caps so the file runs in seconds.
"""

from __future__ import annotations

import json

import pytest
import torch

from vitsearch.evaluators.latency.fingerprint import fingerprint_id
from vitsearch.evaluators.latency.measure import measure_latency, measure_repeatability
from vitsearch.evaluators.latency.timing.burst import is_stable
from vitsearch.evaluators.latency.timing.results import LatencyResult
from vitsearch.evaluators.models import create_vitsearch_tiny
from vitsearch.spaces.errors import ConfigError, DeviceError

SHAPE = (1, 1, 28, 28)
FAST = dict(threads=1, warmup=2, min_runs=10, max_runs=40, max_seconds=2.0)


pytestmark = pytest.mark.usefixtures("private_lock_dir")


def test_result_carries_statistics_fingerprint_and_counts(tiny):
    result = measure_latency(tiny, SHAPE, "cpu", **FAST)
    assert result.source == "measured"
    assert 10 <= result.n_runs <= 40 and result.n_warmup == 2
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.mean_ms > 0 and result.batch == 1 and result.input_shape == SHAPE
    assert result.measured_at.endswith("+00:00")
    assert result.stop_reason in ("stable", "max_runs", "max_seconds")
    fp = result.fingerprint
    assert fp["kind"] == "cpu" and fp["threads"] == 1 == result.threads
    assert fp["cpu_model"] and fp["torch_version"] == torch.__version__
    assert fp["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert result.fingerprint_id == fingerprint_id(fp) and len(result.fingerprint_id) == 12


def test_result_json_round_trip(tiny):
    result = measure_latency(tiny, SHAPE, **FAST)
    again = LatencyResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    assert "measured over" in result.summary() and result.fingerprint_id in result.summary()


def test_threads_and_train_mode_restored():
    model = create_vitsearch_tiny().train()
    model.blocks[0].eval()  # mixed modes must come back exactly
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        result = measure_latency(model, SHAPE, **FAST)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert result.threads == 1
    assert model.training and not model.blocks[0].training and model.blocks[1].training


def test_caps_end_the_measurement(tiny):
    capped = measure_latency(tiny, SHAPE, threads=1, warmup=0, min_runs=7, max_runs=7, check_every=10)
    assert capped.n_runs == 7 and capped.stop_reason == "max_runs"
    timed = measure_latency(tiny, SHAPE, threads=1, warmup=1, min_runs=500, max_runs=1000, max_seconds=1e-4)
    assert timed.stop_reason == "max_seconds" and timed.n_runs == 5  # the minimum sample count


def test_stability_rule():
    assert is_stable([1.0] * 20, 0.01)
    drifting = [1.0] * 10 + [2.0] * 10  # second half twice as slow: median moved
    assert not is_stable(drifting, 0.01)


@pytest.mark.parametrize(
    "shape, match",
    [((0, 1, 28, 28), "batch size: 0"), ((1, 1, 28), "input_shape"), ((1, 1, 28, 28.0), "input_shape"),
     ((1, 3, 28, 28), "first forward on inputs of shape")],
)
def test_bad_input_shape_is_one_line(tiny, shape, match):
    with pytest.raises(ConfigError, match=match) as info:
        measure_latency(tiny, shape, **FAST)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kw", [dict(threads=0), dict(max_runs=1, min_runs=5), dict(rel_tol=0.0), dict(warmup=-1)])
def test_bad_measurement_settings(tiny, kw):
    with pytest.raises(ConfigError):
        measure_latency(tiny, SHAPE, **{**FAST, **kw})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "auto-gpu", "tpu"])
def test_absent_device_is_a_device_error(tiny, device):
    with pytest.raises(DeviceError, match="device") as info:
        measure_latency(tiny, SHAPE, device, **FAST)
    assert "\n" not in str(info.value)


def test_repeatability_reports_the_noise_floor(tiny):
    rep = measure_repeatability(tiny, SHAPE, "cpu", repeats=3, **{**FAST, "max_runs": 15})
    medians = rep["medians_ms"]
    assert len(medians) == 3 and len(rep["n_runs"]) == 3
    assert rep["spread"] == pytest.approx(max(medians) / min(medians) - 1)
    assert 0 <= rep["mape"] <= rep["max_ape"]
    assert rep["fingerprint_id"] == rep["fingerprint"]["fingerprint_id"]
