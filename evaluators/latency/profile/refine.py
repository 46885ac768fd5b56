"""``vitsearch profile --refine``: measure where the fitted predictor is least certain, then refit.

Whole models only (in the study's runtime, like the profile itself): the configs the
predictor is least sure of (bootstrap spread, out of range) and those it fits worst
are measured (again), then the predictor is refitted on everything in the dir.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vitsearch.spaces import CompressionConfig

from vitsearch.evaluators.latency.predict.base import LatencyPredictor
from vitsearch.evaluators.latency.profile.context import ProfileContext, progress_bar
from vitsearch.evaluators.latency.profile.fitting import fit_from_store
from vitsearch.evaluators.latency.profile.programs import run_stats
from vitsearch.evaluators.latency.profile.run import measure_models
from vitsearch.evaluators.latency.profile.sampling import sample_configs
from vitsearch.evaluators.latency.profile.store import ProfileStore
from vitsearch.evaluators.latency.timing.results import PROTOCOL


def refine_profile(session: Any, out: str | Path | None = None, n: int = 40, budget_minutes: float = 5.0,
                   seed: int = 1, progress: bool = True) -> dict:
    """Measure where the predictor is least certain, re-measure where it fits worst, refit."""
    ctx = ProfileContext.of(session, out)
    predictor = LatencyPredictor.load(ctx.out)
    predictor.check_device(ctx.fingerprint)
    trained = predictor.trained_keys
    pool = sample_configs(ctx.space, 30 * n, seed=seed + 1000, presets=False, exclude=trained)
    uncertain = sorted(pool, key=predictor.model_uncertainty, reverse=True)[: max(1, (3 * n) // 4)]
    worst = _worst_fitted(ctx, predictor)[: max(0, n - len(uncertain))]
    configs = uncertain + worst
    bar = progress_bar(len(configs), progress, f"refine {ctx.out.name}")
    started, before = time.monotonic(), predictor.state.get("train_mape")
    measured = measure_models(ctx, configs, ProfileStore(ctx.out), bar, time.monotonic() + budget_minutes * 60,
                              "refine")
    bar.close()
    after = fit_from_store(ctx)
    return {**run_stats(ctx), "dir": str(ctx.out), "measured": measured, "uncertain": len(uncertain),
            "remeasured_worst": len(worst), "models_total": after.state["n_models"], "train_mape_before": before,
            "train_mape_after": after.state.get("train_mape"), "seconds": round(time.monotonic() - started, 1)}


def _worst_fitted(ctx: ProfileContext, predictor: LatencyPredictor) -> list:
    errs = {}
    for r in ProfileStore(ctx.out).rows():
        if r["kind"] == "model" and r.get("protocol") == PROTOCOL:
            c = CompressionConfig.from_json(r["key"])
            errs[r["key"]] = (abs(predictor.predict(c).ratio / r["ratio"] - 1.0), c)
    return [c for _, c in sorted(errs.values(), key=lambda t: t[0], reverse=True)]
