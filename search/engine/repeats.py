"""A run's own sitting-to-sitting spread: its earliest measured candidates, measured again at its end.

Without a device profile a measured latency interval is one sitting's alone, and a ratio
to the uncompressed model moves more than that between sittings minutes apart. So a run
whose latencies were measured, with no spread known from a profile, measures up to
:data:`REPEATS` of its earliest candidates again once the search is over, with the same
protocol, and estimates the spread beyond both sittings' own intervals
(:func:`~vitsearch.evaluators.latency.profile.sitting.pair_spread`, the profile's estimator). The run keeps it in ``summary.json`` (``sitting``) and every
interval it reports afterwards includes it
(:func:`vitsearch.search.results.sitting.widen_frame`: the final table, list, report and pick).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

import optuna
from optuna.trial import TrialState

from vitsearch.evaluators.latency.profile.sitting import MIN_PAIRS, Sitting, pair_spread
from vitsearch.evaluators.latency.stats import predictive
from vitsearch.search.results.tables import ATTR_CONFIG, ATTR_EVAL, ATTR_REUSED
from vitsearch.spaces import CompressionConfig

log = logging.getLogger("vitsearch.run")

#: early candidates measured a second time at the end of a run
REPEATS = 8


def early_measured(study: optuna.Study, limit: int = REPEATS) -> list[tuple[int, CompressionConfig, Sitting]]:
    """The first ``limit`` trials (by number) whose latency was measured interleaved: (number, config, sitting)."""
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if len(out) >= limit:
            break
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or t.user_attrs.get(ATTR_REUSED) is not None:
            continue
        lat = (t.user_attrs.get(ATTR_EVAL) or {}).get("latency") or {}
        if lat.get("source") != "measured" or None in (lat.get("ratio"), lat.get("ratio_low"), lat.get("ratio_high")):
            continue
        config = CompressionConfig.from_dict(json.loads(t.user_attrs[ATTR_CONFIG]))
        out.append((t.number, config, Sitting(lat["ratio"], lat["ratio_low"], lat["ratio_high"])))
    return out


def measure_repeats(study: optuna.Study, session, confidence: float, limit: int = REPEATS) -> dict[str, Any]:
    """Measure the run's earliest measured candidates again now; the spread, its pairs and how it was had.

    ``session.pipeline.measure_config(config)`` times a config as the search did (same protocol,
    same runtime). The result is what ``summary.json`` keeps under ``sitting``.
    """
    early = early_measured(study, limit)
    rows, pairs = [], []
    for number, config, first in early:
        res = session.pipeline.measure_config(config)
        if None in (res.ratio, res.ratio_low, res.ratio_high):
            continue
        again = Sitting(res.ratio, res.ratio_low, res.ratio_high)
        pairs.append((first, again))
        rows.append({"number": number, "first": asdict(first), "again": asdict(again)})
    sd = pair_spread(pairs, confidence)
    how = (f"{len(pairs)} of the run's earliest measured candidates timed again at its end, minutes after their "
           f"first measurement; the spread beyond both sittings' own intervals")
    if sd is None:
        how = f"not estimated: {len(pairs)} candidate(s) measured twice, {MIN_PAIRS} needed"
    log.info("sitting-to-sitting spread: %s (%s)", "n/a" if sd is None else f"{100 * sd:.1f} %", how)
    return {"sitting_sd": sd, "pairs": len(pairs), "confidence": confidence, "how": how, "rows": rows,
            "coverage": pair_coverage(pairs, sd, confidence)}


def pair_coverage(pairs: list[tuple[Sitting, Sitting]], sd: float | None, confidence: float) -> dict[str, Any]:
    """How many second measurements fell inside the first's interval: as measured (one sitting's alone),
    and as the run states it, for a re-measurement in another sitting (:func:`~vitsearch.evaluators.latency.stats.predictive`).

    In-sample for the stated share (``sd`` comes from the same pairs); the report's
    re-measurement of the front and ``benchmarks/coverage.py`` are the out-of-sample checks.
    """
    stated = sum(a.low <= b.ratio <= a.high for a, b in pairs)
    wide = sum(lo <= b.ratio <= hi for a, b in pairs for lo, hi in [predictive(a.ratio, a.low, a.high, sd, confidence)])
    return {"n": len(pairs), "within_stated": stated, "within_widened": wide}
