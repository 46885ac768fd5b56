"""Latency measurement: real timed forward passes, with the device fingerprint.

CPU: a fixed torch thread count for the measurement (restored afterwards and recorded),
warm-up passes, then passes timed with ``time.perf_counter_ns`` until the median is
stable (the median of the last half of the samples is within ``rel_tol`` of the median
of all, checked every ``check_every`` passes once ``min_runs`` are in) or a cap
(``max_runs`` passes or ``max_seconds`` of timed passes) is reached.

CUDA: the same loop, each pass bracketed by CUDA events and synchronised, so a sample
is one forward's device time; the fingerprint adds the GPU temperature after the
measurement next to the one before (throttling shows). The CUDA path was not exercised
on a GPU (no GPU on the development machine).

The whole measurement holds the device's inter-process lock (:mod:`.devicelock`), so
no two measurements on one device overlap. Inputs are fp32 and created once; models
with fp16/bf16 weights cast internally.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import nn

from vitsearch.spaces.errors import ConfigError

from vitsearch.evaluators.latency.devicelock import device_lock
from vitsearch.evaluators.latency.fingerprint import device_fingerprint, gpu_temperature, resolve_device
from vitsearch.evaluators.latency.interleaved import sitting_text
from vitsearch.evaluators.latency.hygiene import thread_report
from vitsearch.evaluators.latency.prepare import (  # noqa: F401  (default_threads, check_input_shape: public here too)
    check_input_shape, check_threads, default_threads, on_device, warm_up)

#: Fewer timed passes than this never end a measurement, whatever the time cap.
MIN_SAMPLES = 5


@dataclass(frozen=True)
class LatencyResult:
    """One latency measurement: statistics over ``n_runs`` timed passes, in ms."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    n_runs: int
    n_warmup: int
    input_shape: tuple[int, ...]
    batch: int
    device: str
    threads: int | None
    stable: bool
    stop_reason: str
    timed_seconds: float
    fingerprint: dict[str, Any] = field(default_factory=dict)
    source: str = "measured"
    measured_at: str = ""  # UTC ISO 8601 time of the first timed pass
    # Interleaved protocol (:mod:`.interleaved`; None for a plain burst): candidate /
    # reference ratio and its interval; median_ms = ratio x the reference's ms named by
    # ``basis``; p10/p90 are the candidate's pass spread scaled to that median.
    protocol: str = "burst"
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    low_ms: float | None = None
    high_ms: float | None = None
    confidence: float | None = None
    basis: str | None = None
    reference_ms_now: float | None = None
    reference_ms_profile: float | None = None
    thread_info: dict[str, Any] = field(default_factory=dict)
    sitting_sd: float | None = None  # the sitting-to-sitting spread the interval includes (None: not measured)

    @property
    def fingerprint_id(self) -> str | None:
        """The fingerprint's short identity hash."""
        return self.fingerprint.get("fingerprint_id")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["input_shape"] = tuple(data["input_shape"])
        return cls(**data)

    def summary(self) -> str:
        """One human line saying what was measured, where and how."""
        where = self.fingerprint.get("cpu_model") or self.fingerprint.get("gpu_name") or self.device
        threads = f", {self.threads} threads" if self.threads is not None else ""
        if self.ratio is not None:
            ref = self.reference_ms_profile if self.basis == "reference in profile" else self.reference_ms_now
            return (f"{self.median_ms:.3f} ms [{self.low_ms:.3f}, {self.high_ms:.3f}] "
                    f"({round(100 * self.confidence)} % interval, {sitting_text(self.sitting_sd)}) = ratio {self.ratio:.3f} "
                    f"[{self.ratio_low:.3f}, "
                    f"{self.ratio_high:.3f}] x {ref:.3f} ms ({self.basis}), measured interleaved with the "
                    f"uncompressed model over {self.n_runs} timed passes each, batch {self.batch}, on {self.device} "
                    f"[{where}{threads}], stop: {self.stop_reason}, fingerprint {self.fingerprint_id}")
        return (
            f"{self.median_ms:.3f} ms median (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}), "
            f"{self.source} over {self.n_runs} timed passes after {self.n_warmup} warm-up, "
            f"batch {self.batch}, on {self.device} [{where}{threads}], stop: {self.stop_reason}, "
            f"fingerprint {self.fingerprint_id}"
        )


