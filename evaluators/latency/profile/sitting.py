"""How far an interleaved ratio moves between sittings, beyond each sitting's own interval.

Two measurements of a config minutes apart differ by more than either's bootstrap
interval says: the ratio itself moves with the machine's state (an int8 kernel and the
fp32 reference do not slow down alike; on the development VM three protocol variants
measuring a config within the same seconds moved together between two sittings). No
number of pairs in one sitting sees that, so a profile measures a few of its models a
second time at its end (phase "repeat", ``profile.run.measure_repeats``), :func:`sitting_spread`
estimates the spread from those pairs, the predictor keeps it (``sitting_sd``), and every
measured interval of the study includes it (:func:`..stats.widen`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vitsearch.evaluators.latency.stats import z_value

REPEATS = 8  # models measured a second time at the end of a profile


#: fewest pairs that give a spread
MIN_PAIRS = 3


@dataclass(frozen=True)
class Sitting:
    """One measurement of a ratio to the uncompressed model: the ratio and its own interval."""

    ratio: float
    low: float
    high: float


def pair_spread(pairs: list[tuple[Sitting, Sitting]], confidence: float = 0.95) -> float | None:
    """The sitting-to-sitting spread of a ratio (log sd) from configs measured twice, minutes apart.

    Each pair's squared log difference holds the spread twice plus both measurements' own
    noise (from their intervals, read as normal on the log scale); the spread is what
    remains, 0 if nothing does. None below :data:`MIN_PAIRS` pairs.
    """
    if len(pairs) < MIN_PAIRS:
        return None
    z = z_value(confidence)
    excess = []
    for a, b in pairs:
        within = sum((math.log(x.high / x.low) / 2.0 / z) ** 2 for x in (a, b))
        excess.append(math.log(b.ratio / a.ratio) ** 2 - within)
    return math.sqrt(max(0.0, sum(excess) / len(excess) / 2.0))


def sitting_spread(rows: list[dict], confidence: float = 0.95) -> tuple[float | None, int]:
    """(sd, pairs): :func:`pair_spread` of a profile's models measured twice.

    Phase "repeat" rows pair with their first ("profile") measurement of the same protocol.
    """
    first = {}
    for r in rows:
        if r["kind"] == "model" and r["phase"] == "profile":
            first.setdefault(r["key"], r)
    pairs = []
    for r in rows:
        a = first.get(r["key"]) if r["kind"] == "model" and r["phase"] == "repeat" else None
        if a is not None and a.get("protocol") == r.get("protocol"):
            pairs.append(tuple(Sitting(x["ratio"], x["ratio_low"], x["ratio_high"]) for x in (a, r)))
    return pair_spread(pairs, confidence), len(pairs)
