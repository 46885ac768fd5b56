"""Device fingerprints: which machine a latency number was measured on.

A fingerprint is a plain JSON-able dict that travels with every measured latency.
:func:`fingerprint_id` hashes only the identity fields (device kind, CPU or GPU model,
thread count, torch version, CPU capability / driver and CUDA version), never
temperatures, clocks or the hostname, so two identical machines share one id and the
same machine keeps its id while it warms up or is loaded (``load_avg_1m`` records
the machine's 1-minute load average when the measurement started, as context).

GPU fields come from nvidia-ml-py (``pynvml``). Where NVML is not installed or fails
(no NVIDIA driver), the fingerprint carries ``"nvml": "unavailable: <reason>"``
instead of raising. The CUDA path was not exercised on a GPU (no GPU on the
development machine).
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

#: Fields that identify a device; everything else in a fingerprint is context.
IDENTITY_FIELDS = (
    "kind", "cpu_model", "machine", "threads", "torch_version", "cpu_capability",
    "gpu_name", "gpu_memory_mb", "driver_version", "cuda_version",
    "runtime", "runtime_version",  # set only for non-eager runtimes (evaluators/runtimes/deploy.py)
)
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

    ``threads`` defaults to ``torch.get_num_threads()``. The dict includes its own
    ``fingerprint_id``.
    """
    dev = resolve_device(device)
    if threads is None:
        threads = torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
        raise ConfigError(f"threads: {threads!r} is not a positive integer; give the number of CPU threads, e.g. 2")
    fp = _cpu_fingerprint(threads) if dev.type == "cpu" else _cuda_fingerprint(dev.index, threads)
    fp["fingerprint_id"] = fingerprint_id(fp)
    return fp


def fingerprint_id(fp: dict[str, Any]) -> str:
    """Short stable hash over the identity fields of a fingerprint (12 hex digits)."""
    ident = {k: fp.get(k) for k in IDENTITY_FIELDS if fp.get(k) is not None}
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
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
    return (f"fitted on device fingerprint {fitted.get('fingerprint_id')} ({where}, {fitted.get('threads')} threads), "
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


def nvml_info(index: int = 0, uuid: str | None = None) -> dict[str, Any]:
    """GPU driver, clocks, power limit and temperature from NVML, or why not.

    Looks the GPU up by UUID when given (robust to ``CUDA_VISIBLE_DEVICES``), else by
    index. Never raises: without NVML the result is ``{"nvml": "unavailable: ..."}``.
    """
    try:
        import pynvml
    except ImportError:
        return {"nvml": "unavailable: nvidia-ml-py (pynvml) is not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return {"nvml": f"unavailable: {type(exc).__name__}: {exc}"}
    try:
        handle = _nvml_handle(pynvml, index, uuid)
        out: dict[str, Any] = {"nvml": "ok"}
        out["driver_version"] = _nvml_call(lambda: _text(pynvml.nvmlSystemGetDriverVersion()))
        out["nvml_gpu_name"] = _nvml_call(lambda: _text(pynvml.nvmlDeviceGetName(handle)))
        out["sm_clock_mhz"] = _nvml_call(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
        out["mem_clock_mhz"] = _nvml_call(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM))
        out["max_sm_clock_mhz"] = _nvml_call(lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM))
        out["power_limit_w"] = _nvml_call(lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0)
        out["temperature_c"] = gpu_temperature(index, uuid, _handle=handle)
        return out
    except Exception as exc:
        return {"nvml": f"unavailable: {type(exc).__name__}: {exc}"}
    finally:
        _nvml_call(pynvml.nvmlShutdown)


def gpu_temperature(index: int = 0, uuid: str | None = None, _handle: Any = None) -> int | str:
    """Current GPU core temperature in °C, or ``"unavailable: <reason>"``."""
    try:
        import pynvml
    except ImportError:
        return "unavailable: nvidia-ml-py (pynvml) is not installed"
    if _handle is not None:
        return _nvml_call(lambda: pynvml.nvmlDeviceGetTemperature(_handle, pynvml.NVML_TEMPERATURE_GPU))
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"
    try:
        handle = _nvml_handle(pynvml, index, uuid)
        return _nvml_call(lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"
    finally:
        _nvml_call(pynvml.nvmlShutdown)


def _nvml_handle(pynvml: Any, index: int, uuid: str | None) -> Any:
    if uuid:
        name = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(name)
        except Exception:
            pass  # MIG or an unusual UUID form: fall back to the index
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def _nvml_call(fn: Any) -> Any:
    """One NVML query; a field some GPUs do not support says so instead of failing."""
    try:
        return fn()
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
