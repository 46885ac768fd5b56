"""Interleaved latency: a candidate timed against a reference in alternating chunks.

Why. On a shared or throttling machine one burst of passes measures the machine's mood
as much as the model: the same model's median moved 1.5x between bursts half a second
apart on the development VM, while the *ratio* of two models timed in alternating
chunks of 4 passes stayed within a few percent. Whatever slows the machine for a
while slows both sides of a chunk pair alike, so the ratio cancels it.

Protocol (:data:`PROTOCOL`): warm both up; then pairs of chunks - ``chunk`` passes of
the candidate and ``chunk`` of the reference, the order alternating pair by pair (ABBA,
so neither side always runs on a cache the other warmed) - each pair giving one
log-ratio log(median candidate pass / median reference pass). The estimate is the 25 %
trimmed mean of the log-ratios with a seeded percentile bootstrap over the pairs
(:func:`..stats.ratio_interval`). Sampling stops when the
interval's half-width is within ``target_halfwidth`` of the ratio, at ``max_seconds``
of timed passes, or at ``max_pairs`` (never before ``min_pairs``); the result says which.

Very different costs (``chunk_ms``, off by default). A candidate k times slower than
the reference spends k times the wall time of a chunk pair on its own side, so the two
sides sample the machine's state unequally. With ``chunk_ms`` each side's chunk fills
the same wall time (``chunk_ms``, or ``chunk`` passes of the slower side): the cheaper
side runs more passes (k passes of the reference, k = 1 .. ``max_chunk``).
``settle`` untimed passes run after each switch of side (the first pass after the
other model is slower: its caches refilled). Both are off by default: why, with the
measurements (``benchmarks/protocol.py``), is in docs/latency.md. What a ratio moves
between sittings is put into the interval (``sitting_sd``, :func:`..stats.widen`).

Absolute milliseconds are ``ratio x reference ms``: the reference's time in this very
measurement (``basis`` "reference now") or, given one, its time in the device profile
(``basis`` "reference in profile", the machine's typical state while profiling, so
numbers measured minutes or days apart compare). Both reference times are kept.

The candidate and the reference are modules (timed on an fp32 input of ``input_shape``)
or plain zero-argument callables (an ONNX Runtime session, a compiled model: whatever
runs one forward pass). The passes run inside the one measurement context
(:class:`.context.Measurement`: device lock, threads, eval mode, the garbage collector
off during the timed passes) and are timed by the one pass timer (:class:`.timer.PassTimer`);
every thread's nice value, policy and affinity is recorded (:mod:`.hygiene`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import nn

from vitsearch.spaces.errors import ConfigError

from vitsearch.evaluators.latency.fingerprint import device_fingerprint, resolve_device
from vitsearch.evaluators.latency.nvml import nvml_info
from vitsearch.evaluators.latency.stats import ratio_interval, widen
from vitsearch.evaluators.latency.timing.context import Measurement
from vitsearch.evaluators.latency.timing.hygiene import thread_report
from vitsearch.evaluators.latency.timing.plans import InterleavePlan
from vitsearch.evaluators.latency.timing.prepare import check_input_shape, on_device, resolve_threads
from vitsearch.evaluators.latency.timing.results import InterleavedResult
from vitsearch.evaluators.latency.timing.timer import PassTimer, wall


def measure_interleaved(candidate: Any, reference: Any, input_shape: Sequence[int] | None = None,
                        device: Any = "cpu", *, threads: int | None = None, plan: InterleavePlan | None = None,
                        reference_ms_profile: float | None = None, lock: bool = True,
                        lock_timeout: float | None = None, keep_samples: bool = False,
                        sitting_sd: float | None = None) -> InterleavedResult:
    """Time ``candidate`` against ``reference`` in alternating chunks; the ratio with its interval.

    ``candidate`` / ``reference``: an ``nn.Module`` (then ``input_shape`` (B, C, H, W) is
    required; the module is run in eval mode under ``inference_mode`` on an fp32 input,
    its modes restored afterwards) or a zero-argument callable running one forward pass.
    ``threads``: torch CPU threads during the measurement (default: the physical cores
    this process may use; ignored on CUDA). ``reference_ms_profile``: the reference's
    time in the device profile; when given, ``ms`` uses it (basis "reference in
    profile"), else the reference's time now. ``keep_samples`` keeps every raw pass time.
    ``sitting_sd``: the machine's sitting-to-sitting spread of a ratio (log sd, from the device
    profile, :func:`..stats.widen`); the interval includes it, ``within_low``/``within_high`` keep
    this sitting's alone.
    """
    plan = (plan or InterleavePlan()).checked()
    dev = resolve_device(device)
    threads = resolve_threads(dev, threads)
    if reference_ms_profile is not None and not (isinstance(reference_ms_profile, (int, float))
                                                 and reference_ms_profile > 0):
        raise ConfigError(f"reference_ms_profile: {reference_ms_profile!r} is not a positive time in ms")
    if sitting_sd is not None and not (isinstance(sitting_sd, (int, float)) and 0.0 <= sitting_sd <= 0.5):
        raise ConfigError(f"sitting_sd: {sitting_sd!r} is not a spread in [0, 0.5] (log sd of a ratio)")
    sides = [_prepared(m, input_shape, dev) for m in (candidate, reference)]
    with Measurement(dev, threads, [s for s, _ in sides], lock=lock, lock_timeout=lock_timeout) as m:
        fingerprint = device_fingerprint(dev, m.threads_now)
        res = _run(m, [PassTimer(fn, dev) for _, fn in sides], plan, fingerprint, reference_ms_profile)
    lo, hi = widen(res.ratio, res.ci_low, res.ci_high, sitting_sd, plan.confidence)
    ref = res.ms / res.ratio
    res = replace(res, ci_low=lo, ci_high=hi, ms_ci=(lo * ref, hi * ref), sitting_sd=sitting_sd)
    return res if keep_samples else replace(res, samples=None)


def _run(m: Measurement, timers: list[PassTimer], plan: InterleavePlan, fingerprint: dict,
         reference_ms_profile: float | None) -> InterleavedResult:
    pass_ms = []
    for t in timers:
        warm = t.warm_up(plan.warmup)
        pass_ms.append(min(warm[1:] or warm))  # sizes the chunks (the first pass pays one-off costs)
    sizes = chunk_sizes(plan, pass_ms)
    hygiene = thread_report()  # after warm-up: torch's pool threads exist now
    with m.timed():
        return _timed(timers, sizes, plan, m, fingerprint, reference_ms_profile, hygiene)


def chunk_sizes(plan: InterleavePlan, pass_ms: Sequence[float]) -> tuple[int, int]:
    """Timed passes per chunk of (candidate, reference).

    ``chunk`` each without ``chunk_ms``; with it, cost-balanced: each side fills the
    same wall time (``chunk_ms``, or ``chunk`` passes of the slower side if longer), so
    both sample the machine's state for as long - a candidate at 9x the reference does
    not face a reference that saw a ninth of its time.
    """
    if plan.chunk_ms <= 0:
        return plan.chunk, plan.chunk
    wall_ms = max(plan.chunk_ms, plan.chunk * max(pass_ms))
    return tuple(min(max(plan.chunk, round(wall_ms / max(ms, 1e-3))), plan.max_chunk) for ms in pass_ms)


def _pairs(timers: list[PassTimer], sizes, plan: InterleavePlan) -> tuple[list[list[float]], list[float], str]:
    """Chunk pairs in ABBA order until the stop rule: (samples per side, log-ratios, stop reason)."""
    samples: list[list[float]] = [[], []]
    logs: list[float] = []
    deadline = wall() + plan.max_seconds
    last = len(timers) - 1  # warmed up last
    while len(logs) < plan.max_pairs:
        order = (0, 1) if len(logs) % 2 == 0 else (1, 0)
        chunk = {}
        for i in order:
            if plan.settle and i != last:
                timers[i](plan.settle)  # the other side ran last: its caches refill before timed passes
            chunk[i] = timers[i](sizes[i])
            last = i
        for i in (0, 1):
            samples[i].extend(chunk[i])
        logs.append(float(np.log(np.median(chunk[0]) / np.median(chunk[1]))))
        n = len(logs)
        if n >= plan.min_pairs and n % plan.check_every == 0:
            est = ratio_interval(logs, plan.confidence, plan.n_boot, plan.seed)
            if (est[2] - est[1]) / 2.0 / est[0] <= plan.target_halfwidth:
                return samples, logs, "target"
        if n >= plan.min_pairs and wall() >= deadline:
            return samples, logs, "max_seconds"
    return samples, logs, "max_pairs"


def _timed(timers, sizes, plan: InterleavePlan, m: Measurement, fingerprint, reference_ms_profile,
           hygiene) -> InterleavedResult:
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = wall()
    samples, logs, reason = _pairs(timers, sizes, plan)
    seconds = wall() - t0
    ratio, lo, hi = ratio_interval(logs, plan.confidence, plan.n_boot, plan.seed)
    ref_now = float(np.median(samples[1]))
    basis = "reference in profile" if reference_ms_profile else "reference now"
    ref = float(reference_ms_profile) if reference_ms_profile else ref_now
    cand = np.asarray(samples[0])
    dev = m.device
    if dev.type == "cuda":
        fingerprint = {**fingerprint, "after": nvml_info(dev.index, fingerprint.get("gpu_uuid"))}
    return InterleavedResult(
        ratio=ratio, ci_low=lo, ci_high=hi, confidence=plan.confidence, ms=ratio * ref, ms_ci=(lo * ref, hi * ref),
        within_low=lo, within_high=hi, basis=basis, reference_ms_now=ref_now,
        reference_ms_profile=reference_ms_profile,
        candidate_ms_now=float(np.median(cand)), candidate_p10_ms=float(np.percentile(cand, 10)),
        candidate_p90_ms=float(np.percentile(cand, 90)), passes=len(samples[0]), chunks=len(logs), chunk=sizes[0],
        seconds=seconds, stop_reason=reason, target_halfwidth=plan.target_halfwidth, device=str(dev),
        threads=m.threads, thread_info=hygiene, fingerprint=fingerprint, measured_at=started,
        reference_chunk=sizes[1], settle=plan.settle,
        samples={"candidate": samples[0], "reference": samples[1], "log_ratios": logs})


def _prepared(m: Any, input_shape: Sequence[int] | None, dev: torch.device) -> tuple[Any, Callable[[], Any]]:
    """(the module to put in eval mode or None, the zero-argument callable running one pass)."""
    if isinstance(m, nn.Module):
        if input_shape is None:
            raise ConfigError("input_shape: required to time a module; give (batch, channels, height, width)")
        shape = check_input_shape(input_shape)
        model = on_device(m, dev)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
        return model, lambda: model(x)
    if not callable(m):
        raise ConfigError(f"latency: {type(m).__name__} is neither a torch module nor a callable; give the model "
                          "or a zero-argument function that runs one forward pass")
    return None, m
