"""``vitsearch predictor-eval``: judge a fitted predictor against fresh interleaved measurements.

Two evaluation sets: held-out configs drawn uniformly over the space (a Sobol sequence
with another seed than the profile's), and - given the configs of a real run's front -
the front's neighbourhood: each front config moved by one step of one knob, where the
search actually decides. Configs the predictor was fitted on are excluded.

Each config is measured twice with the interleaved protocol (its ratio to the
uncompressed model, :mod:`..timing.interleaved`), in two passes over the whole set, so the two
measurements of a config are minutes apart for a set of ~100. The prediction is scored
against the first measurement (and against the mean of both); the second against the
first is the measurement's own repeatability, scored the same way - the noise floor the
predictor cannot beat. Shares come with a 95 % Wilson interval (:func:`..stats.wilson`). Rows go to
``<profile dir>/eval/`` - never to ``timings/``, so a refit cannot train on them.

In a runtime profile (``latency.runtime`` other than eager) each held-out config is
built into the runtime's program once (ORT sessions are kept for the second pass; a
``torch.compile`` program is rebuilt) and timed exactly as the profile timed it.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from vitsearch.evaluators.latency.predict.base import LatencyPredictor
from vitsearch.evaluators.latency.profile.context import ProfileContext, progress_bar
from vitsearch.evaluators.latency.profile.programs import run_stats
from vitsearch.evaluators.latency.profile.run import measure_models
from vitsearch.evaluators.latency.profile.sampling import EVAL_SEED, front_neighbours, sample_configs
from vitsearch.evaluators.latency.profile.store import ProfileStore
from vitsearch.evaluators.latency.stats import wilson, z_value


def scores(measured: list[float], predicted: list[float]) -> dict[str, Any]:
    """Share within +-10 % / +-5 % (with Wilson intervals), MAPE and rank correlations."""
    from scipy.stats import kendalltau, spearmanr

    m, p = np.asarray(measured, float), np.asarray(predicted, float)
    ape = np.abs(p - m) / m
    k10, k5 = int(np.sum(ape <= 0.10)), int(np.sum(ape <= 0.05))
    out = {"n": int(len(m)), "within_10pct": k10 / len(m), "within_10pct_ci": wilson(k10, len(m)),
           "within_5pct": k5 / len(m), "within_5pct_ci": wilson(k5, len(m)),
           "mape": float(np.mean(ape)), "max_ape": float(np.max(ape))}
    if len(m) > 2 and np.ptp(m) > 0 and np.ptp(p) > 0:
        out["spearman"] = float(spearmanr(m, p).statistic)
        out["kendall"] = float(kendalltau(m, p).statistic)
    else:
        out["spearman"] = out["kendall"] = float("nan")
    return out


def evaluate_predictor(session: Any, profile_dir: str | Path | None = None, n: int = 100, seed: int = EVAL_SEED,
                       progress: bool = True, front: list | None = None) -> dict:
    """Measure ``n`` held-out configs twice (interleaved); score the predictor and the repeatability.

    ``front``: configs of a real run's front; then the set is their one-step neighbourhood
    (``set`` "front neighbourhood") instead of a uniform draw (``set`` "uniform").
    """
    ctx = ProfileContext.of(session, profile_dir)
    ctx.programs.keep_built()  # each config is measured twice: a runtime program is built once where it can be
    predictor = LatencyPredictor.load(ctx.out)
    predictor.check_device(ctx.fingerprint)
    predictor.check_input_shape(tuple(session.input_shape))
    if front:
        configs, which = front_neighbours(ctx.space, front, n, seed, predictor.trained_keys), "front neighbourhood"
    else:
        configs, which = sample_configs(ctx.space, n, seed=seed, presets=False,
                                        exclude=predictor.trained_keys), "uniform"
    sub = f"eval/{time.strftime('%Y%m%dT%H%M%S')}-{seed}"
    bar = progress_bar(2 * len(configs), progress, f"predictor-eval {ctx.out.name}")
    started = time.monotonic()
    no_deadline = time.monotonic() + 10 ** 9
    sitting = predictor.state.get("sitting_sd")  # intervals as a search states them (the coverage checks them)
    for phase in ("eval", "noise"):  # the whole set, twice: a config's two measurements minutes apart
        measure_models(ctx, configs, None, bar, no_deadline, phase, sub, sitting_sd=sitting)
    bar.close()
    out = score_rows(predictor, configs, ProfileStore(ctx.out, sub).rows(), ctx.interleave.confidence)
    out.update(set=which, predict_ms=predict_time_ms(predictor, configs), device=str(session.device),
               fingerprint_id=ctx.fingerprint["fingerprint_id"], fingerprint=ctx.fingerprint,
               input_shape=list(session.input_shape), study=session.spec.name, profile_dir=str(ctx.out),
               eval_dir=str(ctx.out / sub), seconds=round(time.monotonic() - started, 1), **run_stats(ctx))
    return out


def score_rows(predictor: Any, configs: list, rows: list[dict], confidence: float = 0.95) -> dict:
    """Scores of ``predictor``'s ratios on the eval rows' measured ratios (phases eval and noise).

    ``confidence``: of the rows' measured intervals (the study's ``latency.interleave``).
    """
    first = {r["key"]: r for r in rows if r["phase"] == "eval" and r["kind"] == "model"}
    again = {r["key"]: r for r in rows if r["phase"] == "noise" and r["kind"] == "model"}
    keys = [c.to_json(sort_keys=True) for c in configs if c.to_json(sort_keys=True) in first]
    configs = [c for c in configs if c.to_json(sort_keys=True) in first]
    preds = predictor.predict_many(configs)
    measured = [first[k]["ratio"] for k in keys]
    predicted = [p.ratio for p in preds]
    out = {"statistic": "ratio to the uncompressed model, interleaved", "predicted": scores(measured, predicted)}
    both = [k for k in keys if k in again]
    if both:
        a, b = [first[k]["ratio"] for k in both], [again[k]["ratio"] for k in both]
        out["repeatability"] = scores(a, b)
        mean2 = [math.sqrt(x * y) for x, y in zip(a, b)]
        pb = [p.ratio for k, p in zip(keys, preds) if k in again]
        out["predicted_vs_mean_of_two"] = scores(mean2, pb)
        out["interval_coverage"] = _coverage(first, again, both, predictor.state.get("sitting_sd"), confidence)
        gaps = [_gap_s(first[k], again[k]) for k in both]
        out["repeat_gap_s"] = float(np.median(gaps)) if gaps else None
    out["where_it_decides"] = _decision_scores(keys, measured, predicted, again)
    halfwidths = [(r["ratio_high"] - r["ratio_low"]) / 2 / r["ratio"] for r in list(first.values())]
    out.update(n=len(keys), measure_s_per_config=float(np.mean([r["seconds"] for r in first.values()])),
               measure_halfwidth_median=float(np.median(halfwidths)),
               stop_reasons={s: sum(r["stop_reason"] == s for r in first.values()) for s in
                             ("target", "max_seconds", "max_pairs")},
               reference_ms_profile=predictor.state.get("reference_ms"),
               reference_ms_eval=float(np.median([r["ref_median_ms"] for r in first.values()])),
               out_of_range=sum(p.out_of_range for p in preds),
               load_avg_1m=float(np.mean([r["load_avg_1m"] for r in rows])) if rows else None,
               rows=[{"config": k, "measured_ratio": first[k]["ratio"],
                      "remeasured_ratio": again[k]["ratio"] if k in again else None,
                      "predicted_ratio": p.ratio, "predicted_ms": p.median_ms, "uncertainty_ms": p.uncertainty_ms,
                      "out_of_range": p.out_of_range} for k, p in zip(keys, preds)])
    return out


def _decision_scores(keys: list[str], measured: list[float], predicted: list[float], again: dict) -> dict:
    """The scores where the search acts on the number: configs predicted no slower than the uncompressed model.

    A search settles a config predicted slower than the uncompressed model as "no gain"
    without accuracy work (latency the only cost), so there only the side of 1 matters
    (``no_gain_agreement``: predicted and measured on the same side); the configs it
    evaluates and ranks are the others, scored here apart (selected by the prediction,
    not by the measurement, so the selection does not flatter the predictor).
    """
    kept = [i for i, p in enumerate(predicted) if p <= 1.0]
    agree = sum((p <= 1.0) == (m <= 1.0) for p, m in zip(predicted, measured))
    out: dict[str, Any] = {
        "rule": "predicted ratio <= 1 (what a search evaluates; the rest it settles as no gain)", "n": len(kept),
        "no_gain_agreement": agree / len(measured) if measured else float("nan"),
        "no_gain_agreement_ci": wilson(agree, len(measured)) if measured else None}
    if len(kept) >= 3:
        out["predicted"] = scores([measured[i] for i in kept], [predicted[i] for i in kept])
        both = [i for i in kept if keys[i] in again]
        if len(both) >= 3:
            out["repeatability"] = scores([measured[i] for i in both], [again[keys[i]]["ratio"] for i in both])
    return out


def _coverage(first: dict, again: dict, keys: list[str], sitting_sd: float | None, confidence: float) -> dict:
    """Would a config's first interval have held its second measurement, minutes later?

    ``share``: the intervals as stated (with the profile's sitting-to-sitting spread when it
    has one); ``share_this_sitting_only``: the same intervals without it (each side's log
    half-width less the spread's, in quadrature) - what they were before the spread was
    measured.
    """
    z, inside, own = z_value(confidence), 0, 0
    for k in keys:
        a, r = first[k], again[k]["ratio"]
        inside += a["ratio_low"] <= r <= a["ratio_high"]
        lo, hi = (math.sqrt(max(0.0, math.log(x) ** 2 - (z * (sitting_sd or 0.0)) ** 2))
                  for x in (a["ratio"] / a["ratio_low"], a["ratio_high"] / a["ratio"]))
        own += a["ratio"] * math.exp(-lo) <= r <= a["ratio"] * math.exp(hi)
    n = len(keys)
    return {"n": n, "share": inside / n, "ci": wilson(inside, n), "sitting_sd": sitting_sd,
            "share_this_sitting_only": own / n, "ci_this_sitting_only": wilson(own, n)}


def _gap_s(a: dict, b: dict) -> float:
    return abs((datetime.fromisoformat(b["measured_at"]) - datetime.fromisoformat(a["measured_at"])).total_seconds())


def predict_time_ms(predictor: Any, configs: list, repeat: int = 20) -> float:
    """Mean wall time of one ``predict`` call (ms), over ``repeat`` passes of ``configs``."""
    if not configs:
        return float("nan")
    t0 = time.monotonic()
    for _ in range(repeat):
        for c in configs:
            predictor.predict(c)
    return (time.monotonic() - t0) * 1000.0 / (repeat * len(configs))
