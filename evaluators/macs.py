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

from dataclasses import dataclass
from typing import Any

from torch import nn

from vitsearch.spaces.errors import ModelError


@dataclass(frozen=True)
class VitDims:
    """The dimensions of a timm ViT that its MACs depend on."""

    embed_dim: int
    num_heads: int
    head_dim: int
    mlp_hidden: int
    depth: int
    num_prefix_tokens: int
    num_patches: int
    in_chans: int
    patch_area: int
    num_classes: int
    num_heads_out: int  # classifier heads: 2 for DeiT-distilled (head + head_dist)


def vit_dims(model: nn.Module) -> VitDims:
    """Read :class:`VitDims` from a timm ``VisionTransformer`` (the base model)."""
    try:
        attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
        conv = model.patch_embed.proj
        grid = model.patch_embed.grid_size
        heads = [h for h in (getattr(model, "head", None), getattr(model, "head_dist", None)) if isinstance(h, nn.Linear)]
        return VitDims(
            embed_dim=model.embed_dim, num_heads=attn.num_heads, head_dim=attn.head_dim,
            mlp_hidden=mlp.fc1.out_features, depth=len(model.blocks),
            num_prefix_tokens=model.num_prefix_tokens, num_patches=grid[0] * grid[1],
            in_chans=conv.in_channels, patch_area=conv.kernel_size[0] * conv.kernel_size[1],
            num_classes=heads[0].out_features if heads else 0, num_heads_out=len(heads),
        )
    except (AttributeError, IndexError, TypeError) as exc:
        raise ModelError(
            f"model: {type(model).__name__} lacks the timm VisionTransformer layout MACs are computed from ({exc}); "
            "pass the uncompressed timm ViT base model"
        ) from None


def analytic_macs(base_model: nn.Module, config: Any = None) -> int:
    """MACs of one image, at the base model's native input size, through
    ``compress(base_model, config)`` (config None or {} = the base model itself)."""
    from vitsearch.spaces import CompressionConfig, tokens_per_block

    config = CompressionConfig() if config is None else config
    if isinstance(config, dict):
        config = CompressionConfig.from_dict(config)
    dims = vit_dims(base_model)
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
