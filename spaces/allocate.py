"""The global allocator: each block's heads and MLP width from one ranking of every structure (NViT-style).

Every prunable structure of the kept blocks - each attention head, each group of
``group`` MLP hidden channels - has a saliency (:mod:`.vit.saliency`) and a cost: its
MACs per image by default, or what the caller passes (a latency per block from a device
profile). Its score is its saliency per unit cost, divided by its type's total saliency
per total cost, so that the structures of each type score 1 on average and a head
compares with a channel group on one scale. Structures leave in ascending score order,
never a block's last head or last channel group:

- :func:`allocate`: per-type budgets, exactly ``round(share * count)`` heads and channel
  groups of the kept blocks;
- :func:`allocate_macs`: one target, a share of the kept blocks' head and MLP MACs
  (:func:`macs_share`), reached by removing across both types, lowest score first, until
  the MACs left are at or below it.

Pure and deterministic (ties go to the earlier block, then the earlier structure). The
measurement (:func:`measure`) is cached per base model, weights and calibration, so a
search pays it once.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from vitsearch.spaces.config import CompressionConfig
from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs.depth import dropped_blocks
from vitsearch.spaces.knobs.heads import HeadsConfig
from vitsearch.spaces.vit.dims import VitDims

#: MLP hidden channels per prunable group: coarse enough to keep the ranking short, and a
#: multiple of 4 and 8 so that narrowed linears still take 2:4 masks and vector kernels
GROUP = 8


@dataclass(frozen=True)
class Saliency:
    """Per-structure saliency of one base model, per base block (plain floats: pickles to Ray workers).

    ``blocks``: the block importance the depth knob ranks by, so that the allocator knows
    which blocks a ``depth.keep`` leaves, exactly as ``compress`` drops them.
    """

    heads: tuple[tuple[float, ...], ...]
    groups: tuple[tuple[float, ...], ...]
    group: int
    blocks: tuple[float, ...]
    criterion: str

    def kept(self, keep: int | None) -> list[int]:
        """Base-block indices kept by ``depth.keep`` (None: all), ascending."""
        depth = len(self.blocks)
        dropped = set(dropped_blocks(list(self.blocks), depth if keep is None else keep))
        return [i for i in range(depth) if i not in dropped]


@dataclass(frozen=True)
class Costs:
    """The cost of one structure per base block: one head, one channel group (any unit, one per type)."""

    head: tuple[float, ...]
    group: tuple[float, ...]


def mac_costs(dims: VitDims, group: int = GROUP) -> Costs:
    """MACs per image of one head (its q/k/v rows, both attention matmuls, its proj columns) and of one
    channel group (its fc1 rows and fc2 columns), on all tokens; a block's MACs are their sum."""
    n, d, e = dims.num_patches + dims.num_prefix_tokens, dims.head_dim, dims.embed_dim
    head = 3 * n * e * d + 2 * n * n * d + n * d * e
    return Costs((float(head),) * dims.depth, (float(2 * n * e * group),) * dims.depth)


@dataclass(frozen=True)
class Allocation:
    """Query heads and MLP hidden channels kept, one entry per kept block."""

    heads: tuple[int, ...]
    hidden: tuple[int, ...]

    def apply(self, config: CompressionConfig, dims: VitDims, kv: int | None = None) -> CompressionConfig:
        """``config`` with these heads and widths; each block's K/V heads: the largest divisor of its
        heads at most ``kv`` (None: no grouping). Blocks left whole are written as "unchanged"."""
        kv_heads = tuple(max(g for g in range(1, h + 1) if h % g == 0 and g <= kv) if kv else h for h in self.heads)
        heads = HeadsConfig(keep=None if set(self.heads) == {dims.num_heads} else self.heads,
                            kv_heads=None if kv_heads == self.heads else kv_heads)
        hidden = None if set(self.hidden) == {dims.mlp_hidden} else self.hidden
        return replace(config, heads=heads, sparsity=replace(config.sparsity, mlp_keep=hidden))


def allocate(saliency: Saliency, dims: VitDims, heads_removed: float = 0.0, mlp_removed: float = 0.0,
             depth_keep: int | None = None, costs: Costs | None = None) -> Allocation:
    """Remove ``round(share * count)`` of the kept blocks' heads and of their channel groups, lowest score first."""
    kept = saliency.kept(depth_keep)
    costs = costs or mac_costs(dims, saliency.group)
    heads, groups = _counts(saliency, kept)
    for name, share, rows, cost, counts in (("heads_removed", heads_removed, saliency.heads, costs.head, heads),
                                            ("mlp_removed", mlp_removed, saliency.groups, costs.group, groups)):
        total, floor = sum(counts), len(counts)
        n = round(share * total)
        if not 0.0 <= share < 1.0 or n > total - floor:
            raise ConfigError(f"allocation.{name}: {share!r} is not allowed; every kept block keeps one "
                              f"structure, so at most {total - floor} of {total} can go (a share up to "
                              f"{(total - floor) / total:.3f})")
        for _, pos, _ in _removable(_ranked(rows, cost, kept), counts, n):
            counts[pos] -= 1
    return Allocation(tuple(heads), tuple(g * saliency.group for g in groups))


