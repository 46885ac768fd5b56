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

from vitsearch.evaluators.latency.stats import z_value

REPEATS = 8  # models measured a second time at the end of a profile


def sitting_spread(rows: list[dict], confidence: float = 0.95) -> tuple[float | None, int]:
    """(sd, pairs): the sitting-to-sitting spread of a ratio (log sd) from models measured twice, minutes apart.

    Each pair's squared log difference holds the spread twice plus both measurements' own
    noise within their sitting (from their bootstrap intervals); the spread is what remains
    (0 if nothing does). None below 3 pairs. Phase "repeat" rows pair with their first
    ("profile") measurement.
    """
    z = z_value(confidence)
    first = {}
    for r in rows:
        if r["kind"] == "model" and r["phase"] == "profile":
            first.setdefault(r["key"], r)
    excess = []
    for r in rows:
        a = first.get(r["key"]) if r["kind"] == "model" and r["phase"] == "repeat" else None
        if a is None or a.get("protocol") != r.get("protocol"):
            continue
        within = sum((math.log(x["ratio_high"] / x["ratio_low"]) / 2.0 / z) ** 2 for x in (a, r))
        excess.append(math.log(r["ratio"] / a["ratio"]) ** 2 - within)
    if len(excess) < 3:
        return None, len(excess)
    return math.sqrt(max(0.0, sum(excess) / len(excess) / 2.0)), len(excess)
