"""NVIDIA GPU facts from NVML (nvidia-ml-py): driver, clocks, power limit, temperature.

Context for a GPU fingerprint (:mod:`.fingerprint`) and for a measurement's "after"
state; never identity (clocks and temperatures move while a device warms up). Never
raises: where NVML is not installed or fails (no NVIDIA driver) the answer says
``"unavailable: <reason>"``.
"""

from __future__ import annotations

from typing import Any


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
