"""How long each protocol times: one plan class per protocol, validated where it is built.

- :class:`BurstPlan`: the plain burst (:mod:`.burst`): passes until the median is stable.
- :class:`InterleavePlan`: candidate and reference in alternating chunks (:mod:`.interleaved`).
- :class:`RoundRobinPlan`: several callables a few passes each, several rounds (:mod:`.roundrobin`).
"""

from __future__ import annotations

from dataclasses import dataclass

from vitsearch.spaces.errors import ConfigError


@dataclass(frozen=True)
class BurstPlan:
    """Warm-up passes, then timed passes until stable (``rel_tol``, checked every ``check_every``
    passes from ``min_runs`` on), ``max_runs`` passes, or ``max_seconds`` of timed passes."""

    warmup: int = 10
    min_runs: int = 20
    max_runs: int = 1000
    max_seconds: float = 10.0
    rel_tol: float = 0.01
    check_every: int = 10

    def checked(self) -> "BurstPlan":
        """Self, or a ConfigError naming the first field out of range."""
        ints = {"warmup": 0, "min_runs": 1, "max_runs": 1, "check_every": 1}
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}: {value!r} is not an integer >= {low}")
        if self.max_runs < self.min_runs:
            raise ConfigError(f"max_runs: {self.max_runs} is below min_runs {self.min_runs}; give max_runs >= min_runs")
        for name in ("max_seconds", "rel_tol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or value == float("inf"):
                raise ConfigError(f"{name}: {value!r} is not a positive finite number")
        return self


@dataclass(frozen=True)
class InterleavePlan:
    """How long to alternate: chunk size, stop rule, bootstrap. Validate with :meth:`checked`."""

    chunk: int = 4
    chunk_ms: float = 0.0
    max_chunk: int = 64
    settle: int = 0
    target_halfwidth: float = 0.03
    max_seconds: float = 3.0
    min_pairs: int = 6
    max_pairs: int = 400
    check_every: int = 2
    warmup: int = 3
    confidence: float = 0.95
    n_boot: int = 400
    seed: int = 0

    def checked(self) -> "InterleavePlan":
        """Self, or a ConfigError naming the first field out of range."""
        _in_ranges(self, {"chunk": (1, 64), "max_chunk": (1, 4096), "settle": (0, 64), "min_pairs": (3, 10_000),
                          "max_pairs": (3, 100_000), "check_every": (1, 1000), "warmup": (0, 1000),
                          "n_boot": (50, 100_000)}, integer=True)
        if self.max_pairs < self.min_pairs:
            raise ConfigError(f"latency.interleave.max_pairs: {self.max_pairs} is below min_pairs {self.min_pairs}")
        if self.max_chunk < self.chunk:
            raise ConfigError(f"latency.interleave.max_chunk: {self.max_chunk} is below chunk {self.chunk}")
        _in_ranges(self, {"chunk_ms": (0.0, 10_000.0), "target_halfwidth": (1e-4, 0.5),
                          "max_seconds": (1e-3, 3600.0), "confidence": (0.5, 0.999)}, integer=False)
        return self


def _in_ranges(plan: InterleavePlan, bounds: dict[str, tuple[float, float]], integer: bool) -> None:
    """A ConfigError naming the first field of ``plan`` outside its [low, high] (an integer where ``integer``)."""
    kinds = int if integer else (int, float)
    for name, (lo, hi) in bounds.items():
        v = getattr(plan, name)
        if isinstance(v, bool) or not isinstance(v, kinds) or not lo <= v <= hi:
            what = f"an integer in [{lo}, {hi}]" if integer else f"a number in [{lo:g}, {hi:g}]"
            raise ConfigError(f"latency.interleave.{name}: {v!r} is out of range; expected {what}")


@dataclass(frozen=True)
class RoundRobinPlan:
    """How long to time each item round-robin: total timed seconds per item, pass bounds, rounds, warm-up."""

    target_s: float = 0.5
    min_passes: int = 15
    max_passes: int = 200
    rounds: int = 3
    warmup: int = 5
