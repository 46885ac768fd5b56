"""Latency measurement: real timed forward passes, with the device fingerprint.

:func:`measure_latency` is the one entry point: with a ``reference`` model it runs the
interleaved protocol (:mod:`.timing.interleaved`, the ratio to the reference with its
interval), without one the burst (:mod:`.timing.burst`). Both time their passes with the
one pass timer (CUDA events on a GPU, ``perf_counter_ns`` on a CPU) inside the one
measurement context (device lock, thread count, eval mode, garbage collector paused);
see :mod:`.timing`. Inputs are fp32 and created once; models with fp16/bf16 weights
cast internally.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from vitsearch.spaces.errors import ConfigError

from vitsearch.evaluators.latency.fingerprint import resolve_device
from vitsearch.evaluators.latency.lock import device_lock
from vitsearch.evaluators.latency.timing.burst import measure_burst
from vitsearch.evaluators.latency.timing.interleaved import measure_interleaved
from vitsearch.evaluators.latency.timing.plans import BurstPlan, InterleavePlan
from vitsearch.evaluators.latency.timing.prepare import check_input_shape, on_device, resolve_threads
from vitsearch.evaluators.latency.timing.results import LatencyResult


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
    :func:`.timing.interleaved.measure_interleaved` (``interleave``: its InterleavePlan, or
    a dict of its fields), and the result carries the ratio and its interval; the burst
    (:mod:`.timing.burst`) is what runs without one.

    ``device``: "cpu", "cuda", "cuda:N" or "auto". ``threads``: CPU threads for the
    measurement (default: the physical cores this process may use); ignored on CUDA
    (recorded as None). A model not on ``device`` is measured as a copy moved there;
    the model itself is left as it was (device and train/eval mode). At least one
    warm-up pass always runs: it turns a model/input mismatch into a ConfigError, and
    a device failure (out of memory, no kernel) into a DeviceError saying which.
    Timed passes stop when stable (:mod:`.timing.burst`), at ``max_runs``, or once
    ``max_seconds`` of timed passes are spent (never before 5 passes); the result says
    which. ``lock`` holds the device's inter-process lock for the whole measurement.
    """
    shape = check_input_shape(input_shape)
    if reference is not None:
        return _interleaved(model, reference, shape, device, threads, warmup, interleave, reference_ms_profile,
                            lock, lock_timeout, sitting_sd)
    plan = BurstPlan(warmup, min_runs, max_runs, max_seconds, rel_tol, check_every).checked()
    dev = resolve_device(device)
    return measure_burst(model, shape, dev, resolve_threads(dev, threads), plan, lock, lock_timeout)


def _interleaved(model, reference, shape, device, threads, warmup, interleave, reference_ms_profile, lock,
                 lock_timeout, sitting_sd=None) -> LatencyResult:
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
