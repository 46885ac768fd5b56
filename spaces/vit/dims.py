"""The dimensions of a timm ViT: the one record the space, the MACs and the latency profile read.

Read once from the base model (:meth:`VitDims.of`). The block fields (width, heads, head
dim, MLP hidden width, depth, patch and prefix tokens) are what a block's cost and the
search space depend on; the stem and head fields (input channels, patch area, classes,
classifier heads) only the MACs need, and are None where the dims were read back from a
latency profile, which stores the block fields alone (:meth:`VitDims.block_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from vitsearch.spaces.errors import ModelError

#: The fields a block's cost depends on, in the order a profile stores them.
BLOCK_FIELDS = ("embed_dim", "num_heads", "head_dim", "mlp_hidden", "depth", "num_patches", "num_prefix_tokens")


@dataclass(frozen=True)
class VitDims:
    """Plain ints (JSON round trip); ``num_patches`` at the model's native input size."""

    embed_dim: int
    num_heads: int
    head_dim: int
    mlp_hidden: int
    depth: int
    num_patches: int
    num_prefix_tokens: int
    in_chans: int | None = None
    patch_area: int | None = None
    num_classes: int | None = None
    num_heads_out: int | None = None  # classifier heads: 2 for DeiT-distilled (head + head_dist)

    @classmethod
    def of(cls, model: Any) -> "VitDims":
        """Read every field from a timm ``VisionTransformer``; ModelError (one line) for another layout."""
        from torch import nn

        try:
            attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
            conv = model.patch_embed.proj
            grid = model.patch_embed.grid_size
            heads = [h for h in (getattr(model, "head", None), getattr(model, "head_dist", None))
                     if isinstance(h, nn.Linear)]
            return cls(
                embed_dim=int(model.embed_dim), num_heads=int(attn.num_heads), head_dim=int(attn.head_dim),
                mlp_hidden=int(mlp.fc1.out_features), depth=len(model.blocks), num_patches=int(grid[0] * grid[1]),
                num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 1)), in_chans=int(conv.in_channels),
                patch_area=int(conv.kernel_size[0] * conv.kernel_size[1]),
                num_classes=int(heads[0].out_features) if heads else 0, num_heads_out=len(heads))
        except (AttributeError, IndexError, TypeError) as exc:
            raise ModelError(
                f"model: {type(model).__name__} lacks the timm VisionTransformer layout (blocks, patch_embed, "
                f"attn, mlp) its dimensions are read from ({exc}); pass a timm ViT base model") from None

    def block_dict(self) -> dict[str, int]:
        """The block fields as a dict: what a latency profile and predictor store (and compare)."""
        return {k: getattr(self, k) for k in BLOCK_FIELDS}

    def to_dict(self) -> dict[str, int]:
        """Every field that is set."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VitDims":
        """Inverse of :meth:`to_dict` and :meth:`block_dict` (the stem and head fields may be absent)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
