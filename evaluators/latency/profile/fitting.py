"""Fitting a profile dir's predictor on every row it holds (of this device), and saving it there."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from vitsearch.spaces import CompressionConfig
from vitsearch.spaces.errors import ConfigError

from vitsearch.evaluators.latency.predict.base import LatencyPredictor
from vitsearch.evaluators.latency.predict.fit import fit_component, fit_whole_model
from vitsearch.evaluators.latency.profile.context import ProfileContext
from vitsearch.evaluators.latency.profile.sitting import sitting_spread
from vitsearch.evaluators.latency.profile.store import ProfileStore
from vitsearch.evaluators.latency.timing.results import PROTOCOL


def fit_from_store(ctx: ProfileContext) -> LatencyPredictor:
    """Fit the predictor on every row of the profile dir and save it there.

    The whole-model targets are the interleaved ratios times the profile's reference
    time (the median of the uncompressed model's time over every measurement), so the
    predictor predicts ratios in ms units: ms = ratio x ``reference_ms``.
    """
    rows = [r for r in ProfileStore(ctx.out).rows() if r["fingerprint_id"] == ctx.fingerprint["fingerprint_id"]]
    components = [r for r in rows if r["kind"] == "component"]
    if not components and ctx.programs.times_components:
        raise ConfigError(f"profile dir {str(ctx.out)!r}: no component timings yet; give a larger --budget-minutes")
    model_rows = [r for r in rows if r["kind"] == "model" and r.get("protocol") == PROTOCOL]
    ref = float(np.median([r["ref_median_ms"] for r in model_rows])) if model_rows else None
    sitting_sd, sitting_pairs = sitting_spread(model_rows, ctx.interleave.confidence)
    model_rows = [r for r in model_rows if r["phase"] != "repeat"]  # a config's second measurement: spread only
    models = [(CompressionConfig.from_json(r["key"]), r["ratio"] * ref) for r in model_rows]
    meta = {"reference_ms": ref, "sitting_sd": sitting_sd, "sitting_pairs": sitting_pairs,
            "latency_protocol": PROTOCOL, "study": ctx.session.spec.name,
            "model": ctx.session.spec.model.name, "statistic": "ratio", **ctx.meta_runtime(),
            "base_precision": ctx.session.base_precision,
            "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if not ctx.programs.times_components:  # whole models only (:mod:`..predict.whole`)
        predictor = fit_whole_model(ctx.dims, models, ctx.fingerprint, tuple(ctx.session.input_shape), meta)
    else:
        predictor = fit_component(ctx.dims, components, models, ctx.fingerprint, tuple(ctx.session.input_shape),
                                  meta)
    predictor.save(ctx.out)
    return predictor
