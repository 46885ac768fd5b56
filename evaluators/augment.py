"""Augmentations for distillation: the teacher and the student see the same altered batch.

A student distilled only on the training images matches its teacher where the teacher
was trained, where the teacher's answer is near one-hot and tells little beyond the
label. Altering the batch before both models see it (Beyer et al., "Knowledge
distillation: a good teacher is patient and consistent", CVPR 2022: *function
matching*) makes the student match the teacher's function around those images too.
Pure tensor maths on a normalised batch (N, C, H, W), seeded by the caller's generator:

* ``shift``: each image moved by up to :data:`SHIFT_PX` pixels in each direction, the
  border repeated (a digit or an object moved within its frame);
* ``mixup``: each image blended with another of the batch, one weight per batch,
  uniform in [0, 1] (Beta(1, 1)); its hard-label term mixes the two labels by the same weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: the largest shift, in pixels, of ``shift``
SHIFT_PX = 2
#: the augmentations ``vitsearch pick --polish-augment`` takes, "none" first
AUGMENTS = ("none", "shift", "mixup", "shift+mixup")


@dataclass(frozen=True)
class Mixed:
    """A batch after augmentation: the images, and for its hard-label term the labels and their weights."""

    images: torch.Tensor
    labels: tuple[torch.Tensor, ...]
    weights: tuple[float, ...]


def shifted(images: torch.Tensor, gen: torch.Generator, px: int = SHIFT_PX) -> torch.Tensor:
    """Each image of ``images`` moved by its own offset in [-px, px] on both axes, the border repeated."""
    n, _, h, w = images.shape
    padded = F.pad(images, (px, px, px, px), mode="replicate")
    dy, dx = (torch.randint(0, 2 * px + 1, (n,), generator=gen) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(images.device)  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(images.device)  # (n, w)
    index = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]


def augmented(images: torch.Tensor, labels: torch.Tensor, how: str, gen: torch.Generator) -> Mixed:
    """``images`` and ``labels`` altered as ``how`` (one of :data:`AUGMENTS`) says."""
    if how not in AUGMENTS:
        raise ValueError(f"augment: {how!r} is not one of {', '.join(AUGMENTS)}")
    if "shift" in how:
        images = shifted(images, gen)
    if "mixup" not in how:
        return Mixed(images, (labels,), (1.0,))
    lam = float(torch.rand((), generator=gen))  # Beta(1, 1)
    perm = torch.randperm(images.shape[0], generator=gen).to(images.device)
    return Mixed(lam * images + (1 - lam) * images[perm], (labels, labels[perm]), (lam, 1 - lam))
