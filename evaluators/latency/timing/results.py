"""What a measurement returns: :class:`LatencyResult` (any protocol) and :class:`InterleavedResult`.

Plain frozen dataclasses with a JSON round trip and a one-line summary that says what was
measured, where and how.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vitsearch.evaluators.latency.stats import sitting_text

#: The interleaved protocol's name, stored with every ratio it measured (a profile of another is refused).
PROTOCOL = "interleaved-v1"


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
class InterleavedResult:
    """Candidate / reference ratio with its interval, the derived ms, and how it was measured."""

    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    ms: float
    ms_ci: tuple[float, float]
    basis: str                       # "reference now" | "reference in profile"
    reference_ms_now: float
    reference_ms_profile: float | None
    candidate_ms_now: float          # median of the candidate's own passes (drifts with the machine)
    candidate_p10_ms: float
    candidate_p90_ms: float
    passes: int                      # timed passes of the candidate (the reference got as many)
    chunks: int                      # chunk pairs
    chunk: int
    seconds: float                   # wall time of the timed pairs
    stop_reason: str                 # target | max_seconds | max_pairs
    target_halfwidth: float
    device: str
    threads: int | None
    thread_info: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    measured_at: str = ""
    protocol: str = PROTOCOL
    within_low: float | None = None  # the bootstrap interval over this measurement's pairs alone (the stop rule's)
    within_high: float | None = None
    sitting_sd: float | None = None  # the machine's sitting-to-sitting spread of a ratio (log sd) the interval includes
    reference_chunk: int = 0         # timed passes of the reference per chunk (0: as many as the candidate)
    settle: int = 0                  # untimed passes run after each switch of side, before a chunk's timed ones
    samples: dict[str, list[float]] | None = None  # raw pass ms and log-ratios, with keep_samples

    @property
    def halfwidth(self) -> float:
        """Relative half-width of the ratio's interval."""
        return (self.ci_high - self.ci_low) / 2.0 / self.ratio

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        out = asdict(self)
        out["ms_ci"] = list(self.ms_ci)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InterleavedResult":
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["ms_ci"] = tuple(data["ms_ci"])
        return cls(**data)

    def summary(self) -> str:
        """One line: ratio and interval, ms and its basis, passes, stop reason."""
        pct = round(100 * self.confidence)
        return (f"{self.ms:.3f} ms [{self.ms_ci[0]:.3f}, {self.ms_ci[1]:.3f}] = ratio {self.ratio:.3f} "
                f"[{self.ci_low:.3f}, {self.ci_high:.3f}] ({pct} % interval{self._sitting()}) x "
                f"{self._ref_ms():.3f} ms "
                f"({self.basis}); measured interleaved with the reference, {self.chunks} chunk pairs of "
                f"{self._chunks()} ({self.passes} passes of the candidate, {self.seconds:.2f} s), stop: "
                f"{self.stop_reason}")

    def _sitting(self) -> str:
        own = "" if self.sitting_sd is None else f"; this sitting's [{self.within_low:.3f}, {self.within_high:.3f}]"
        return f", {sitting_text(self.sitting_sd)}{own}"

    def _chunks(self) -> str:
        ref = self.reference_chunk or self.chunk
        text = f"{self.chunk}" if ref == self.chunk else f"{self.chunk} candidate / {ref} reference passes"
        return text + (f", {self.settle} settling pass(es) after each switch" if self.settle else "")

    def _ref_ms(self) -> float:
        return self.reference_ms_profile if self.basis == "reference in profile" else self.reference_ms_now
