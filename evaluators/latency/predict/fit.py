"""Fitting the two predictor kinds (:mod:`.component`, :mod:`.whole`) from a profile's timings.

Kept apart from the predictor so that predicting needs neither numpy nor pandas (the
object Ray ships is plain Python), and so a synthetic profile can be fitted in tests.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.evaluators.latency.predict.base import FORMAT_VERSION
from vitsearch.evaluators.latency.predict.component import ComponentPredictor
from vitsearch.evaluators.latency.predict.keys import COUNT_FEATURES, is_count
from vitsearch.evaluators.latency.predict.residual import config_features, fit_trees, vocab_of
from vitsearch.evaluators.latency.predict.whole import (KIND, WholeModelPredictor, columns_of, is_mac_column,
                                                        structure_features)

#: Ridge strength towards the plain sum of parts, in units of one whole-model sample.
LAMBDA = 0.5
N_BOOT = 32


def build_tables(dims: VitDims, components: list[dict]) -> tuple[dict, list[str], list[str]]:
    """Component rows ``{part, component (or key), tokens, median_ms, precision}`` -> tables and precisions.

    Repeated measurements of one (key, tokens) are combined by their median.
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    prec = {"attn": set(), "mlp": set()}
    for r in components:
        groups[(r["part"], r.get("component") or r["key"], int(r["tokens"]))].append(float(r["median_ms"]))
        if r["part"] in prec and r.get("precision"):
            prec[r["part"]].add(r["precision"])
    tables: dict[str, Any] = {"attn": {}, "mlp": {}, "reduce": {}, "stem": 0.0}
    per_key: dict[tuple, dict[int, float]] = defaultdict(dict)
    for (part, key, n), values in groups.items():
        if part == "stem":
            tables["stem"] = float(np.median(values))
        else:
            per_key[(part, key)][n] = float(np.median(values))
    for (part, key), points in per_key.items():
        ns = sorted(points)
        tables[part][key] = {"tokens": ns, "ms": [points[n] for n in ns]}
    return tables, sorted(prec["attn"]), sorted(prec["mlp"])


def columns_for(attn_prec: list[str], mlp_prec: list[str], interactions: bool = True) -> list[str]:
    """Feature columns: component-ms groups first, then structural counts.

    With ``interactions``, block counts per non-reference format (its call overhead beyond
    the group factor) and per format x token-reducing blocks (the token path swaps in
    another attention module and adds per-block work that interacts with the format).
    """
    ms = ["stem", *(f"attn_{p}" for p in attn_prec), "attn_other", *(f"mlp_{p}" for p in mlp_prec),
          "mlp_other", "reduce"]
    extra = []
    if interactions:
        for part, precs in (("attn", attn_prec), ("mlp", mlp_prec)):
            ref = "fp32" if "fp32" in precs else (precs[0] if precs else None)
            extra += [f"{kind}_{part}_{p}" for p in precs if p != ref for kind in ("nb", "tok")]
    return [*ms, *COUNT_FEATURES, *extra]


def fit_component(dims: VitDims, components: list[dict], models: list[tuple[Any, float]], fingerprint: dict,
                  input_shape: tuple[int, ...], meta: dict | None = None, lam: float = LAMBDA,
                  n_boot: int = N_BOOT, seed: int = 0, interactions: bool = True,
                  residual: bool = True) -> ComponentPredictor:
    """Fit the correction on whole-model ``(config, measured ms)`` pairs over the component tables."""
    tables, attn_prec, mlp_prec = build_tables(dims, components)
    columns = columns_for(attn_prec, mlp_prec, interactions)
    prior = [0.0 if is_count(c) else 1.0 for c in columns]
    state = {"format_version": FORMAT_VERSION, "dims": dims.block_dict(), "tables": tables, "columns": columns,
             "coef": prior, "boot": [], "sigma_rel": 0.1, "fingerprint": dict(fingerprint),
             "input_shape": list(input_shape), "n_models": 0, "trained_keys": [], **(meta or {})}
    draft = ComponentPredictor(state)
    merged = merge_repeats(models)
    if not merged:
        return draft
    X = np.array([draft.features(c)[0] for c, _ in merged], dtype=np.float64)
    y = np.array([ms for _, ms in merged], dtype=np.float64)
    state.update(linear_fit(X, y, np.array(prior), lam, n_boot, seed))
    state.update(n_models=len(merged), trained_keys=sorted(c.to_json(sort_keys=True) for c, _ in merged))
    return finish_fit(ComponentPredictor, state, dims, merged, X, y, seed, residual)