@dataclass(frozen=True)
class _Plan:
    warmup: int
    min_runs: int
    max_runs: int
    max_seconds: float
    rel_tol: float
    check_every: int


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    *,
    threads: int | None = None,
    warmup: int = 10,
    min_runs: int = 20,
    max_runs: int = 1000,
    max_seconds: float = 10.0,
    rel_tol: float = 0.01,
    check_every: int = 10,
    lock: bool = True,
    lock_timeout: float | None = None,
    reference: Any = None,
    interleave: Any = None,
    reference_ms_profile: float | None = None,
    sitting_sd: float | None = None,
) -> LatencyResult:
    """Time forward passes of ``model`` on fp32 inputs of ``input_shape`` (B, C, H, W).

    With a ``reference`` (the uncompressed model, or a callable), the protocol is
    :func:`.interleaved.measure_interleaved` (``interleave``: its InterleavePlan, or a
    dict of its fields), and the result carries the ratio and its interval; the plain
    burst below is what runs without one.

    ``device``: "cpu", "cuda", "cuda:N" or "auto". ``threads``: CPU threads for the
    measurement (default: the physical cores this process may use); ignored on CUDA
    (recorded as None). A model not on ``device`` is measured as a copy moved there;
    the model itself is left as it was (device and train/eval mode). At least one
    warm-up pass always runs: it turns a model/input mismatch into a ConfigError.
    Timed passes stop when stable (see the module docstring), at ``max_runs``, or once
    ``max_seconds`` of timed passes are spent (never before 5 passes); the result says
    which. ``lock`` holds the device's inter-process lock for the whole measurement.

    CUDA path not exercised on a GPU (no GPU on the development machine).
    """
    shape = check_input_shape(input_shape)
    if reference is not None:
        return _interleaved(model, reference, shape, device, threads, warmup, interleave, reference_ms_profile,
                            lock, lock_timeout, sitting_sd)
    plan = _check_plan(warmup, min_runs, max_runs, max_seconds, rel_tol, check_every)
    dev = resolve_device(device)
    if dev.type == "cpu":
        threads = default_threads() if threads is None else check_threads(threads)
    else:
        threads = None
    with device_lock(dev, timeout=lock_timeout) if lock else nullcontext():
        return _measure_locked(on_device(model, dev), shape, dev, threads, plan)


def _interleaved(model, reference, shape, device, threads, warmup, interleave, reference_ms_profile, lock,
                 lock_timeout, sitting_sd=None) -> LatencyResult:
    from vitsearch.evaluators.latency.interleaved import InterleavePlan, measure_interleaved

    if interleave is None:
        plan = InterleavePlan(warmup=max(1, min(warmup, 10)))
    elif isinstance(interleave, InterleavePlan):
        plan = interleave
    else:
        plan = InterleavePlan(**{"warmup": max(1, min(warmup, 10)), **dict(interleave)})
    r = measure_interleaved(model, reference, shape, device, threads=threads, plan=plan,
                            reference_ms_profile=reference_ms_profile, lock=lock, lock_timeout=lock_timeout,
                            sitting_sd=sitting_sd)
    scale = r.ms / r.candidate_ms_now
    return LatencyResult(
        median_ms=r.ms, p10_ms=r.candidate_p10_ms * scale, p90_ms=r.candidate_p90_ms * scale, mean_ms=r.ms,
        n_runs=r.passes, n_warmup=max(plan.warmup, 1), input_shape=shape, batch=shape[0], device=r.device,
        threads=r.threads, stable=r.stop_reason == "target", stop_reason=r.stop_reason, timed_seconds=r.seconds,
        fingerprint=r.fingerprint, measured_at=r.measured_at, protocol=r.protocol, ratio=r.ratio,
        ratio_low=r.ci_low, ratio_high=r.ci_high, low_ms=r.ms_ci[0], high_ms=r.ms_ci[1], confidence=r.confidence,
        basis=r.basis, reference_ms_now=r.reference_ms_now, reference_ms_profile=r.reference_ms_profile,
        thread_info=r.thread_info, sitting_sd=r.sitting_sd)


