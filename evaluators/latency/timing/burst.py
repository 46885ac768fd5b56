"""The burst protocol: one model's passes timed back to back until the median is stable.

Warm-up passes (:meth:`.timer.PassTimer.warm_up`), then passes timed one at a time until
the median of the last half of the samples is within ``rel_tol`` of the median of all
(checked every ``check_every`` passes once ``min_runs`` are in) or a cap is reached
(``max_runs`` passes, or ``max_seconds`` of timed passes but never fewer than
:data:`MIN_SAMPLES`). Inside the one measurement context (:class:`.context.Measurement`);
on CUDA the fingerprint adds the GPU temperature after the passes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import torch
from torch import nn

from vitsearch.evaluators.latency.fingerprint import device_fingerprint
from vitsearch.evaluators.latency.nvml import gpu_temperature
from vitsearch.evaluators.latency.timing.context import Measurement
from vitsearch.evaluators.latency.timing.hygiene import thread_report
from vitsearch.evaluators.latency.timing.plans import BurstPlan
from vitsearch.evaluators.latency.timing.prepare import on_device
from vitsearch.evaluators.latency.timing.results import LatencyResult
from vitsearch.evaluators.latency.timing.timer import PassTimer, wall

#: Fewer timed passes than this never end a measurement, whatever the time cap.
MIN_SAMPLES = 5


def measure_burst(model: nn.Module, shape: tuple[int, ...], dev: torch.device, threads: int | None,
                  plan: BurstPlan, lock: bool = True, lock_timeout: float | None = None) -> LatencyResult:
    """Burst-time ``model`` on an fp32 input of ``shape`` (checked) on ``dev`` with ``threads`` (resolved).

    A model not on ``dev`` is timed as a copy moved there; the model itself is left as it was.
    """
    model = on_device(model, dev)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
    with Measurement(dev, threads, [model], lock=lock, lock_timeout=lock_timeout) as m:
        return _timed_burst(m, PassTimer(lambda: model(x), dev), shape, plan)


def _timed_burst(m: Measurement, timer: PassTimer, shape: tuple[int, ...], plan: BurstPlan) -> LatencyResult:
    """Fingerprint, warm-up and the timed passes, inside the measurement context ``m``."""
    dev = m.device
    fingerprint = device_fingerprint(dev, m.threads_now)
    timer.warm_up(plan.warmup, shape)
    hygiene = thread_report()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = wall()
    with m.timed():
        samples, reason = _sample(lambda: timer(1)[0], plan)
    timed = wall() - start
    if dev.type == "cuda":
        fingerprint["temperature_after_c"] = gpu_temperature(dev.index, fingerprint.get("gpu_uuid"))
    return replace(_result(samples, reason, timed, plan, shape, dev, m.threads, fingerprint, started),
                   thread_info=hygiene)


def _sample(run_once: Callable[[], float], plan: BurstPlan) -> tuple[list[float], str]:
    samples: list[float] = []
    deadline = wall() + plan.max_seconds
    while True:
        samples.append(run_once())
        n = len(samples)
        if n >= plan.max_runs:
            return samples, "max_runs"
        if n >= plan.min_runs and n % plan.check_every == 0 and is_stable(samples, plan.rel_tol):
            return samples, "stable"
        if wall() >= deadline and n >= MIN_SAMPLES:
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
