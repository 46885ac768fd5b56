"""The whole-model latency predictor: for runtimes whose programs are timed only whole.

Why a second predictor. The component predictor (:mod:`.component`) sums parts timed
alone in eager PyTorch. An ONNX Runtime session or a ``torch.compile`` program is built
for the whole candidate: the runtime fuses across the parts (attention into one kernel,
norms into matmuls, quantisation into the linears), so eager parts timed alone do not
add up to it, and exporting every part as its own program would time a fusion the
deployed program does not do. A profile in such a runtime (``latency.runtime``
``onnxruntime`` / ``compile``) therefore times whole models only, and this predictor
fits them on features computed from the config and the base model's dimensions alone:

    latency = sum_p  a_p * (linear MACs run at precision p)  +  b * (attention score MACs)
              + c * (token x width elements: norms, residuals, activations)
              + sum_m  r_m * (token-reduction work of method m)
              + sum_p  q_p * (linears at precision p != fp32: per-call quantisation cost)
              + e * (blocks kept)  +  f

(MACs as counted in :mod:`vitsearch.evaluators.macs`, in millions; structured MLP
pruning shows as the smaller hidden width; masked sparsity changes nothing, as in
every runtime here that has no sparse kernel). It is fitted on relative error by
ridge regression shrunk towards "proportional to the MACs" (one factor fitted on the
samples), so with a handful of samples it predicts latency ~ MACs rather than nonsense,
and with many the per-precision and per-op terms win; a bootstrap ensemble gives the
uncertainty; from :data:`.residual.MIN_SAMPLES` samples on the same boosted trees as
the component predictor correct the interactions a sum cannot express.

What is predicted is what a search in the runtime measures: the runtime program's
interleaved ratio to the uncompressed *eager* model, in ms units (ratio x the
profile's reference ms), as the component predictor does; the fitted state is a
:class:`WholeModelPredictor` (``state["kind"]`` "whole-model", fitted by
:func:`.fit.fit_whole_model`), with the interface's intervals, calibration and
fingerprint checks (:mod:`.base`). A precision the profile never saw is predicted at the fp32 linear
cost and flagged out of range.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from vitsearch.spaces.blocks import block_shapes
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.evaluators.latency.predict.base import LatencyPredictor

#: ``state["kind"]`` of a whole-model predictor (the component predictor has none).
KIND = "whole-model"
BASE_COLUMNS = ("attn_mm", "elements", "n_blocks", "const")
MEGA = 1e-6


def structure_features(config: Any, dims: VitDims) -> dict[str, float]:
    """The feature values of ``config`` (MACs in millions), keyed by column name, summed over its
    :func:`~vitsearch.spaces.blocks.block_shapes`."""
    f: dict[str, float] = defaultdict(float)
    blocks = block_shapes(config, dims)
    for b in blocks:
        n_a, n_m, h, kv, d, D = b.n_attn, b.n_mlp, b.q_heads, b.kv_heads, b.head_dim, b.embed_dim
        pa, pm = b.precision
        f[f"lin_{pa}"] += MEGA * (n_a * D * (h + 2 * kv) * d + n_a * h * d * D)  # qkv + proj
        f[f"lin_{pm}"] += MEGA * 2 * n_m * D * b.mlp_hidden  # fc1 + fc2
        f["attn_mm"] += MEGA * 2 * h * n_a * n_a * d
        f["elements"] += MEGA * (n_a + n_m) * D
        if n_m != n_a:  # merge matches every token pair of the two halves; prune ranks tokens
            method = b.token_method
            f[f"red_{method}"] += MEGA * (n_a * n_a * D / 4 if method == "merge" else n_a * D)
        for p in (pa, pm):
            if p != "fp32":
                f[f"nq_{p}"] += 2
    f["n_blocks"] = float(len(blocks))
    f["const"] = 1.0
    return dict(f)


def columns_of(feature_rows: list[dict[str, float]]) -> list[str]:
    """Every column the training rows use, MAC columns first (stable order)."""
    seen = sorted({k for r in feature_rows for k in r} - set(BASE_COLUMNS))
    lin = [c for c in seen if c.startswith("lin_")]
    return [*lin, "attn_mm", *(c for c in seen if c not in lin), *BASE_COLUMNS[1:]]


def is_mac_column(column: str) -> bool:
    """Columns the prior makes proportional to the MACs (the others start at 0)."""
    return column.startswith("lin_") or column == "attn_mm"


def feature_row(config: Any, dims: VitDims, col: dict[str, int]) -> tuple[list[float], list[str]]:
    """The regression row of ``config`` over the fitted columns ``col`` (name -> index), and why it is out of range."""
    why, row = [], [0.0] * len(col)
    for name, value in structure_features(config, dims).items():
        target = name
        if target not in col:
            kind, _, what = name.partition("_")
            why.append(f"{'precision' if kind in ('lin', 'nq') else 'token'} {what} not profiled in this runtime")
            target = "lin_fp32" if kind == "lin" else None  # an unseen precision costs what fp32 did
        if target in col:
            row[col[target]] += value
    return row, why


class WholeModelPredictor(LatencyPredictor):
    """The whole-model kind: its first stage's features come from the config and the dims alone."""

    kind = KIND

    def features(self, config: Any) -> tuple[list[float], list[str]]:
        """The regression row of ``config`` over the fitted columns, and why it is out of range."""
        return feature_row(config, self.dims, self._col)