def allocate_macs(saliency: Saliency, dims: VitDims, ratio: float, depth_keep: int | None = None,
                  costs: Costs | None = None) -> Allocation:
    """Remove heads and channel groups together, lowest score first, until the allocation's
    :func:`macs_share` is at most ``ratio`` (ranked by ``costs``, counted in MACs)."""
    kept = saliency.kept(depth_keep)
    macs = mac_costs(dims, saliency.group)
    costs = costs or macs
    heads, groups = _counts(saliency, kept)
    full = sum(macs.head[i] * heads[p] + macs.group[i] * groups[p] for p, i in enumerate(kept))
    left = full
    ranked = sorted([(s, p, j, "h") for s, p, j in _ranked(saliency.heads, costs.head, kept)]
                    + [(s, p, j, "g") for s, p, j in _ranked(saliency.groups, costs.group, kept)])
    target = ratio * full * (1 + 1e-9)  # the least ratio reachable, written as a share, is reached despite rounding
    for _, pos, _, kind in ranked:
        if left <= target:
            break
        counts, cost = (heads, macs.head) if kind == "h" else (groups, macs.group)
        if counts[pos] > 1:
            counts[pos] -= 1
            left -= cost[kept[pos]]
    if left > target:
        raise ConfigError(f"allocation: a MAC ratio of {ratio!r} is not allowed; keeping one head and one "
                          f"channel group per block leaves {left / full:.3f} of the block MACs")
    return Allocation(tuple(heads), tuple(g * saliency.group for g in groups))


def macs_share(dims: VitDims, heads: Sequence[int], hidden: Sequence[int], group: int = GROUP) -> float:
    """The head and MLP MACs (:func:`mac_costs`) of blocks keeping ``heads[k]`` query heads and ``hidden[k]``
    MLP hidden channels, over the same blocks whole (all heads, full width); 1.0 when nothing is removed.
    Every block costs alike, so the share does not depend on which base blocks the entries are."""
    macs = mac_costs(dims, group)
    kept = sum(macs.head[0] * h + macs.group[0] * w / group for h, w in zip(heads, hidden, strict=True))
    return kept / (len(heads) * (macs.head[0] * dims.num_heads + macs.group[0] * dims.mlp_hidden / group))


def least_macs_ratio(dims: VitDims, group: int = GROUP) -> float:
    """The smallest ratio :func:`allocate_macs` can reach: one head and one channel group per block."""
    return macs_share(dims, [1], [group], group)


def _counts(saliency: Saliency, kept: list[int]) -> tuple[list[int], list[int]]:
    return [len(saliency.heads[i]) for i in kept], [len(saliency.groups[i]) for i in kept]


def _ranked(rows: tuple[tuple[float, ...], ...], cost: tuple[float, ...],
            kept: list[int]) -> list[tuple[float, int, int]]:
    """(score, kept position, structure index) of one type, ascending: saliency per cost over the type's mean."""
    total_s = sum(sum(rows[i]) for i in kept)
    total_c = sum(cost[i] * len(rows[i]) for i in kept)
    scale = (total_s / total_c) if total_s > 0 else 1.0
    return sorted((s / cost[i] / scale, p, j) for p, i in enumerate(kept) for j, s in enumerate(rows[i]))


def _removable(ranked: list[tuple[float, int, int]], counts: list[int], n: int) -> list[tuple[float, int, int]]:
    """The first ``n`` of ``ranked`` that leave every block at least one structure."""
    left, out = list(counts), []
    for item in ranked:
        if len(out) == n:
            break
        if left[item[1]] > 1:
            left[item[1]] -= 1
            out.append(item)
    return out


# ---- measurement, cached -------------------------------------------------------------
#: base model -> {(weights and calibration digest, group, device): Saliency}; weak so models can be freed
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def measure(model: Any, calibration: Any = None, device: str = "cpu", group: int = GROUP) -> Saliency:
    """The saliency of every structure of ``model`` (a timm ViT) on ``calibration`` (None: data-free).

    Cached per model object, weights and calibration images; ConfigError when ``group``
    does not divide the MLP width.
    """
    from vitsearch.spaces.vit.adapter import check_vit
    from vitsearch.spaces.vit.importance import block_scores, calibration_batches, weights_digest
    from vitsearch.spaces.vit.saliency import labelled_batches, structure_saliency

    check_vit(model)
    hidden = model.blocks[0].mlp.fc1.out_features
    if isinstance(group, bool) or not isinstance(group, int) or group < 1 or hidden % group:
        raise ConfigError(f"allocation.group: {group!r} is not allowed; it must divide the MLP width {hidden} "
                          "(e.g. 8 or 16)")
    batches = calibration_batches(calibration)
    labelled = [] if calibration is None else labelled_batches(calibration)
    data = [t.float() for pair in labelled for t in pair if t is not None]  # labels change the loss: part of the key
    digest = weights_digest(model, data if labelled else None)
    key = (digest, group, str(device))
    try:
        per_model = _CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        per_model = {}
    if key not in per_model:
        heads, groups, criterion = structure_saliency(model, calibration, str(device), group)
        blocks, _ = block_scores(model, batches, str(device))
        per_model[key] = Saliency(tuple(map(tuple, heads)), tuple(map(tuple, groups)), group,
                                  tuple(float(b) for b in blocks), criterion)
    return per_model[key]
