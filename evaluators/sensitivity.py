"""Per-layer precision by sensitivity: the damage of quantising one part of one block at a time.

:func:`measure_sensitivity` fake-quantises the linears of a single (block, part) group -
with the :class:`~vitsearch.evaluators.fakequant.FakeQuantScheme` its runtime family
would use, restricted to that block - and scores the damage as the mean KL divergence
from the float model's softmax to the quantised model's on calibration images. The float
logits are computed once; the model is left exactly as it was. What is done with it:
:mod:`vitsearch.spaces.mixedprecision`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitsearch.evaluators.fakequant import FakeQuantScheme, fake_quantised
from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.mixedprecision import PARTS, Sensitivity
from vitsearch.spaces.vit.adapter import check_vit
from vitsearch.spaces.vit.importance import block_scores, calibration_batches
from vitsearch.spaces.vit.saliency import labelled_batches


def measure_sensitivity(model: nn.Module, calibration: Any, scheme_family: str, precision: str = "int8",
                        device: str = "cpu", images: int = 64, *, batch: int | None = None) -> Sensitivity:
    """The :class:`Sensitivity` of every (block, part) of ``model`` (a timm ViT on ``device``).

    ``calibration``: as :func:`~vitsearch.spaces.vit.saliency.labelled_batches` reads it
    (labels ignored); up to ``images`` images are used; None: seeded random images, and the
    block importance data-free (as ``compress`` without calibration ranks blocks). ``scheme_family``: a
    :data:`~vitsearch.evaluators.fakequant.FAMILIES` name, as ``scheme_for`` takes it;
    ``precision``: one of its quantised kinds. ``batch``: for ``ort``, the images sharing
    one dynamic activation range (the runtime's program batch; None: each calibration
    batch). Runs without gradients in eval mode; the model's modules, parameters and
    training flag are as before on return. ConfigError on a bad family, precision or count.
    """
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"sensitivity.images: {images!r} is not allowed; expected a positive image count")
    check_vit(model)
    depth = len(model.blocks)
    schemes = {(i, part): FakeQuantScheme(scheme_family, ((i, part, precision),), batch)
               for i in range(depth) for part in PARTS}  # validates family, precision and batch up front
    data = calibration if calibration is not None else _random_images(model, images)
    batches = [x.to(device) for x, _ in labelled_batches(data, limit=images)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = [model(x).double().log_softmax(-1) for x in batches]
            damage = {key: _mean_kl(model, batches, reference, scheme) for key, scheme in schemes.items()}
            blocks, _ = block_scores(model, calibration_batches(calibration), str(device))
    finally:
        model.train(was_training)
    return Sensitivity(attn=tuple(damage[(i, "attn")] for i in range(depth)),
                       mlp=tuple(damage[(i, "mlp")] for i in range(depth)),
                       precision=precision, images=sum(len(x) for x in batches), scheme=scheme_family,
                       blocks=tuple(float(b) for b in blocks))


def _random_images(model: nn.Module, n: int) -> torch.Tensor:
    """``n`` seeded standard-normal images of the model's input size (the data-free case)."""
    from vitsearch.spaces.vit.dims import VitDims

    size = model.patch_embed.img_size
    chans = VitDims.of(model).in_chans or 3
    return torch.randn(n, chans, *size, generator=torch.Generator().manual_seed(0))


def _mean_kl(model: nn.Module, batches: list[torch.Tensor], reference: list[torch.Tensor],
             scheme: FakeQuantScheme) -> float:
    """Mean over images of KL(reference softmax || softmax of ``model`` under ``scheme``)."""
    total, count = 0.0, 0
    with fake_quantised(model, scheme):
        for x, log_p in zip(batches, reference):
            log_q = model(x).double().log_softmax(-1)
            total += float(F.kl_div(log_q, log_p, log_target=True, reduction="sum"))
            count += len(x)
    # KL >= 0; rounding can leave -1e-17 where quantisation changes nothing
    return max(total / count, 0.0)


def study_sensitivity(space: Any, base: nn.Module, runtime: Any, device: Any, calibration: Any = None,
                      batch: int = 1) -> Sensitivity | None:
    """What a study's ``space.allocation.precision: sensitivity`` allocates by (None in the uniform mode).

    Measured with ``runtime``'s own quantisation (its :meth:`fake_quant_scheme` for
    programs of ``batch`` images) of the space's quantised precision, on ``calibration``
    (None: data-free, as a profile builds its models). ConfigError for a runtime whose
    quantisation is not modelled.
    """
    if space.allocation.precision != "sensitivity":
        return None
    from vitsearch.spaces import CompressionConfig, PrecisionConfig
    from vitsearch.spaces.budgets import precision_knob_spec

    _, low = precision_knob_spec(space)
    scheme = runtime.fake_quant_scheme(CompressionConfig(precision=PrecisionConfig(attn=low, mlp=low)), batch)
    if scheme is None:
        raise ConfigError(f"space.allocation.precision: sensitivity is not available in runtime {runtime.name!r} "
                          "(its quantisation is not modelled); use uniform, or runtime eager, compile or onnxruntime")
    return measure_sensitivity(base, calibration, scheme.family, low, str(device), batch=scheme.images)
