"""Importance scores for ranking blocks, heads and MLP channels.

With calibration batches the scores are measured on data; without, they come from the
weights alone (data-free), so ``compress`` works on any bare timm ViT. Every function
returns its scores and the criterion name that ends up in ``model.vitsearch_info``.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from vitsearch.spaces.vit import ops
from vitsearch.spaces.errors import DataError

MAX_CALIBRATION_IMAGES = 64  # ranking needs a rough order, not a precise estimate
CALIBRATION = "calibration"
DATA_FREE = "data-free"


def calibration_batches(calibration: Any, batch_size: int = 32) -> list[torch.Tensor] | None:
    """Normalise a tensor, Dataset, DataLoader or iterable of batches into image batches."""
    if calibration is None:
        return None
    if isinstance(calibration, torch.Tensor):
        images = calibration[:MAX_CALIBRATION_IMAGES]
    elif hasattr(calibration, "__getitem__") and hasattr(calibration, "__len__"):
        n = min(len(calibration), MAX_CALIBRATION_IMAGES)
        images = torch.stack([_image(calibration[i]) for i in range(n)]) if n else None
    elif isinstance(calibration, Iterable):
        parts, seen = [], 0
        for batch in calibration:
            parts.append(_image(batch))
            seen += len(parts[-1])
            if seen >= MAX_CALIBRATION_IMAGES:
                break
        images = torch.cat(parts)[:MAX_CALIBRATION_IMAGES] if parts else None
    else:
        images = None
    if images is None or not isinstance(images, torch.Tensor) or images.ndim != 4 or not len(images):
        raise DataError(f"calibration: {type(calibration).__name__} gave no image batches; pass a (N, C, H, W) "
                        "tensor, a Dataset of (image, label) items, or an iterable of such batches")
    return list(images.float().split(batch_size))


def _image(item: Any) -> torch.Tensor:
    return item[0] if isinstance(item, (tuple, list)) else item


def weights_digest(model: nn.Module, batches: list[torch.Tensor] | None) -> tuple:
    """Cheap content hash of the weights (and calibration data) for ranking caches."""
    with torch.no_grad():
        w = tuple(round(float(p.double().abs().sum()), 6) for p in model.parameters())
        d = None if batches is None else tuple((tuple(b.shape), round(float(b.double().sum()), 6)) for b in batches)
    return w, d


def _run(model: nn.Module, batches: list[torch.Tensor], device: str) -> None:
    model.eval()
    with torch.no_grad():
        for b in batches:
            model(b.to(device))


def block_scores(model: nn.Module, batches: list[torch.Tensor] | None, device: str) -> tuple[list[float], str]:
    """Per-block importance: 1 - cos(input, output) on data, or residual-branch weight gain."""
    blocks = list(model.blocks)
    if batches is None:
        return [_block_weight_gain(b) for b in blocks], DATA_FREE
    totals = [0.0] * len(blocks)

    def hook(i):
        def fn(_mod, args, out):
            totals[i] += float(ops.one_minus_cosine(args[0], out))
        return fn
    _run_hooked(model, batches, device, [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)])
    return totals, CALIBRATION


def _run_hooked(model: nn.Module, batches, device: str, handles: list) -> None:
    """Run the calibration batches with the given hooks installed, then remove them."""
    try:
        _run(model, batches, device)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _block_weight_gain(block: nn.Module) -> float:
    # How strongly each residual branch can move the stream: the norm of its linear
    # maps (LayerNorm scale -> V -> proj, LayerNorm scale -> fc1 -> fc2; softmax and
    # GELU ignored) times its LayerScale.
    attn, mlp = block.attn, block.mlp
    ov = attn.proj.weight @ _value_rows(attn) * _ln_scale(block.norm1)
    ff = mlp.fc2.weight @ mlp.fc1.weight * _ln_scale(block.norm2)
    return float(_ls(block.ls1, ov).norm() + _ls(block.ls2, ff).norm())


def _ln_scale(norm: nn.Module) -> torch.Tensor | float:
    weight = getattr(norm, "weight", None)
    return 1.0 if weight is None else weight.detach()[None, :]


def _ls(ls: nn.Module, w: torch.Tensor) -> torch.Tensor:
    gamma = getattr(ls, "gamma", None)
    return w if gamma is None else gamma[:, None] * w


def head_scores(model: nn.Module, batches: list[torch.Tensor] | None, device: str) -> tuple[list[torch.Tensor], str]:
    """Per block, per query head: norm of the head's contribution through ``proj``."""
    attns = [b.attn for b in model.blocks]
    if batches is None:
        return [_ov_norms(a) for a in attns], DATA_FREE
    totals = [torch.zeros(a.num_heads) for a in attns]

    def hook(i, attn):
        def fn(_mod, args):
            x = args[0].float()
            heads = x.reshape(*x.shape[:-1], attn.num_heads, attn.head_dim)
            w = attn.proj.weight.float().reshape(-1, attn.num_heads, attn.head_dim)
            contrib = torch.einsum("bnhd,ohd->bnho", heads, w)
            totals[i].add_(contrib.norm(dim=-1).mean(dim=(0, 1)).cpu())
        return fn
    _run_hooked(model, batches, device, [a.proj.register_forward_pre_hook(hook(i, a)) for i, a in enumerate(attns)])
    return totals, CALIBRATION


def _value_rows(attn: nn.Module) -> torch.Tensor:
    """V projection rows, one block of ``head_dim`` rows per query head (GQA expanded)."""
    heads, d = attn.num_heads, attn.head_dim
    groups = getattr(attn, "num_kv_heads", heads)
    w_v = attn.qkv.weight.detach()[-groups * d:].reshape(groups, d, -1)
    return w_v.repeat_interleave(heads // groups, dim=0).reshape(heads * d, -1)


def _ov_norms(attn: nn.Module) -> torch.Tensor:
    heads, d = attn.num_heads, attn.head_dim
    w_v = _value_rows(attn).reshape(heads, d, -1)
    w_o = attn.proj.weight.detach().reshape(-1, heads, d).transpose(0, 1)
    return torch.stack([(w_o[h] @ w_v[h]).norm() for h in range(heads)])


def channel_scores(model: nn.Module, batches: list[torch.Tensor] | None, device: str) -> tuple[list[torch.Tensor], str]:
    """Per block, per MLP hidden channel: mean |activation| x norm of its fc2 column."""
    mlps = [b.mlp for b in model.blocks]
    out_norms = [m.fc2.weight.detach().float().norm(dim=0).cpu() for m in mlps]
    if batches is None:
        return [m.fc1.weight.detach().float().norm(dim=1).cpu() * o for m, o in zip(mlps, out_norms)], DATA_FREE
    totals = [torch.zeros(m.fc1.out_features) for m in mlps]

    def hook(i):
        def fn(_mod, args):
            totals[i].add_(args[0].detach().float().abs().flatten(0, -2).mean(0).cpu())
        return fn
    handles = [m.fc2.register_forward_pre_hook(hook(i)) for i, m in enumerate(mlps)]
    try:
        _run(model, batches, device)
    finally:
        for h in handles:
            h.remove()
    return [t * o for t, o in zip(totals, out_norms)], CALIBRATION
