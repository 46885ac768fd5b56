"""Device fingerprints: which machine a latency number was measured on.

A fingerprint is a plain JSON-able dict that travels with every measured latency.
:func:`fingerprint_id` hashes only the identity fields (:func:`identity`: device kind,
CPU or GPU model, torch version, CPU capability / driver and CUDA version, the runtime),
never temperatures, clocks or the hostname, so two identical machines share one id and
the same machine keeps its id while it warms up or is loaded (``load_avg_1m`` records
the machine's 1-minute load average when the measurement started, as context).

The CPU thread count is identity on a CPU (it changes the latency) and context on a GPU:
every path that asks for a GPU's fingerprint gets the same id, whatever thread count it
passes. GPU fields come from nvidia-ml-py (:mod:`.nvml`); without NVML the fingerprint
carries ``"nvml": "unavailable: <reason>"`` instead of raising.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from vitsearch.spaces.errors import ConfigError, DeviceError

from vitsearch.evaluators.latency.nvml import nvml_info

#: Fields that identify a device; everything else in a fingerprint is context.
IDENTITY_FIELDS = (
    "kind", "cpu_model", "machine", "threads", "torch_version", "cpu_capability",
    "gpu_name", "gpu_memory_mb", "driver_version", "cuda_version",
    "runtime", "runtime_version",  # set only for non-eager runtimes (evaluators/runtimes/deploy.py)
)
#: Identity fields that are context on a GPU: the host's CPU thread count does not set a GPU's speed.
GPU_CONTEXT_FIELDS = ("threads",)
ACCEPTED_DEVICES = '"cpu", "cuda", "cuda:N" or "auto"'


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` into a present device.

    Raises :class:`DeviceError` (one line) for a device that is absent or unknown.
    """
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"device: {device!r} is not a device name; use {ACCEPTED_DEVICES}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise DeviceError(f"device: {device!r} is not supported; use {ACCEPTED_DEVICES}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device: {device!r} is not present (no CUDA GPU visible to torch); use \"cpu\" or \"auto\"")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= count:
        raise DeviceError(f"device: {device!r} is not present; this machine has cuda:0..cuda:{count - 1}")
    return torch.device("cuda", index)


def device_fingerprint(device: str | torch.device = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Fingerprint of ``device`` as measured with ``threads`` CPU threads.

    ``threads`` defaults to ``torch.get_num_threads()``; on a GPU it is recorded as
    context and does not change the id. The dict includes its own ``fingerprint_id``.
    """
    dev = resolve_device(device)
    if threads is None:
        threads = torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
        raise ConfigError(f"threads: {threads!r} is not a positive integer; give the number of CPU threads, e.g. 2")
    fp = _cpu_fingerprint(threads) if dev.type == "cpu" else _cuda_fingerprint(dev.index, threads)
    fp["fingerprint_id"] = fingerprint_id(fp)
    return fp


def identity(fp: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``fp`` that enter its id: :data:`IDENTITY_FIELDS` that are set, less the thread count on a GPU."""
    fields = IDENTITY_FIELDS
    if fp.get("kind") == "cuda":
        fields = tuple(f for f in IDENTITY_FIELDS if f not in GPU_CONTEXT_FIELDS)
    return {k: fp.get(k) for k in fields if fp.get(k) is not None}


def fingerprint_id(fp: dict[str, Any]) -> str:
    """Short stable hash over the identity fields of a fingerprint (12 hex digits)."""
    blob = json.dumps(identity(fp), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def runtime_of(fingerprint: dict[str, Any]) -> str:
    """"onnxruntime 1.31.1", "compile 2.9.0" or "eager (torch 2.9.0)": the runtime a fingerprint measured in."""
    if fingerprint.get("runtime"):
        return f"{fingerprint['runtime']} {fingerprint.get('runtime_version')}"
    return f"eager (torch {fingerprint.get('torch_version')})"


def runtime_mismatch(fitted: dict[str, Any], here: dict[str, Any]) -> str | None:
    """Why timings under ``fitted`` do not hold under ``here`` when their runtimes differ (with the fix), else None."""
    mine, theirs = runtime_of(fitted), runtime_of(here)
    if mine == theirs:
        return None
    return (f"runtime {mine} (fingerprint {fitted.get('fingerprint_id')}), but this study measures in runtime "
            f"{theirs}; re-profile with `vitsearch profile STUDY` for the study with latency.runtime "
            f"{here.get('runtime', 'eager')!r}")


def mismatch_text(fitted: dict[str, Any], here: dict[str, Any]) -> str:
    """Why a predictor fitted under ``fitted`` does not hold under ``here`` (other runtime or device), and the fix."""
    why = runtime_mismatch(fitted, here)
    if why:
        return f"fitted for {why} (or point latency.predictor at a profile of that runtime)"
    where = fitted.get("cpu_model") or fitted.get("gpu_name") or fitted.get("device")
    threads = f", {fitted.get('threads')} threads" if fitted.get("kind") != "cuda" else ""
    return (f"fitted on device fingerprint {fitted.get('fingerprint_id')} ({where}{threads}), "
            f"but this device is {here.get('fingerprint_id')}; run `vitsearch profile` on this device (or with the "
            "study's thread count) to fit one for it")


def _cpu_fingerprint(threads: int) -> dict[str, Any]:
    info = read_cpuinfo()
    return {
        "kind": "cpu",
        "device": "cpu",
        "cpu_model": info.get("model") or platform.processor() or "unknown",
        "machine": platform.machine(),
        "physical_cores": info.get("physical_cores"),
        "logical_cores": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # Context, not identity: other load on the machine is the main source of noise.
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def read_cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model name and physical core count from /proc/cpuinfo (Linux); {} elsewhere."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    model, cores, phys = None, set(), None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    return {"model": model, "physical_cores": len(cores) or None}


def _cuda_fingerprint(index: int, threads: int) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(index)
    fp = {
        "kind": "cuda",
        "device": f"cuda:{index}",
        "gpu_name": props.name,
        "gpu_memory_mb": props.total_memory // 2**20,
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda_version": torch.version.cuda,
        "torch_version": torch.__version__,
        "host_cpu_model": read_cpuinfo().get("model") or platform.processor() or "unknown",
        "threads": threads,
    }
    uuid = getattr(props, "uuid", None)
    fp["gpu_uuid"] = None if uuid is None else str(uuid)
    fp.update(nvml_info(index, uuid=None if uuid is None else str(uuid)))
    return fp
