"""Latency components of a compressed ViT: what the profile measures and the predictor sums.

A compressed ViT's forward is: the *stem* (patch embed, prefix tokens, position
embedding, final norm, pooling and classifier head), then per kept block an *attention*
part on ``n_attn`` tokens, an optional *token-reduction* step (merge or prune) and an
*MLP* part on ``n_mlp`` tokens (:func:`vitsearch.spaces.tokens_per_block`). The cost of
each part depends only on a few keys:

- attention: query heads, K/V heads, attention precision and sparsity, token count
- MLP: hidden width (structured pruning), MLP precision and sparsity, token count
- reduction: method, incoming token count (the matching / ranking dominates)
- stem: nothing the knobs change (precision and sparsity apply to blocks only)

Which block gets dropped or which heads are pruned does not change any shape, so the
component modules are built by ``compress()`` on a one-block slice of the base model
without calibration data (data-free rankings): the same timm / torchao modules the real
compressed model runs, at a fraction of the build time.

Token counts are interpolated between measured anchors rather than measured at every
count: cost is smooth in the count, and a handful of anchors spanning the range the
space can produce keep the profile within minutes.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from vitsearch.spaces import compress
from vitsearch.spaces.knobs.tokens import TokensConfig, tokens_per_block
from vitsearch.spaces.vit import ops
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.evaluators.latency.predict.keys import attn_key, hidden_for, mlp_key

#: Interpolation anchors per component key (min and max always included).
N_ANCHORS = 6


@dataclass(frozen=True)
class ComponentPlan:
    """Every component measurement the space needs: keys and token-count anchors."""

    attn: dict[str, dict]            # key -> {"config": {...}, "tokens": [anchors]}
    mlp: dict[str, dict]
    reduce: dict[str, list[int]]     # method -> incoming token-count anchors
    token_counts: list[int]          # every count the space can produce (prefix included)

    def items(self) -> list[tuple[str, str, int]]:
        """(part, key, tokens) for every measurement, stem first."""
        out = [("stem", "stem", 0)]
        for part in ("attn", "mlp"):
            for key, entry in getattr(self, part).items():
                out += [(part, key, n) for n in entry["tokens"]]
        out += [("reduce", m, n) for m, anchors in self.reduce.items() for n in anchors]
        return out


def plan_components(space: Any, dims: VitDims) -> ComponentPlan:
    """The component measurements the search space ``space`` (a SearchSpace) can need."""
    counts, steps = token_counts(space, dims)
    s = space.spec
    pairs = sorted({(h, space._kv_for(h, c)) for h in space.head_keep for c in space.kv_choices})
    attn, mlp = {}, {}
    anchors = pick_anchors(counts)
    precisions = space.precisions  # as the space resolved them: relative to the base, with a budget's quantised one
    for (h, kv), prec, sp in itertools.product(pairs, precisions["attn"], s.sparsity.attn):
        attn[attn_key(h, kv, prec, sp)] = {
            "config": {"heads": _heads_cfg(dims, h, kv), "sparsity": {"attn": sp}, "precision": {"attn": prec}},
            "tokens": anchors}
    for prec, sp in itertools.product(precisions["mlp"], s.sparsity.mlp):
        mlp[mlp_key(hidden_for(dims, sp), prec, sp)] = {
            "config": {"sparsity": {"mlp": sp}, "precision": {"mlp": prec}}, "tokens": anchors}
    reduce = {m: pick_anchors(sorted({n for mm, n in steps if mm == m})) for m in {m for m, _ in steps}}
    return ComponentPlan(attn, mlp, reduce, counts)


def _heads_cfg(dims: VitDims, h: int, kv: int) -> dict:
    out = {}
    if h != dims.num_heads:
        out["keep"] = h
    if kv != h:
        out["kv_heads"] = kv
    return out


def token_counts(space: Any, dims: VitDims, cap: int = 20000) -> tuple[list[int], set[tuple[str, int]]]:
    """Token counts (prefix included) the space produces, and its (method, incoming count) steps."""
    counts = {dims.num_patches + dims.num_prefix_tokens}
    steps: set[tuple[str, int]] = set()
    combos = itertools.product(space.shares, repeat=len(space.token_blocks))
    for i, shares in enumerate(combos):
        if i >= cap:  # huge schedules: the first ``cap`` combinations cover the counts in practice
            break
        for method in space.spec.tokens.methods:
            sched = {b: v for b, v in zip(space.token_blocks, shares) if v < 1.0}
            try:
                cfg = TokensConfig(method=method, schedule=sched)
            except Exception:  # noqa: BLE001 - a share the method refuses is not in the space
                continue
            per = tokens_per_block(cfg, dims.num_patches, dims.num_prefix_tokens, dims.depth)
            for b, (n_a, n_m) in enumerate(per):
                counts.update((n_a, n_m))
                if n_m != n_a:
                    steps.add((method, n_a))
    return sorted(counts), steps


def pick_anchors(values: list[int], n: int = N_ANCHORS) -> list[int]:
    """Up to ``n`` values spread over ``values`` (sorted, unique), min and max included."""
    values = sorted(set(values))
    if len(values) <= n:
        return values
    idx = {round(i * (len(values) - 1) / (n - 1)) for i in range(n)}
    return [values[i] for i in sorted(idx)]


# ---- building the modules that get timed ------------------------------------------------
def one_block_base(base: Any) -> Any:
    """A copy of ``base`` holding only its first block (all blocks share one shape)."""
    import copy

    from torch import nn

    blocks = base.blocks
    base.blocks = nn.Sequential()
    try:
        out = copy.deepcopy(base)
    finally:
        base.blocks = blocks
    out.blocks = nn.Sequential(copy.deepcopy(blocks[0]))
    return out


def stem_model(base: Any) -> Any:
    """``base`` without blocks: patch embed, prefix and position, norm, pooling, head."""
    import copy

    from torch import nn

    blocks = base.blocks
    base.blocks = nn.Sequential()
    try:
        return copy.deepcopy(base).eval()
    finally:
        base.blocks = blocks


def part_module(one_block: Any, part: str, config: dict, device: str) -> Any:
    """The attention or MLP module of the one-block model compressed with ``config``."""
    model = compress(one_block, config, calibration=None, device=device)
    block = model.blocks[0]
    return block.attn if part == "attn" else block.mlp


def reduce_fn(method: str, n_in: int, dims: VitDims, batch: int, device: str):
    """A callable running one token-reduction step on ``n_in`` tokens (prefix included).

    The incoming count drives the cost (similarity matrix or ranking), so the step is
    timed halving the patch tokens towards the smallest share a merge allows.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    p = dims.num_prefix_tokens
    x = torch.randn(batch, n_in, dims.embed_dim, generator=g).to(device)
    n_patch = n_in - p
    target = max(1, round(0.7 * n_patch))
    if method == "merge":
        metric = torch.randn(batch, n_in, dims.head_dim, generator=g).to(device)
        size = torch.ones(batch, n_in, 1, device=device)
        r = min(n_patch - target, (n_patch + 1) // 2)
        return lambda: ops.bipartite_merge(x, metric, size, r, p)
    q = torch.randn(batch, dims.num_heads, 1, dims.head_dim, generator=g).to(device)
    k = torch.randn(batch, dims.num_heads, n_in, dims.head_dim, generator=g).to(device)
    keep = max(2, target) if n_patch > 2 else 1

    def prune():
        # EViT's extra work: the class-token attention row, then the ranking and fusing.
        row = ((q * dims.head_dim ** -0.5) @ k.transpose(-1, -2)).softmax(dim=-1).mean(dim=1)[:, 0]
        return ops.evit_prune(x, row[:, p:], min(keep, n_patch - 1) if n_patch > 1 else 1, p)
    return prune


def key_json(part: str, key: str, tokens: int) -> str:
    """Stable row key of one component measurement."""
    return json.dumps({"part": part, "key": key, "tokens": int(tokens)}, sort_keys=True)
