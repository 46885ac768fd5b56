"""Augmentations for distillation: the teacher and the student see the same altered batch.

A student distilled only on the training images matches its teacher where the teacher
was trained, where the teacher's answer is near one-hot and tells little beyond the
label. Altering the batch before both models see it (Beyer et al., "Knowledge
distillation: a good teacher is patient and consistent", CVPR 2022: *function
matching*) makes the student match the teacher's function around those images too.
Pure tensor maths on a normalised batch (N, C, H, W), seeded by the caller's generator:

* ``shift``: each image moved by up to :data:`SHIFT_PX` pixels in each direction, the
  border repeated (a digit or an object moved within its frame);
* ``affine``: each image rotated, scaled and moved as the built-in model was trained
  (:func:`affine_warped` with :data:`AFFINE`: +-12 degrees, 0.9-1.1, +-2 pixels at 28 pixels), the
  border repeated: the teacher's own training distribution, wider than ``shift``;
* ``mixup``: each image blended with another of the batch, one weight per batch,
  uniform in [0, 1] (Beta(1, 1)); its hard-label term mixes the two labels by the same weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: the largest shift, in pixels, of ``shift``
SHIFT_PX = 2
#: ``affine``'s warp (rotation in degrees, scale range, shift in ``affine_grid`` units: [-1, 1] spans the
#: image, so 0.15 is about 2 pixels at 28): the built-in model's training recipe (evaluators.training)
AFFINE = dict(rotate_deg=12.0, scale=(0.9, 1.1), shift=0.15)
#: the augmentations ``vitsearch pick --polish-augment`` takes, "none" first
AUGMENTS = ("none", "shift", "affine", "mixup", "shift+mixup")


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


def affine_warped(images: torch.Tensor, gen: torch.Generator, rotate_deg: float = AFFINE["rotate_deg"],
                  scale: tuple[float, float] = AFFINE["scale"], shift: float = AFFINE["shift"]) -> torch.Tensor:
    """Each image of ``images`` rotated by up to ``rotate_deg``, scaled within ``scale`` and moved by up to
    ``shift`` (``affine_grid`` units) on each axis, its own draw each, in one ``grid_sample``; the border
    repeated (MNIST's border is background)."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(rotate_deg)
    factor = scale[0] + torch.rand(n, generator=gen) * (scale[1] - scale[0])
    offset = (torch.rand(n, 2, generator=gen) * 2 - 1) * shift
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def augmented(images: torch.Tensor, labels: torch.Tensor, how: str, gen: torch.Generator) -> Mixed:
    """``images`` and ``labels`` altered as ``how`` (one of :data:`AUGMENTS`) says."""
    if how not in AUGMENTS:
        raise ValueError(f"augment: {how!r} is not one of {', '.join(AUGMENTS)}")
    if "shift" in how:
        images = shifted(images, gen)
    elif how == "affine":
        images = affine_warped(images, gen)
    if "mixup" not in how:
        return Mixed(images, (labels,), (1.0,))
    lam = float(torch.rand((), generator=gen))  # Beta(1, 1)
    perm = torch.randperm(images.shape[0], generator=gen).to(images.device)
    return Mixed(lam * images + (1 - lam) * images[perm], (labels, labels[perm]), (lam, 1 - lam))
