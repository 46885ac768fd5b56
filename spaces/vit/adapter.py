"""The one adapter that knows timm VisionTransformer insides.

Block / Attention / Mlp / LayerScale layout, prefix (class + register) tokens and the
fused attention path live here; the knob handlers call these helpers and the pure maths
in :mod:`vitsearch.spaces.vit.ops`. Patched modules are swapped for module-level classes
(no closures, no shared mutable state) so compressed models pickle for Ray.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from vitsearch.spaces.vit import ops
from vitsearch.spaces.vit.counts import reduced_count
from vitsearch.spaces.errors import ModelError

PART_LINEARS = {"attn": ("qkv", "proj"), "mlp": ("fc1", "fc2")}


def check_vit(model: nn.Module) -> None:
    """Refuse models whose blocks are not timm's standard pre-norm ``Block``."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise ModelError(f"model: a {type(model).__name__} is not supported; compress() takes timm "
                         "VisionTransformer-family models (vit_*, deit_*, the built-in vitsearch-tiny)")
    for i, blk in enumerate(model.blocks):
        if not isinstance(blk, Block):
            raise ModelError(f"model.blocks[{i}]: a {type(blk).__name__} is not supported; the knobs need timm's "
                             "pre-norm Block (attn, mlp, ls1/ls2) as in vit_* and deit_* models")


def num_prefix_tokens(model: nn.Module) -> int:
    """Class + register tokens, never merged or pruned."""
    return int(getattr(model, "num_prefix_tokens", 1))


def num_patch_tokens(model: nn.Module) -> int:
    """Patch tokens at the model's native input size."""
    return int(model.patch_embed.num_patches)


def part_linears(block: nn.Module, part: str) -> dict[str, nn.Linear]:
    """The linears of ``attn`` (qkv, proj) or ``mlp`` (fc1, fc2) of one block."""
    owner = block.attn if part == "attn" else block.mlp
    found = {name: getattr(owner, name, None) for name in PART_LINEARS[part]}
    for name, lin in found.items():
        if not isinstance(lin, nn.Linear):
            raise ModelError(f"{part}.{name}: a {type(lin).__name__} is not supported; expected nn.Linear "
                             "(timm Attention / Mlp layout)")
    return found


