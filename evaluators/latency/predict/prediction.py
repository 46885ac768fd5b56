"""A predicted latency with its uncertainty, and the interval a search states with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitsearch.evaluators.latency.stats import Z90


@dataclass(frozen=True)
class Prediction:
    """A predicted latency (ms) with its uncertainty (one standard deviation, ms).

    ``median_ms`` = predicted ratio to the uncompressed model x ``reference_ms`` (the
    reference's time in the profile, times the calibration factor where calibrated).
    ``low_ms`` / ``high_ms`` bound the two-sided 90 % interval: a latency is over a budget
    only when its low end is (with >= 95 % probability), within it only when its high end is.
    """

    median_ms: float
    uncertainty_ms: float
    out_of_range: bool = False
    reason: str | None = None
    reference_ms: float | None = None

    @property
    def ratio(self) -> float | None:
        """Predicted candidate / uncompressed-model latency ratio."""
        return self.median_ms / self.reference_ms if self.reference_ms else None

    @property
    def low_ms(self) -> float:
        """Low end of the 90 % interval (ms)."""
        return max(0.0, self.median_ms - Z90 * self.uncertainty_ms)

    @property
    def high_ms(self) -> float:
        """High end of the 90 % interval (ms)."""
        return self.median_ms + Z90 * self.uncertainty_ms

    def interval_entry(self) -> dict[str, Any]:
        """The interval keys of a latency entry (:data:`vitsearch.evaluators.record.INTERVAL_KEYS`)."""
        r = self.ratio
        return {"low_ms": self.low_ms, "high_ms": self.high_ms, "confidence": 0.9, "ratio": r,
                "ratio_low": None if r is None else self.low_ms / self.reference_ms,
                "ratio_high": None if r is None else self.high_ms / self.reference_ms,
                "basis": "reference in profile", "reference_ms_now": None, "reference_ms_profile": self.reference_ms,
                "protocol": "predicted from interleaved ratios"}
