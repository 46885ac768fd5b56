"""The one pass timer: the only place a clock is read around forward passes.

Every protocol (the burst, the interleaved pairs, the profile's round-robin) times its
passes through :class:`PassTimer`, so a millisecond means the same thing in each.

- CPU: ``time.perf_counter_ns`` around each pass.
- CUDA: a pair of CUDA events around each pass, recorded back to back on the current
  stream, the device synchronised before the first pass and after the last: a sample is
  one forward's device time.

Warm-up (:meth:`PassTimer.warm_up`): the first pass is checked (a model that cannot run
on this input or device says why in one line, :func:`.prepare.first_forward_error`).
On CUDA the warm-up then goes on until the per-pass time stops falling: an idle GPU sits
at a low clock and speeds up only under load, so passes timed before it has risen would
measure the governor, not the model. The ramp is bounded (:data:`RAMP_MAX_S`,
:data:`RAMP_MAX_ROUNDS`); clocks are never locked or changed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from vitsearch.evaluators.latency.timing.prepare import SHAPE_ERRORS, first_forward_error

#: Passes per round of the CUDA clock ramp, and the bounds of the ramp.
RAMP_PASSES = 5
RAMP_MAX_ROUNDS = 40
RAMP_MAX_S = 3.0
#: The ramp ends once a round's median is no more than this much faster than the previous round's.
RAMP_TOL = 0.02


def wall() -> float:
    """Seconds on a monotonic clock, for deadlines and wall times around whole measurements (not passes)."""
    return time.monotonic()


class PassTimer:
    """``timer(n)`` runs ``fn`` n times on ``device`` and returns each pass's milliseconds."""

    def __init__(self, fn: Callable[[], Any], device: torch.device) -> None:
        self.fn = fn
        self.device = device
        self.cuda = device.type == "cuda"

    def __call__(self, n: int) -> list[float]:
        """Milliseconds of each of ``n`` passes (see the module docstring for the clock)."""
        if n <= 0:
            return []
        return self._cuda(n) if self.cuda else self._cpu(n)

    def _cpu(self, n: int) -> list[float]:
        out = []
        fn = self.fn
        for _ in range(n):
            t0 = time.perf_counter_ns()
            fn()
            out.append((time.perf_counter_ns() - t0) / 1e6)
        return out

    def _cuda(self, n: int) -> list[float]:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        fn = self.fn
        with torch.cuda.device(self.device):
            torch.cuda.synchronize(self.device)
            for start, end in events:
                start.record()
                fn()
                end.record()
            events[-1][1].synchronize()
        return [float(s.elapsed_time(e)) for s, e in events]

    def warm_up(self, n: int, shape: Any = "(the model's input)") -> list[float]:
        """Warm-up passes (at least one, ``n`` in all); on CUDA more until the clocks have risen.

        The first pass turns a failure into one line (:func:`.prepare.first_forward_error`,
        ``shape`` named in it). Returns the milliseconds of every warm-up pass.
        """
        try:
            times = self(1)
        except SHAPE_ERRORS as exc:
            raise first_forward_error(exc, shape, self.device) from None
        times += self(max(0, n - 1))
        if self.cuda:
            times += self._ramp()
        return times

    def _ramp(self) -> list[float]:
        """Rounds of passes until a round is no faster than the one before (bounded)."""
        out: list[float] = []
        deadline = wall() + RAMP_MAX_S
        last = None
        for _ in range(RAMP_MAX_ROUNDS):
            batch = self(RAMP_PASSES)
            out += batch
            now = statistics.median(batch)
            if clocks_risen(last, now) or wall() >= deadline:
                break
            last = now
        return out


def clocks_risen(previous_ms: float | None, now_ms: float) -> bool:
    """Whether a warm-up round at ``now_ms`` per pass shows the clocks up: no longer faster than the one before.

    False for the first round (``previous_ms`` None); then True once a round is less than
    :data:`RAMP_TOL` faster than the previous round.
    """
    return previous_ms is not None and now_ms >= previous_ms * (1.0 - RAMP_TOL)