def linear_fit(X: np.ndarray, y: np.ndarray, prior: np.ndarray, lam: float, n_boot: int, seed: int) -> dict:
    """The first stage: ridge coefficients, a bootstrap ensemble of them and the relative residual spread."""
    coef = solve(X, y, prior, lam)
    rng = np.random.default_rng(seed)
    boot = [solve(X[idx], y[idx], prior, lam)
            for idx in (rng.integers(0, len(y), len(y)) for _ in range(n_boot if len(y) > 2 else 0))]
    rel = 1.0 - (X @ coef) / y
    dof = max(1, len(y) - np.count_nonzero(X.std(axis=0) > 0))
    # The first stage's residual spread: conservative for the two-stage prediction (the
    # trees' in-sample residual would flatter it).
    sigma = float(np.sqrt(np.sum(rel ** 2) / dof)) if len(y) > X.shape[1] else 0.1
    return {"coef": [float(v) for v in coef], "boot": [[float(v) for v in b] for b in boot], "sigma_rel": sigma,
            "first_stage_train_mape": float(np.mean(np.abs(rel)))}


def finish_fit(cls: type, state: dict, dims: VitDims, merged: list, X: np.ndarray, y: np.ndarray, seed: int,
               residual: bool) -> Any:
    """The second stage (residual trees, :mod:`.residual`) on the first stage's log-ratio, and the training MAPE."""
    if residual:
        first = np.maximum(X @ np.asarray(state["coef"]), cls(state).floor_ms)
        configs = [c for c, _ in merged]
        vocab = vocab_of(configs, dims)
        feats = [config_features(c, dims, vocab, float(f)) for c, f in zip(configs, first)]
        state.update(vocab=vocab, residual=fit_trees(feats, list(np.log(y / first)), seed))
    out = cls(state)
    pred = np.array([p.median_ms for p in out.predict_many([c for c, _ in merged])])
    state["train_mape"] = float(np.mean(np.abs(pred / y - 1.0)))
    return out


def fit_whole_model(dims: VitDims, models: list[tuple[Any, float]], fingerprint: dict, input_shape: tuple[int, ...],
                    meta: dict | None = None, seed: int = 0, residual: bool = True) -> WholeModelPredictor:
    """Fit the whole-model predictor (:mod:`.whole`) on ``(config, measured ms)`` pairs of a runtime profile."""
    merged = merge_repeats(models)
    if not merged:
        raise ConfigError("latency predictor: no whole-model timings to fit in this runtime yet; give a larger "
                          "--budget-minutes")
    feats = [structure_features(c, dims) for c, _ in merged]
    columns = columns_of(feats)
    X = np.array([[f.get(c, 0.0) for c in columns] for f in feats], dtype=np.float64)
    y = np.array([ms for _, ms in merged], dtype=np.float64)
    macs = X[:, [is_mac_column(c) for c in columns]].sum(axis=1)
    per_mac = float(np.median(y / macs))  # the prior: latency proportional to the MACs
    prior = np.array([per_mac if is_mac_column(c) else 0.0 for c in columns])
    state = {"format_version": FORMAT_VERSION, "kind": KIND, "dims": dims.block_dict(), "columns": columns,
             "fingerprint": dict(fingerprint), "input_shape": list(input_shape), "n_models": len(merged),
             "trained_keys": sorted(c.to_json(sort_keys=True) for c, _ in merged), "prior_ms_per_mmac": per_mac,
             **(meta or {})}
    state.update(linear_fit(X, y, prior, LAMBDA, N_BOOT, seed))
    return finish_fit(WholeModelPredictor, state, dims, merged, X, y, seed, residual)


def solve(X: np.ndarray, y: np.ndarray, prior: np.ndarray, lam: float) -> np.ndarray:
    """Ridge on relative error, shrunk towards ``prior``: min sum (1 - x.b / y)^2 + lam sum s_j^2 (b - prior)_j^2."""
    Xr = X / y[:, None]
    resid = 1.0 - Xr @ prior
    scale = np.sqrt(np.mean(Xr ** 2, axis=0))
    scale[scale == 0] = 1.0
    A = Xr.T @ Xr + lam * np.diag(scale ** 2)
    delta = np.linalg.solve(A, Xr.T @ resid)
    return prior + delta


def merge_repeats(models: list[tuple[Any, float]]) -> list[tuple[Any, float]]:
    """One (config, median of its measurements) per distinct config."""
    by: dict[Any, list[float]] = defaultdict(list)
    for config, ms in models:
        if ms > 0 and np.isfinite(ms):
            by[config].append(float(ms))
    return [(c, float(np.median(v))) for c, v in by.items()]
