"""Saliency of every prunable structure of a timm ViT: each attention head, each group of MLP channels.

A structure's output is a slice of an activation: a head's ``head_dim`` entries of the
input of ``attn.proj``, a channel group's entries of the input of ``mlp.fc2``. Removing
it zeroes that slice, which changes image ``i``'s loss by about
``t_i = -<a, dL_i/da>`` over the slice (first-order Taylor). The saliency is NViT's
Hessian-aware estimate ``sum_i t_i ** 2`` (the Fisher approximation of the second-order
term; it does not cancel where the summed first-order term does, as on a model at a
minimum of its loss). The loss is the cross-entropy on the calibration labels, or on
the model's own predictions where the calibration holds images only.

Without calibration data the saliency is data-free: a head's ``||W_o W_v||`` and a
channel group's summed ``||fc1 row|| * ||fc2 column||`` (the importance criteria of
:mod:`.importance`). Scales differ between the two criteria and between structure
types; :mod:`vitsearch.spaces.allocate` normalises per type before ranking.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vitsearch.spaces.errors import DataError
from vitsearch.spaces.vit.importance import CALIBRATION, DATA_FREE, MAX_CALIBRATION_IMAGES, _ov_norms

#: images the saliency is estimated on (the gradients need a backward pass: a few batches suffice)
SALIENCY_IMAGES = 2 * MAX_CALIBRATION_IMAGES
BATCH = 32


def structure_saliency(model: nn.Module, calibration: Any, device: str,
                       group: int) -> tuple[list[list[float]], list[list[float]], str]:
    """(per block per head, per block per channel group of ``group`` channels, criterion) of ``model``.

    ``calibration``: a (N, C, H, W) tensor, a Dataset of (image, label) items, an iterable
    of such batches, or None (data-free). The model is left as it was (eval mode, no
    parameter gradients written).
    """
    blocks = list(model.blocks)
    if calibration is None:
        heads = [_ov_norms(b.attn).tolist() for b in blocks]
        mlp = [_group_sum(_channel_norms(b.mlp), group).tolist() for b in blocks]
        return heads, mlp, DATA_FREE
    heads = [torch.zeros(b.attn.num_heads, dtype=torch.float64) for b in blocks]
    mlp = [torch.zeros(b.mlp.fc1.out_features // group, dtype=torch.float64) for b in blocks]
    was_training = model.training
    model.eval()
    try:
        for images, labels in labelled_batches(calibration):
            _accumulate(model, images.to(device), labels, heads, mlp, group)
    finally:
        model.train(was_training)
    return [h.tolist() for h in heads], [m.tolist() for m in mlp], CALIBRATION


def _accumulate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
                heads: list[torch.Tensor], mlp: list[torch.Tensor], group: int) -> None:
    """Add ``sum_i t_i ** 2`` of one batch to every structure's total."""
    seen: list[torch.Tensor] = []

    def keep(_module, args):
        seen.append(args[0])

    handles = [m.register_forward_pre_hook(keep) for b in model.blocks for m in (b.attn.proj, b.mlp.fc2)]
    try:
        with torch.enable_grad():
            logits = model(images.detach().requires_grad_(True))
            target = logits.argmax(-1) if labels is None else labels.to(logits.device)
            loss = F.cross_entropy(logits.float(), target, reduction="sum")  # per-image gradients stay apart
            grads = torch.autograd.grad(loss, seen)
    finally:
        for h in handles:
            h.remove()
    for i, block in enumerate(model.blocks):
        a, g = seen[2 * i].detach().double(), grads[2 * i].double()
        t = (a * g).sum(1).reshape(a.shape[0], block.attn.num_heads, -1).sum(-1)  # (images, heads)
        heads[i] += t.pow(2).sum(0).cpu()
        a, g = seen[2 * i + 1].detach().double(), grads[2 * i + 1].double()
        t = _group_sum((a * g).sum(1), group)  # (images, groups)
        mlp[i] += t.pow(2).sum(0).cpu()


def _group_sum(x: torch.Tensor, group: int) -> torch.Tensor:
    """Sum over consecutive channels of the last dimension, ``group`` at a time."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // group, group).sum(-1)


@torch.no_grad()
def _channel_norms(mlp: nn.Module) -> torch.Tensor:
    return mlp.fc1.weight.detach().float().norm(dim=1).cpu() * mlp.fc2.weight.detach().float().norm(dim=0).cpu()


def labelled_batches(calibration: Any, limit: int = SALIENCY_IMAGES) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Up to ``limit`` calibration images in batches of :data:`BATCH`, with their labels where given."""
    images, labels = _collect(calibration, limit)
    if images is None or images.ndim != 4 or not len(images):
        raise DataError(f"calibration: {type(calibration).__name__} gave no image batches; pass a (N, C, H, W) "
                        "tensor, a Dataset of (image, label) items, or an iterable of such batches")
    images = images.float()
    parts = images.split(BATCH)
    targets = [None] * len(parts) if labels is None else list(labels.long().split(BATCH))
    return list(zip(parts, targets))


def _collect(calibration: Any, limit: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if isinstance(calibration, torch.Tensor):
        return calibration[:limit], None
    if hasattr(calibration, "__getitem__") and hasattr(calibration, "__len__"):
        items = [calibration[i] for i in range(min(len(calibration), limit))]
    elif isinstance(calibration, Iterable):
        items, seen = [], 0
        for batch in calibration:
            items.append(batch)
            seen += len(batch[0] if isinstance(batch, (tuple, list)) else batch)
            if seen >= limit:
                break
        return _stack(items, batched=True, limit=limit)
    else:
        return None, None
    return _stack(items, batched=False, limit=limit)


def _stack(items: list, batched: bool, limit: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if not items:
        return None, None
    pairs = all(isinstance(it, (tuple, list)) and len(it) >= 2 for it in items)
    join = torch.cat if batched else torch.stack
    images = join([torch.as_tensor(it[0] if pairs else it) for it in items])[:limit]
    labels = join([torch.as_tensor(it[1]) for it in items])[:limit] if pairs else None
    return images, labels
