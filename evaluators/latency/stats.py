"""The intervals every measured figure carries: Wilson for shares, the ratio's bootstrap, the sitting spread.

One home for the statistics accuracy, latency and predictor-eval state their numbers
with, so a 95 % interval means the same thing wherever it is printed.

- :func:`wilson`: a share ``k / n`` (an accuracy, a hit rate) with its Wilson score
  interval; Wilson rather than the normal approximation because the shares sit near 1,
  where the normal interval runs past 1 and is too narrow on a few hundred samples.
- :func:`ratio_interval`: the interleaved protocol's estimate, the 25 % trimmed mean of
  per-pair log-ratios (a burst that hit one side of a pair does not move it) with a
  seeded percentile bootstrap over the pairs.
- :func:`widen`: one sitting's interval widened by how far a ratio moves between sittings
  (minutes apart), which no number of pairs inside one sitting can see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

TRIM = 0.25  # share of log-ratios trimmed at each end: the mean of the middle half


def z_value(confidence: float) -> float:
    """The standard normal quantile of a two-sided ``confidence`` interval (1.96 for 0.95)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


#: z of the two-sided 90 % interval a prediction states.
Z90 = z_value(0.90)


def wilson(k: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the share ``k / n`` (``k`` may be a share times ``n``); (nan, nan) for n <= 0."""
    if n <= 0:
        return float("nan"), float("nan")
    z = z_value(confidence)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def trimmed_mean(rows: np.ndarray) -> np.ndarray:
    """Mean of the middle half of each row (:data:`TRIM` cut at each end)."""
    n = rows.shape[1]
    k = int(TRIM * n)
    s = np.sort(rows, axis=1)
    return s[:, k:n - k].mean(axis=1)


def ratio_interval(log_ratios: Sequence[float], confidence: float = 0.95, n_boot: int = 400,
                   seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high): 25 %-trimmed-mean log-ratio, percentile bootstrap over the pairs (seeded)."""
    x = np.asarray(log_ratios, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no chunk pairs")
    rng = np.random.default_rng(seed)
    boot = trimmed_mean(x[rng.integers(0, x.size, size=(n_boot, x.size))])
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot, [a, 1.0 - a])
    return float(np.exp(trimmed_mean(x[None, :])[0])), float(np.exp(lo)), float(np.exp(hi))


def widen(ratio: float, low: float, high: float, sitting_sd: float | None, confidence: float) -> tuple[float, float]:
    """The interval of one sitting widened by the sitting-to-sitting spread (log sd), each side in quadrature.

    None or 0 leaves the interval as it is.
    """
    if not sitting_sd:
        return low, high
    z = z_value(confidence)
    lo = float(np.hypot(np.log(ratio / low), z * sitting_sd))
    hi = float(np.hypot(np.log(high / ratio), z * sitting_sd))
    return ratio * float(np.exp(-lo)), ratio * float(np.exp(hi))


def predictive(ratio: float, low: float, high: float, sitting_sd: float | None,
               confidence: float) -> tuple[float, float]:
    """Where a re-measurement in another sitting falls: :func:`widen`, each side's log half-width times sqrt(2).

    The difference of two sittings holds both measurements' own noise (the second's taken
    as large as the first's: the same protocol) and the spread between sittings twice; an
    interval for the value itself (:func:`widen`) covers a re-measurement less often than
    it states.
    """
    lo, hi = widen(ratio, low, high, sitting_sd, confidence)
    k = math.sqrt(2.0)
    return ratio * (lo / ratio) ** k, ratio * (hi / ratio) ** k


def sitting_text(sitting_sd: float | None) -> str:
    """What an interval holds, said beside it: the sitting's own noise, or that and the spread between sittings."""
    if sitting_sd is None:
        return "this sitting's alone: the spread between sittings not measured (no device profile)"
    return f"with the machine's sitting-to-sitting spread {100 * sitting_sd:.1f} % (device profile)"