class VitsearchAttention(nn.Module):
    """timm ``Attention`` with grouped K/V heads, a token-size bias and token scores.

    ``qkv`` rows are laid out ``[q: num_heads, k: num_kv_heads, v: num_kv_heads] x head_dim``;
    with ``num_kv_heads == num_heads`` that is exactly timm's ``[3, heads, head_dim]``, so
    an unchanged conversion computes the same numbers. Attention runs through fused
    ``scaled_dot_product_attention`` (``enable_gqa`` when grouped).
    """

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        if getattr(attn, "gate", None) is not None or not isinstance(attn.norm, nn.Identity):
            raise ModelError("attn: gated or scale-normed attention is not supported by the heads/tokens knobs")
        self.num_heads = attn.num_heads
        self.num_kv_heads = getattr(attn, "num_kv_heads", attn.num_heads)
        self.head_dim = attn.head_dim
        self.scale = attn.head_dim ** -0.5
        self.qkv, self.proj = attn.qkv, attn.proj
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.attn_drop, self.proj_drop = attn.attn_drop, attn.proj_drop

    @property
    def attn_dim(self) -> int:
        """Width of the attention output entering ``proj``."""
        return self.num_heads * self.head_dim

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                size_bias: torch.Tensor | None = None, need: str | None = None):
        """Attention output; with ``need`` ('merge' or 'prune') also the token scores."""
        B, N, _ = x.shape
        H, G, D = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * D, G * D, G * D], dim=-1)
        q = q.view(B, N, H, D).transpose(1, 2)
        k = k.view(B, N, G, D).transpose(1, 2)
        v = v.view(B, N, G, D).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        mask = attn_mask
        if size_bias is not None:
            mask = size_bias.to(q.dtype) if mask is None else mask + size_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=G != H,
            dropout_p=self.attn_drop.p if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, H * D)))
        if need is None:
            return out
        if need == "merge":  # ToMe's similarity metric: keys averaged over heads
            return out, k.mean(dim=1)
        # EViT: only the class-token row of the attention map, computed apart so the
        # rest stays on the fused kernel.
        logits = (q[:, :, :1] * self.scale) @ k.repeat_interleave(H // G, dim=1).transpose(-1, -2)
        if mask is not None:
            logits = logits + mask[..., :1, :]
        return out, logits.softmax(dim=-1).mean(dim=1)[:, 0]


def to_vitsearch_attention(block: nn.Module) -> VitsearchAttention:
    """Replace ``block.attn`` by an equivalent :class:`VitsearchAttention` (idempotent)."""
    if not isinstance(block.attn, VitsearchAttention):
        block.attn = VitsearchAttention(block.attn)
    return block.attn


def prune_heads(attn: VitsearchAttention, keep: torch.Tensor) -> None:
    """Keep query heads ``keep`` (indices, ascending) with their K/V heads; slice qkv rows and proj columns."""
    H, D = attn.num_heads, attn.head_dim
    assert attn.num_kv_heads == H, "prune heads before grouping K/V"
    rows = ops.head_rows(keep, D)
    qkv_rows = torch.cat([rows, rows + H * D, rows + 2 * H * D])
    attn.qkv = _slice_linear(attn.qkv, out_idx=qkv_rows)
    attn.proj = _slice_linear(attn.proj, in_idx=rows)
    attn.num_heads = attn.num_kv_heads = len(keep)


def group_kv(attn: VitsearchAttention, groups: int) -> None:
    """Mean-pool the K and V projections of consecutive heads into ``groups`` K/V heads (GQA)."""
    H, D = attn.num_heads, attn.head_dim
    w = attn.qkv.weight.data
    b = attn.qkv.bias.data if attn.qkv.bias is not None else None
    q, k, v = w[:H * D], w[H * D:2 * H * D], w[2 * H * D:]
    new = nn.Linear(w.shape[1], (H + 2 * groups) * D, bias=b is not None, device=w.device, dtype=w.dtype)
    new.weight.data = torch.cat([q, ops.group_mean(k, H, groups), ops.group_mean(v, H, groups)])
    if b is not None:
        bq, bk, bv = b[:H * D], b[H * D:2 * H * D], b[2 * H * D:]
        new.bias.data = torch.cat([bq, ops.group_mean(bk, H, groups), ops.group_mean(bv, H, groups)])
    attn.qkv = new
    attn.num_kv_heads = groups


def shrink_mlp(mlp: nn.Module, keep: torch.Tensor) -> None:
    """Keep hidden channels ``keep``: rows of fc1, columns of fc2 (and a hidden-norm's entries)."""
    if not isinstance(mlp.norm, nn.Identity):
        raise ModelError("mlp.norm: MLPs with a hidden-layer norm are not supported by structured pruning")
    mlp.fc1 = _slice_linear(mlp.fc1, out_idx=keep)
    mlp.fc2 = _slice_linear(mlp.fc2, in_idx=keep)


def _slice_linear(lin: nn.Linear, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.data
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    new.weight.data = w.contiguous()
    if lin.bias is not None:
        new.bias.data = (lin.bias.data[out_idx] if out_idx is not None else lin.bias.data).clone()
    return new


class TokenBlocks(nn.Sequential):
    """``model.blocks`` that carries ToMe token sizes from block to block within one call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = None
        for blk in self:
            if isinstance(blk, TokenBlock):
                x, size = blk.forward_tokens(x, size)
            else:
                x = blk(x)
        return x


class TokenBlock(Block):
    """timm ``Block`` whose MLP sees a reduced token set (set via :func:`to_token_block`)."""

    token_share: float | None = None
    token_method: str = "merge"
    prefix_tokens: int = 1

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        return self.forward_tokens(x, None)[0]

    def forward_tokens(self, x: torch.Tensor, size: torch.Tensor | None):
        """One block on ``x``; ``size`` (B, N, 1) counts tokens merged into each (None = all 1)."""
        n = x.shape[1] - self.prefix_tokens
        target = n if self.token_share is None else reduced_count(n, self.token_share)
        need = self.token_method if target < n else None
        bias = None if size is None else size.log().transpose(1, 2)[:, None]  # proportional attention
        res = self.attn(self.norm1(x), size_bias=bias, need=need)
        out, score = res if need else (res, None)
        x = x + self.drop_path1(self.ls1(out))
        if need == "merge":
            if size is None:
                size = torch.ones(x.shape[0], x.shape[1], 1, dtype=x.dtype, device=x.device)
            x, size = ops.bipartite_merge(x, score, size, n - target, self.prefix_tokens)
        elif need == "prune":
            x = ops.evit_prune(x, score[:, self.prefix_tokens:], target, self.prefix_tokens)
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, size


def to_token_block(block: nn.Module, share: float | None, method: str, prefix: int) -> TokenBlock:
    """Swap ``block``'s class for :class:`TokenBlock` in place (same parameters)."""
    to_vitsearch_attention(block)
    block.__class__ = TokenBlock
    block.token_share, block.token_method, block.prefix_tokens = share, method, prefix
    return block
