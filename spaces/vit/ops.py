"""Pure tensor maths of the knobs: masks, channel/head scores, token merging and pruning.

Nothing here knows timm; :mod:`vitsearch.spaces.vit.adapter` feeds these functions tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Bool mask keeping the 2 largest magnitudes in every group of 4 input columns."""
    out_f, in_f = weight.shape
    groups = weight.detach().abs().reshape(out_f, in_f // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(out_f, in_f)


def magnitude_mask(weight: torch.Tensor, share: float) -> torch.Tensor:
    """Bool mask zeroing exactly ``round(share * numel)`` smallest magnitudes of the layer."""
    flat = weight.detach().abs().flatten()
    n_zero = round(share * flat.numel())
    mask = torch.ones_like(flat, dtype=torch.bool)
    if n_zero:
        mask[flat.topk(n_zero, largest=False).indices] = False
    return mask.reshape(weight.shape)


def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores, in ascending index order (keeps layouts stable)."""
    return scores.topk(k).indices.sort().values


def group_mean(rows: torch.Tensor, heads: int, groups: int) -> torch.Tensor:
    """Mean-pool per-head row blocks ``[heads * head_dim, ...]`` into ``groups`` consecutive groups.

    Consecutive grouping matches how SDPA's ``enable_gqa`` maps query head ``h`` to
    K/V head ``h // (heads // groups)``.
    """
    tail = rows.shape[1:]
    per_head = rows.reshape(groups, heads // groups, rows.shape[0] // heads, *tail)
    return per_head.mean(dim=1).reshape(-1, *tail)


def head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of the given heads in a ``[heads * head_dim]`` layout."""
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).flatten()


def bipartite_merge(x: torch.Tensor, metric: torch.Tensor, size: torch.Tensor, r: int,
                    num_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe bipartite soft matching: merge ``r`` patch tokens into their most similar partners.

    Patch tokens alternate into sets A (even) and B (odd); each A token picks its most
    similar B token by cosine similarity of ``metric`` (attention keys); the ``r`` best
    A tokens are averaged into their B partner, weighted by ``size`` (tokens already
    merged into each). Prefix tokens stay in front, untouched. Returns ``(x, size)``.
    """
    prefix_x, patch_x = x[:, :num_prefix], x[:, num_prefix:]
    prefix_s, patch_s = size[:, :num_prefix], size[:, num_prefix:]
    metric = F.normalize(metric[:, num_prefix:].float(), dim=-1)
    a, b = metric[:, ::2], metric[:, 1::2]
    assert 0 <= r <= a.shape[1], "a merge step can remove at most |A| tokens"
    best, partner = (a @ b.transpose(-1, -2)).max(dim=-1)
    order = best.argsort(dim=-1, descending=True)[..., None]
    src_idx, unm_idx = order[:, :r], order[:, r:]
    dst_idx = partner[..., None].gather(1, src_idx)

    def merge(t: torch.Tensor) -> torch.Tensor:
        ta, tb = t[:, ::2], t[:, 1::2]
        c = t.shape[-1]
        unm = ta.gather(1, unm_idx.expand(-1, -1, c))
        src = ta.gather(1, src_idx.expand(-1, -1, c))
        tb = tb.scatter_reduce(1, dst_idx.expand(-1, -1, c), src, reduce="sum")
        return torch.cat([unm, tb], dim=1)

    merged_x = merge(patch_x * patch_s)
    merged_s = merge(patch_s)
    return (torch.cat([prefix_x, merged_x / merged_s], dim=1),
            torch.cat([prefix_s, merged_s], dim=1))


def evit_prune(x: torch.Tensor, cls_attn: torch.Tensor, keep: int, num_prefix: int) -> torch.Tensor:
    """EViT: keep the ``keep - 1`` patch tokens the class token attends to most, fuse the rest.

    ``cls_attn`` is (B, patch tokens): the class token's attention, mean over heads. The
    pruned tokens become one token, their attention-weighted average; ``keep`` counts it.
    """
    prefix, patch = x[:, :num_prefix], x[:, num_prefix:]
    n, c = patch.shape[1], patch.shape[2]
    order = cls_attn.argsort(dim=-1, descending=True)
    kept_idx = order[:, :keep - 1].sort(dim=-1).values
    rest_idx = order[:, keep - 1:]
    assert rest_idx.shape[1] >= 1 and keep - 1 < n, "prune must remove at least one token"
    kept = patch.gather(1, kept_idx[..., None].expand(-1, -1, c))
    rest = patch.gather(1, rest_idx[..., None].expand(-1, -1, c))
    weight = cls_attn.gather(1, rest_idx)[..., None].to(rest.dtype)
    fused = (rest * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1e-12)
    return torch.cat([prefix, kept, fused], dim=1)


def one_minus_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of 1 - cos(a, b): how much a block changes its input."""
    return (1 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean()

