"""Latency measurement, device fingerprint and the per-device lock.

Timings on shared CI machines are noisy: nothing here asserts a speed, only the
structure and invariants of the measurements. Measurements use one thread and small
caps so the file runs in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from vitsearch.evaluators.latency.devicelock import device_lock, device_lock_path
from vitsearch.evaluators.latency.fingerprint import device_fingerprint, fingerprint_id, nvml_info, resolve_device
from vitsearch.evaluators.latency.measure import LatencyResult, is_stable, measure_latency, measure_repeatability
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


def test_auto_device_resolves():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_fingerprint_id_covers_identity_not_conditions():
    fp1 = device_fingerprint("cpu", threads=1)
    assert "hostname" not in fp1 and "host" not in fp1
    assert device_fingerprint("cpu", threads=1)["fingerprint_id"] == fp1["fingerprint_id"]
    assert device_fingerprint("cpu", threads=2)["fingerprint_id"] != fp1["fingerprint_id"]
    warmer = {**fp1, "temperature_c": 80, "sm_clock_mhz": 1200, "temperature_after_c": 85, "load_avg_1m": 9.0}
    assert fingerprint_id(warmer) == fp1["fingerprint_id"]
    assert fingerprint_id({**fp1, "cpu_model": "other"}) != fp1["fingerprint_id"]


def test_nvml_not_installed_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert nvml_info(0) == {"nvml": "unavailable: nvidia-ml-py (pynvml) is not installed"}


def test_nvml_without_driver_is_reported_not_raised():
    info = nvml_info(0)
    if info.get("nvml") == "ok":
        pytest.skip("NVML works on this machine")
    assert info["nvml"].startswith("unavailable: ")


def test_repeatability_reports_the_noise_floor(tiny):
    rep = measure_repeatability(tiny, SHAPE, "cpu", repeats=3, **{**FAST, "max_runs": 15})
    medians = rep["medians_ms"]
    assert len(medians) == 3 and len(rep["n_runs"]) == 3
    assert rep["spread"] == pytest.approx(max(medians) / min(medians) - 1)
    assert 0 <= rep["mape"] <= rep["max_ape"]
    assert rep["fingerprint_id"] == rep["fingerprint"]["fingerprint_id"]


def test_lock_is_reentrant_and_excludes_other_threads():
    errors = []

    def other():
        try:
            with device_lock("cpu", timeout=0.2):
                pass
        except DeviceError as exc:
            errors.append(str(exc))

    with device_lock("cpu") as path, device_lock("cpu"):  # nested: no deadlock
        assert path == device_lock_path("cpu")
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "busy" in errors[0]


_CHILD = textwrap.dedent("""
    import json, sys, time
    import torch
    from torch import nn
    import vitsearch.evaluators.latency.measure as lat

    intervals = []
    inner = lat._measure_locked
    def recording(*args, **kw):  # runs inside the device lock
        start = time.time()
        try:
            return inner(*args, **kw)
        finally:
            intervals.append((start, time.time()))
    lat._measure_locked = recording
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    print("ready", flush=True)
    sys.stdin.readline()
    lat.measure_latency(model, (1, 1, 28, 28), threads=1, warmup=2, min_runs=10**6,
                        max_runs=10**6, max_seconds=0.7)
    print(json.dumps(intervals[0]), flush=True)
""")


def test_lock_serialises_two_processes(tmp_path):
    """Two processes measure on "cpu" at once; their locked intervals must not overlap."""
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # release both together
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs)
    (a0, a1), (b0, b1) = (json.loads(out.strip().splitlines()[-1]) for out in outs)
    assert a1 - a0 >= 0.7 and b1 - b0 >= 0.7
    assert a1 <= b0 or b1 <= a0, f"overlap: {a0:.3f}-{a1:.3f} vs {b0:.3f}-{b1:.3f}"
