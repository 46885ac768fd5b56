"""``vitsearch predictor-eval``: judge a fitted predictor against fresh measurements.

Held-out configs come from a Sobol sequence with another seed than the profile's, minus
every config the predictor was fitted on. Each is measured twice, in two separate
round-robin passes over its chunk: the first measurement is what the prediction is
scored against, the second measured against the first is the noise floor (how well a
re-measurement "predicts" a measurement). Rows go to ``<profile dir>/eval/`` - never to
``timings/``, so a refit cannot train on them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

EVAL_SEED = 777


def scores(measured: list[float], predicted: list[float]) -> dict[str, float]:
    """Share within +-10 % / +-5 %, MAPE (fractions) and rank correlations of predicted vs measured."""
    from scipy.stats import kendalltau, spearmanr

    m, p = np.asarray(measured, float), np.asarray(predicted, float)
    ape = np.abs(p - m) / m
    out = {"within_10pct": float(np.mean(ape <= 0.10)), "within_5pct": float(np.mean(ape <= 0.05)),
           "mape": float(np.mean(ape)), "max_ape": float(np.max(ape))}
    if len(m) > 2 and np.ptp(m) > 0 and np.ptp(p) > 0:
        out["spearman"] = float(spearmanr(m, p).statistic)
        out["kendall"] = float(kendalltau(m, p).statistic)
    else:
        out["spearman"] = out["kendall"] = float("nan")
    return out


def evaluate_predictor(session: Any, profile_dir: str | Path | None = None, n: int = 50, seed: int = EVAL_SEED,
                       progress: bool = True) -> dict:
    """Measure ``n`` held-out configs twice; score the predictor and the measurement noise."""
    from vitsearch.evaluators.latency.predictor import LatencyPredictor
    from vitsearch.evaluators.latency.profile import CHUNK, ProfileContext, ProfileStore, _bar, _measure_models, sample_configs

    ctx = ProfileContext.of(session, profile_dir)
    predictor = LatencyPredictor.load(ctx.out)
    predictor.check_device(ctx.fingerprint)
    predictor.check_input_shape(tuple(session.input_shape))
    configs = sample_configs(ctx.space, n, seed=seed, presets=False, exclude=predictor.trained_keys)
    sub = f"eval/{time.strftime('%Y%m%dT%H%M%S')}-{seed}"
    bar = _bar(2 * len(configs), progress, f"predictor-eval {ctx.out.name}")
    started = time.monotonic()
    no_deadline = time.monotonic() + 10 ** 9
    for i in range(0, len(configs), CHUNK):  # both measurements of a chunk close in time
        chunk = configs[i:i + CHUNK]
        for phase in ("eval", "noise"):
            _measure_models(ctx, chunk, None, bar, no_deadline, phase, sub)
    bar.close()
    out = score_rows(predictor, configs, ProfileStore(ctx.out, sub).rows())
    out.update(predict_ms=predict_time_ms(predictor, configs), device=str(session.device),
               fingerprint_id=ctx.fingerprint["fingerprint_id"], fingerprint=ctx.fingerprint,
               input_shape=list(session.input_shape), study=session.spec.name, profile_dir=str(ctx.out),
               eval_dir=str(ctx.out / sub), seconds=round(time.monotonic() - started, 1))
    return out


def score_rows(predictor: Any, configs: list, rows: list[dict]) -> dict:
    """Scores of ``predictor`` on measured eval rows (phases eval and noise), by its own statistic."""
    stat = predictor.state.get("statistic", "median")
    rows = [r for r in rows if r["kind"] == "model"] + [r for r in rows if r["kind"] != "model"]
    first = {r["key"]: r[f"{stat}_ms"] for r in rows if r["phase"] == "eval" and r["kind"] == "model"}
    again = {r["key"]: r[f"{stat}_ms"] for r in rows if r["phase"] == "noise" and r["kind"] == "model"}
    keys = [c.to_json(sort_keys=True) for c in configs]
    preds = predictor.predict_many(configs)
    measured = [first[k] for k in keys]
    out = {"n": len(configs), "statistic": stat, **scores(measured, [p.median_ms for p in preds])}
    noise = scores(measured, [again[k] for k in keys])
    med = {p: {r["key"]: r["median_ms"] for r in rows if r["phase"] == p and r["kind"] == "model"}
           for p in ("eval", "noise")}
    # Calibrated views, beside the raw scores, never instead of them. The predictor
    # targets the device in its quietest profiled state; `LatencyPredictor.calibrated`
    # rescales it by the reference model timed now. "calibrated_once": one reference
    # timing, the first of this eval, for every config (what `latency.calibrate` does at
    # the start of a run); "drift_normalized": the reference timed with each chunk of
    # configs (a calibration every ~CHUNK measurements).
    quiet = predictor.state.get("reference_ms")
    refs = {r["key"]: r.get(f"ref_{stat}_ms") for r in rows if r["phase"] == "eval" and r["kind"] == "model"}
    if quiet and all(refs.get(k) for k in keys):
        norm = scores([first[k] * quiet / refs[k] for k in keys], [p.median_ms for p in preds])
        out.update({f"{k}_drift_normalized": norm[k] for k in ("within_10pct", "within_5pct", "mape", "spearman")},
                   reference_ms_profile=quiet,
                   reference_ms_eval=float(np.median([refs[k] for k in keys])))
        ref_rows = [r for r in rows if r["kind"] == "reference" and r["phase"] == "eval"]
        if ref_rows:
            once = min(ref_rows, key=lambda r: r.get("measured_at") or "")[f"{stat}_ms"]
            cal = predictor.calibrated(once, "first reference timing of this eval")
            c = scores(measured, [p.median_ms for p in cal.predict_many(configs)])
            out.update({f"{k}_calibrated_once": c[k] for k in ("within_10pct", "within_5pct", "mape", "spearman")},
                       calibration_factor_once=cal.scale)
    out.update(noise_mape=noise["mape"], noise_within_10pct=noise["within_10pct"],
               noise_within_5pct=noise["within_5pct"], noise_spearman=noise["spearman"],
               noise_mape_of_median=scores([med["eval"][k] for k in keys], [med["noise"][k] for k in keys])["mape"],
               measure_ms_per_config=_measure_cost(rows), out_of_range=sum(p.out_of_range for p in preds),
               load_avg_1m=float(np.mean([r["load_avg_1m"] for r in rows])) if rows else None,
               rows=[{"config": k, "measured_ms": first[k], "remeasured_ms": again[k], "measured_median_ms":
                      med["eval"][k], "predicted_ms": p.median_ms, "uncertainty_ms": p.uncertainty_ms,
                      "out_of_range": p.out_of_range} for k, p in zip(keys, preds)])
    return out


def predict_time_ms(predictor: Any, configs: list, repeat: int = 20) -> float:
    """Mean wall time of one ``predict`` call (ms), over ``repeat`` passes of ``configs``."""
    if not configs:
        return float("nan")
    t0 = time.perf_counter()
    for _ in range(repeat):
        for c in configs:
            predictor.predict(c)
    return (time.perf_counter() - t0) * 1000.0 / (repeat * len(configs))


def _measure_cost(rows: list[dict]) -> float:
    """Mean timed milliseconds spent per measurement (excludes compression and warm-up)."""
    return float(np.mean([sum(r["samples_ms"]) for r in rows])) if rows else float("nan")
