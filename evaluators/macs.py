"""Analytic multiply-accumulates of a (compressed) timm ViT, per image.

Counted from the base model's dimensions and a ``CompressionConfig``: the patch-embed
convolution; per kept block with ``N_a`` tokens entering attention and ``N_m`` entering
the MLP (:func:`vitsearch.spaces.tokens_per_block`), ``H_q`` query heads, ``G`` K/V
heads, head dim ``d``, width ``D`` and MLP hidden width ``F``:

- qkv:        N_a * D * (H_q + 2 G) * d
- attention:  2 * H_q * N_a * N_a * d        (q @ k^T and attn @ v)
- proj:       N_a * H_q * d * D
- fc1, fc2:   2 * N_m * D * F                (F after structured pruning:
                                              max(1, round(F * (1 - p))))

and the classifier head(s) on the pooled feature (``D * num_classes`` each). Only
matmuls and convolutions are counted - norms, softmax, GELU, token matching and the
token-reduction bookkeeping are not - which is what
``torch.utils.flop_counter.FlopCounterMode`` counts too (its flops = 2 x MACs).
Masked sparsity (2:4, unstructured) and precision leave the count unchanged: they
change how the MACs run, not how many the network shape asks for.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vitsearch.spaces.vit.dims import VitDims


def analytic_macs(base_model: nn.Module, config: Any = None) -> int:
    """MACs of one image, at the base model's native input size, through
    ``compress(base_model, config)`` (config None or {} = the base model itself)."""
    from vitsearch.spaces import CompressionConfig, tokens_per_block

    config = CompressionConfig() if config is None else config
    if isinstance(config, dict):
        config = CompressionConfig.from_dict(config)
    dims = VitDims.of(base_model)
    h_q = config.heads.keep or dims.num_heads
    g = config.heads.kv_heads or h_q
    hidden = mlp_hidden_kept(dims.mlp_hidden, config)
    macs = patch_embed_macs(dims) + dims.num_heads_out * dims.embed_dim * dims.num_classes
    for n_attn, n_mlp in tokens_per_block(config, dims.num_patches, dims.num_prefix_tokens, dims.depth):
        macs += block_macs(dims.embed_dim, dims.head_dim, h_q, g, hidden, n_attn, n_mlp)
    return macs


def patch_embed_macs(dims: VitDims) -> int:
    """The patch-embed convolution: one D x (C * k * k) matmul per patch."""
    return dims.num_patches * dims.embed_dim * dims.in_chans * dims.patch_area


def block_macs(embed_dim: int, head_dim: int, q_heads: int, kv_heads: int, hidden: int,
               n_attn: int, n_mlp: int) -> int:
    """MACs of one transformer block (formulas in the module docstring)."""
    qkv = n_attn * embed_dim * (q_heads + 2 * kv_heads) * head_dim
    attention = 2 * q_heads * n_attn * n_attn * head_dim
    proj = n_attn * q_heads * head_dim * embed_dim
    mlp = 2 * n_mlp * embed_dim * hidden
    return qkv + attention + proj + mlp


def mlp_hidden_kept(hidden: int, config: Any) -> int:
    """MLP hidden width after structured pruning: ``max(1, round(hidden * (1 - p)))``."""
    kind, p = config.sparsity.part("mlp")
    return max(1, round(hidden * (1 - p))) if kind == "structured" else hidden
