"""Device fingerprints: what enters the id (identity) and what is context; device names; NVML absent."""

from __future__ import annotations

import sys

import pytest
import torch

from vitsearch.evaluators.latency.fingerprint import device_fingerprint, fingerprint_id, identity, resolve_device
from vitsearch.evaluators.latency.nvml import nvml_info


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


def test_a_gpu_has_one_identity_whatever_thread_count_a_path_passes():
    """On a GPU the CPU thread count is context; on a CPU it is identity (it changes the latency)."""
    gpu = {"kind": "cuda", "device": "cuda:0", "gpu_name": "NVIDIA H200", "gpu_memory_mb": 143771,
           "cuda_version": "13.0", "torch_version": "2.11.0", "driver_version": "580.1", "sm_clock_mhz": 345}
    ids = {fingerprint_id({**gpu, "threads": t}) for t in (1, 2, 16)}
    assert len(ids) == 1 and ids == {fingerprint_id(gpu)}  # profile (1) and study (16) paths agree
    assert "threads" not in identity({**gpu, "threads": 16}) and identity(gpu)["gpu_name"] == "NVIDIA H200"
    assert "sm_clock_mhz" not in identity(gpu)  # clocks are context on a GPU too
    assert fingerprint_id({**gpu, "gpu_name": "NVIDIA A100"}) != fingerprint_id(gpu)
    cpu = {"kind": "cpu", "cpu_model": "test CPU", "machine": "x86_64", "torch_version": "2.11.0"}
    assert identity({**cpu, "threads": 2})["threads"] == 2
    assert fingerprint_id({**cpu, "threads": 1}) != fingerprint_id({**cpu, "threads": 2})


def test_cpu_ids_are_what_they_were():
    """The identity of a CPU fingerprint is every identity field it sets: saved CPU profiles keep matching."""
    import hashlib
    import json

    fp = device_fingerprint("cpu", threads=1)
    fields = ("kind", "cpu_model", "machine", "threads", "torch_version", "cpu_capability")
    blob = json.dumps({k: fp[k] for k in fields if fp.get(k) is not None}, sort_keys=True, separators=(",", ":"))
    assert fp["fingerprint_id"] == hashlib.sha256(blob.encode()).hexdigest()[:12]