def measure_repeatability(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    repeats: int = 5,
    **kw: Any,
) -> dict[str, Any]:
    """Measure the same model ``repeats`` times: the spread of the medians (noise floor).

    Returns the medians, ``spread`` = max/min - 1, the ``mape`` (mean absolute
    percentage deviation, as a fraction) of each median from the median of medians and
    its maximum, with the fingerprint. ``kw`` goes to :func:`measure_latency`; the
    device lock is held across all repeats.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise ConfigError(f"repeats: {repeats!r} is not an integer >= 2; give how many measurements to compare, e.g. 5")
    dev = resolve_device(device)
    use_lock = kw.pop("lock", True)
    model = on_device(model, dev)
    with device_lock(dev, timeout=kw.get("lock_timeout")) if use_lock else nullcontext():
        results = [measure_latency(model, input_shape, dev, lock=False, **kw) for _ in range(repeats)]
    medians = [r.median_ms for r in results]
    center = statistics.median(medians)
    deviations = [abs(m - center) / center for m in medians]
    return {
        "medians_ms": medians,
        "median_of_medians_ms": center,
        "spread": max(medians) / min(medians) - 1.0,
        "mape": sum(deviations) / len(deviations),
        "max_ape": max(deviations),
        "n_runs": [r.n_runs for r in results],
        "repeats": repeats,
        "input_shape": list(results[0].input_shape),
        "device": results[0].device,
        "threads": results[0].threads,
        "fingerprint": results[0].fingerprint,
        "fingerprint_id": results[0].fingerprint_id,
    }


def _check_plan(warmup, min_runs, max_runs, max_seconds, rel_tol, check_every) -> _Plan:
    ints = {"warmup": (warmup, 0), "min_runs": (min_runs, 1), "max_runs": (max_runs, 1), "check_every": (check_every, 1)}
    for name, (value, low) in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name}: {value!r} is not an integer >= {low}")
    if max_runs < min_runs:
        raise ConfigError(f"max_runs: {max_runs} is below min_runs {min_runs}; give max_runs >= min_runs")
    for name, value in {"max_seconds": max_seconds, "rel_tol": rel_tol}.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or value == float("inf"):
            raise ConfigError(f"{name}: {value!r} is not a positive finite number")
    return _Plan(warmup, min_runs, max_runs, float(max_seconds), float(rel_tol), check_every)


def _measure_locked(model: nn.Module, shape: tuple[int, ...], dev: torch.device,
                    threads: int | None, plan: _Plan) -> LatencyResult:
    modes = {m: m.training for m in model.modules()}
    saved_threads = torch.get_num_threads()
    try:
        model.eval()
        if threads is not None:
            torch.set_num_threads(threads)
        fingerprint = device_fingerprint(dev, threads if threads is not None else saved_threads)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
        with torch.inference_mode():
            run_once = _cpu_pass(model, x) if dev.type == "cpu" else _cuda_pass(model, x, dev)
            warm_up(run_once, plan.warmup, shape)
            hygiene = thread_report()
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            start = time.perf_counter()
            samples, reason = _sample(run_once, plan)
            timed = time.perf_counter() - start
        if dev.type == "cuda":
            fingerprint["temperature_after_c"] = gpu_temperature(dev.index, fingerprint.get("gpu_uuid"))
    finally:
        torch.set_num_threads(saved_threads)
        for m, mode in modes.items():
            m.training = mode
    return replace(_result(samples, reason, timed, plan, shape, dev, threads, fingerprint, started),
                   thread_info=hygiene)


def _cpu_pass(model: nn.Module, x: torch.Tensor) -> Callable[[], float]:
    def once() -> float:
        t0 = time.perf_counter_ns()
        model(x)
        return (time.perf_counter_ns() - t0) / 1e6
    return once


def _cuda_pass(model: nn.Module, x: torch.Tensor, dev: torch.device) -> Callable[[], float]:
    """CUDA events around one forward, synchronised (not exercised on a GPU here)."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def once() -> float:
        with torch.cuda.device(dev):
            torch.cuda.synchronize(dev)
            start.record()
            model(x)
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
    return once


def _sample(run_once: Callable[[], float], plan: _Plan) -> tuple[list[float], str]:
    samples: list[float] = []
    deadline = time.perf_counter() + plan.max_seconds
    while True:
        samples.append(run_once())
        n = len(samples)
        if n >= plan.max_runs:
            return samples, "max_runs"
        if n >= plan.min_runs and n % plan.check_every == 0 and is_stable(samples, plan.rel_tol):
            return samples, "stable"
        if time.perf_counter() >= deadline and n >= MIN_SAMPLES:
            return samples, "max_seconds"


def is_stable(samples: Sequence[float], rel_tol: float) -> bool:
    """Whether the median of the last half is within ``rel_tol`` of the median of all."""
    whole = statistics.median(samples)
    recent = statistics.median(samples[len(samples) // 2:])
    return abs(recent - whole) <= rel_tol * whole


def _result(samples, reason, timed, plan, shape, dev, threads, fingerprint, started) -> LatencyResult:
    arr = np.asarray(samples, dtype=np.float64)
    p10, median, p90 = np.percentile(arr, [10, 50, 90])
    return LatencyResult(
        median_ms=float(median), p10_ms=float(p10), p90_ms=float(p90), mean_ms=float(arr.mean()),
        n_runs=len(samples), n_warmup=max(plan.warmup, 1), input_shape=shape, batch=shape[0],
        device=str(dev), threads=threads, stable=reason == "stable", stop_reason=reason,
        timed_seconds=timed, fingerprint=fingerprint, measured_at=started,
    )
