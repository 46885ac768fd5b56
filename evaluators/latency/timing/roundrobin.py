"""Round-robin timing of several callables, keeping every raw sample.

Why not :func:`..measure.measure_latency` per item: the profile needs the raw samples
(stored in the profile table) and, on a shared CPU, contention comes in bursts. Timing
items round-robin (a few passes of each, several rounds) spreads a burst over all of
them instead of inflating one, so the *ranking* of configs survives noise that a
sequential loop would put on whichever config was unlucky. Inside the one measurement
context (:class:`.context.Measurement`: device lock, threads, the garbage collector off
during the rounds), timed by the one pass timer (:class:`.timer.PassTimer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from vitsearch.evaluators.latency.timing.context import Measurement
from vitsearch.evaluators.latency.timing.plans import RoundRobinPlan
from vitsearch.evaluators.latency.timing.timer import PassTimer


def time_round_robin(fns: Sequence[Callable[[], object]], plan: RoundRobinPlan, threads: int | None,
                     device: torch.device, *, lock: bool = True) -> list[list[float]]:
    """Raw per-pass milliseconds for each callable, timed round-robin.

    ``threads``: CPU threads for the passes (None: torch's setting as it is). ``lock``:
    hold the device lock for the whole run.
    """
    timers = [PassTimer(fn, device) for fn in fns]
    with Measurement(device, threads, lock=lock) as m:
        per_round = [_passes(min(t.warm_up(plan.warmup)), plan) for t in timers]
        samples: list[list[float]] = [[] for _ in fns]
        with m.timed():
            for _ in range(plan.rounds):
                for i, t in enumerate(timers):
                    samples[i].extend(t(per_round[i]))
    return samples


def _passes(est_ms: float, plan: RoundRobinPlan) -> int:
    total = plan.target_s * 1000.0 / max(est_ms, 1e-3)
    total = min(max(total, plan.min_passes), plan.max_passes)
    return max(1, math.ceil(total / plan.rounds))
