"""The cost structure of a ViT block: what its attention and MLP compute, on how many tokens, in which format.

One :class:`BlockShape` per kept block. :func:`base_blocks` gives the uncompressed model's
list; each knob rewrites it (``vitsearch.spaces.blocks.block_shapes``), and the MACs and
the latency predictor's structural features read the result, block by block, so that a
knob set per block changes the list and nothing that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, NamedTuple

from vitsearch.spaces.vit.dims import VitDims


class PerPart(NamedTuple):
    """One value per part of a block: its attention (qkv, proj) and its MLP (fc1, fc2)."""

    attn: str
    mlp: str


@dataclass(frozen=True)
class BlockShape:
    """One kept block. Token counts include the prefix tokens.

    ``token_share`` is the share of patch tokens the block keeps after its attention
    (None: no reduction step scheduled there); ``token_method`` is how a scheduled step
    reduces them. ``precision`` and ``sparsity`` are the knobs' spellings per part.
    """

    embed_dim: int
    head_dim: int
    q_heads: int
    kv_heads: int
    mlp_hidden: int
    n_attn: int
    n_mlp: int
    precision: PerPart = PerPart("fp32", "fp32")
    sparsity: PerPart = PerPart("dense", "dense")
    token_method: str = "merge"
    token_share: float | None = None


def base_blocks(dims: VitDims) -> list[BlockShape]:
    """The uncompressed model's blocks: every one alike, on all patch and prefix tokens, fp32 and dense."""
    n = dims.num_patches + dims.num_prefix_tokens
    block = BlockShape(embed_dim=dims.embed_dim, head_dim=dims.head_dim, q_heads=dims.num_heads,
                       kv_heads=dims.num_heads, mlp_hidden=dims.mlp_hidden, n_attn=n, n_mlp=n)
    return [block] * dims.depth


def each_block(blocks: list[BlockShape], change: Callable[[BlockShape], BlockShape]) -> list[BlockShape]:
    """``change`` applied to every block, once per distinct block object (a uniform list holds one)."""
    done: dict[int, BlockShape] = {}
    for b in blocks:
        if id(b) not in done:
            done[id(b)] = change(b)
    return [done[id(b)] for b in blocks]


def with_fields(blocks: list[BlockShape], per_block: list[dict[str, Any]]) -> list[BlockShape]:
    """Each block with its own field values, built once per distinct (block, values) pair."""
    done: dict[tuple, BlockShape] = {}
    out = []
    for b, values in zip(blocks, per_block):
        key = (id(b), *values.items())
        if key not in done:
            done[key] = replace(b, **values)
        out.append(done[key])
    return out
