"""Interleaved timing of several callables, keeping every raw sample.

Why not :func:`.latency.measure_latency` per item: the profile needs the raw samples
(stored in the profile table) and, on a shared CPU, contention comes in bursts. Timing
items round-robin (a few passes of each, several rounds) spreads a burst over all of
them instead of inflating one, so the *ranking* of configs survives noise that a
sequential loop would put on whichever config was unlucky. The caller holds the device
lock; the thread count is set here and restored.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TimingPlan:
    """How long to time each item: total timed seconds per item, pass bounds, rounds."""

    target_s: float = 0.5
    min_passes: int = 15
    max_passes: int = 200
    rounds: int = 3
    warmup: int = 5


@contextlib.contextmanager
def gc_paused():
    """Keep Python's garbage collector off inside (as ``timeit`` does), young garbage collected first; restore it after.

    The garbage what ran before left (an ONNX export, a distillation) would otherwise be
    collected during timed passes, pausing a Python-heavy eager model and not a runtime's
    single native call: it would not cancel in a ratio of the two. Only the young
    generations are collected before: a full collection in a process holding a search
    (~480,000 tracked objects) took 0.21 s on the development VM - a third of a whole
    measurement - while the collector being off is what keeps the timed passes clean.
    """
    was_enabled = gc.isenabled()
    gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_interleaved(fns: Sequence[Callable[[], object]], plan: TimingPlan, threads: int | None,
                     device: torch.device) -> list[list[float]]:
    """Raw per-pass milliseconds for each callable, timed round-robin."""
    saved = torch.get_num_threads()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    try:
        if threads is not None and device.type == "cpu":
            torch.set_num_threads(threads)
        with torch.inference_mode():
            est = [_warm(fn, plan.warmup, sync) for fn in fns]
            per_round = [_passes(e, plan) for e in est]
            samples: list[list[float]] = [[] for _ in fns]
            with gc_paused():
                for _ in range(plan.rounds):
                    for i, fn in enumerate(fns):
                        samples[i].extend(_run(fn, per_round[i], sync))
    finally:
        torch.set_num_threads(saved)
    return samples


def _warm(fn: Callable[[], object], n: int, sync: Callable[[], None]) -> float:
    times = _run(fn, max(1, n), sync)
    return min(times)


def _passes(est_ms: float, plan: TimingPlan) -> int:
    total = plan.target_s * 1000.0 / max(est_ms, 1e-3)
    total = min(max(total, plan.min_passes), plan.max_passes)
    return max(1, math.ceil(total / plan.rounds))


def _run(fn: Callable[[], object], n: int, sync: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter_ns()
        fn()
        sync()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out
