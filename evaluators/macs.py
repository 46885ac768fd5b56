"""Analytic multiply-accumulates of a (compressed) timm ViT, per image.

Counted from the base model's dimensions and a ``CompressionConfig``: the patch-embed
convolution; per kept block (:func:`vitsearch.spaces.blocks.block_shapes`, one
:class:`~vitsearch.spaces.vit.blocks.BlockShape` each) with ``N_a`` tokens entering
attention and ``N_m`` entering the MLP, ``H_q`` query heads, ``G`` K/V heads, head dim
``d``, width ``D`` and MLP hidden width ``F``:

- qkv:        N_a * D * (H_q + 2 G) * d
- attention:  2 * H_q * N_a * N_a * d        (q @ k^T and attn @ v)
- proj:       N_a * H_q * d * D
- fc1, fc2:   2 * N_m * D * F                (F after structured pruning:
                                              max(1, round(F * (1 - p))), or the
                                              block's own ``sparsity.mlp_keep``)

and the classifier head(s) on the pooled feature (``D * num_classes`` each). Only
matmuls and convolutions are counted - norms, softmax, GELU, token matching and the
token-reduction bookkeeping are not - which is what
``torch.utils.flop_counter.FlopCounterMode`` counts too (its flops = 2 x MACs).
Masked sparsity (2:4, unstructured) and precision leave the count unchanged: they
change how the MACs run, not how many the network shape asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vitsearch.spaces.blocks import block_shapes
from vitsearch.spaces.config import CompressionConfig
from vitsearch.spaces.knobs.sparsity import structured_width
from vitsearch.spaces.vit.blocks import BlockShape
from vitsearch.spaces.vit.dims import VitDims

if TYPE_CHECKING:
    from torch import nn


def analytic_macs(base_model: nn.Module, config: Any = None) -> int:
    """MACs of one image, at the base model's native input size, through
    ``compress(base_model, config)`` (config None or {} = the base model itself)."""
    config = CompressionConfig() if config is None else config
    if isinstance(config, dict):
        config = CompressionConfig.from_dict(config)
    dims = VitDims.of(base_model)
    return config_macs(config, dims)


def config_macs(config: CompressionConfig, dims: VitDims) -> int:
    """MACs of one image through a model of ``dims`` compressed with ``config`` (dims with the stem and head fields)."""
    macs = patch_embed_macs(dims) + dims.num_heads_out * dims.embed_dim * dims.num_classes
    for block in block_shapes(config, dims):
        macs += block_macs(block)
    return macs


def patch_embed_macs(dims: VitDims) -> int:
    """The patch-embed convolution: one D x (C * k * k) matmul per patch."""
    return dims.num_patches * dims.embed_dim * dims.in_chans * dims.patch_area


def block_macs(block: BlockShape) -> int:
    """MACs of one transformer block (formulas in the module docstring)."""
    b = block
    qkv = b.n_attn * b.embed_dim * (b.q_heads + 2 * b.kv_heads) * b.head_dim
    attention = 2 * b.q_heads * b.n_attn * b.n_attn * b.head_dim
    proj = b.n_attn * b.q_heads * b.head_dim * b.embed_dim
    mlp = 2 * b.n_mlp * b.embed_dim * b.mlp_hidden
    return qkv + attention + proj + mlp


def mlp_hidden_kept(hidden: int, config: Any) -> int:
    """MLP hidden width after structured pruning: ``max(1, round(hidden * (1 - p)))`` (a config that sets
    the widths per block, ``sparsity.mlp_keep``, has one per block: read them from ``block_shapes``)."""
    assert config.sparsity.mlp_keep is None, "a per-block config has one width per block: read block_shapes"
    kind, p = config.sparsity.part("mlp")
    return structured_width(hidden, p) if kind == "structured" else hidden
