"""The predictor's second stage: boosted trees on what the calibrated sum still misses.

Why: on the built-in model at batch 1 the calibrated additive model leaves ~4 % error
that has structure - interactions between where tokens are reduced, the K/V grouping
and the int8 path (one block's dynamic quantisation sees another token count, the
token-size mask takes SDPA off its fastest kernel for some shapes) - and 5-fold CV on
the 312-config profile showed boosted trees on the log-ratio halving it (MAPE 4.0 % ->
2.6 %, share within +-10 % 97 % -> 99.7 %). Trees fitted on the *ratio* to the first
stage, not on the latency itself, keep the first stage's extrapolation for configs
outside the sampled region: a tree's output is bounded by what it saw.

The fitted trees are exported to plain lists (feature, threshold, children, leaf value)
and walked in pure Python: no sklearn at predict time (~0.1 ms), picklable, JSON-saved.
Below :data:`MIN_SAMPLES` whole-model samples the stage is skipped (it would overfit).
"""

from __future__ import annotations

from typing import Any

from vitsearch.spaces.blocks import block_shapes

MIN_SAMPLES = 40


def vocab_of(configs: list, dims: Any) -> dict[str, list[str]]:
    """Categorical values the training configs' blocks hold, so features are stable numbers."""
    blocks = [b for c in configs for b in block_shapes(c, dims)]
    return {"precision": sorted({p for b in blocks for p in b.precision}),
            "sparsity": sorted({s for b in blocks for s in b.sparsity}),
            "method": sorted({b.token_method for b in blocks})}


def config_features(config: Any, dims: Any, vocab: dict[str, list[str]], first_stage_ms: float) -> list[float]:
    """Numbers describing ``config`` for the trees: structure, formats, per-block token shares.

    Read from the config's :func:`~vitsearch.spaces.blocks.block_shapes`: head counts
    averaged over the blocks, one share per block of the base model (1 where nothing is
    scheduled or the block is dropped). The trees split on feature positions, so the
    order is part of every saved predictor. Formats and the token method are one per
    config today: the first block's stand for all.
    """
    blocks = block_shapes(config, dims)
    first = blocks[0]
    scheduled = any(b.token_share is not None for b in blocks)
    shares = [1.0 if b.token_share is None else b.token_share for b in blocks]

    def idx(kind: str, value: str) -> float:
        values = vocab[kind]
        return float(values.index(value)) if value in values else -1.0

    return [float(len(blocks)), _mean(b.q_heads for b in blocks), _mean(b.kv_heads for b in blocks),
            idx("precision", first.precision.attn), idx("precision", first.precision.mlp),
            idx("sparsity", first.sparsity.attn), idx("sparsity", first.sparsity.mlp),
            idx("method", first.token_method) if scheduled else -1.0,
            float(sum(b.n_attn for b in blocks)), float(sum(b.n_mlp for b in blocks)),
            *(float(v) for v in shares), *([1.0] * (dims.depth - len(blocks))), float(first_stage_ms)]


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)


def fit_trees(X: list[list[float]], y: list[float], seed: int = 0) -> dict | None:
    """Gradient-boosted trees on ``y`` (log of measured / first stage); None when too few samples."""
    if len(y) < MIN_SAMPLES:
        return None
    import numpy as np
    from sklearn.ensemble import GradientBoostingRegressor

    g = GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8,
                                  min_samples_leaf=3, random_state=seed)
    g.fit(np.asarray(X), np.asarray(y))
    trees = []
    for est in g.estimators_[:, 0]:
        t = est.tree_
        trees.append([t.children_left.tolist(), t.children_right.tolist(), t.feature.tolist(),
                      [float(v) for v in t.threshold], [float(v) for v in t.value[:, 0, 0]]])
    init = float(g.init_.predict(np.zeros((1, len(X[0]))))[0])
    return {"init": init, "learning_rate": float(g.learning_rate), "trees": trees}


class CompiledTrees:
    """The exported trees as padded numpy arrays, walked all at once (~20 us a row).

    Leaves point to themselves, so every tree can take ``depth`` steps.
    """

    def __init__(self, model: dict) -> None:
        import numpy as np

        trees = model["trees"]
        width = max(len(t[0]) for t in trees)
        shape = (len(trees), width)
        self.left, self.right = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        self.feat, self.thr = np.zeros(shape, np.int64), np.full(shape, np.inf)
        self.value = np.zeros(shape)
        for i, (left, right, feat, thr, value) in enumerate(trees):
            n = len(left)
            own = np.arange(n)
            is_leaf = np.asarray(left) == -1
            self.left[i, :n] = np.where(is_leaf, own, left)
            self.right[i, :n] = np.where(is_leaf, own, right)
            self.feat[i, :n] = np.where(is_leaf, 0, feat)
            self.thr[i, :n] = np.where(is_leaf, np.inf, thr)
            self.value[i, :n] = value
        self.rows = np.arange(len(trees))
        # flat arrays, children as flat indices: one take() per array and step
        base = (self.rows * width)[:, None]
        self.left, self.right = (self.left + base).ravel(), (self.right + base).ravel()
        self.feat, self.thr, self.value = self.feat.ravel(), self.thr.ravel(), self.value.ravel()
        self.start = self.rows * width
        self.depth = max(_depth(t[0], t[1]) for t in trees)
        self.init, self.lr = float(model["init"]), float(model["learning_rate"])

    def __call__(self, x: list[float]) -> float:
        import numpy as np

        xs = np.asarray(x, dtype=np.float64)
        node = self.start
        for _ in range(self.depth):
            go_left = xs.take(self.feat.take(node)) <= self.thr.take(node)
            node = np.where(go_left, self.left.take(node), self.right.take(node))
        return self.init + self.lr * float(self.value.take(node).sum())


def _depth(left: list[int], right: list[int], node: int = 0) -> int:
    if left[node] == -1:
        return 0
    return 1 + max(_depth(left, right, left[node]), _depth(left, right, right[node]))
