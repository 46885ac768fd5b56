"""Numerics: a candidate in a runtime is checked once against eager, like with like; accuracy in the runtime.

The check exists to catch a *wrong* program (a bad export, a missed or broken layer),
not to judge quantisation: the accuracy measured in the runtime does that. So the
reference computes what the program is meant to compute: the candidate's eager model
(same structure, masks and weights), with the parts the runtime quantises itself
(ONNX Runtime's int8 / 8-bit / 4-bit weights) quantised in torch exactly as that runtime
does (:func:`~vitsearch.evaluators.runtimes.onnxexport.quantised_like_ort`), held to the
tight :data:`SAME_SCHEME` tolerance. Parts the reference leaves in fp32 (a half-precision
graph) are held to how far their format may move the float logits (:data:`TOLERANCE`).
A mismatch raises :class:`NumericsMismatch` with the figures; it never passes silently.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitsearch.evaluators.runtimes.base import Deployed, NumericsMismatch
from vitsearch.spaces.knobs import perblock
from vitsearch.spaces.knobs.base import PARTS

#: precision -> (max |logit difference| / max |reference logit|, min top-1 agreement) against the fp32 model
TOLERANCE = {
    "fp32": (1e-3, 0.99),
    "int8-weight": (0.05, 0.97),
    "fp16": (0.03, 0.97),
    "bf16": (0.08, 0.95),
    "int8": (0.15, 0.90),
    "int4-weight": (0.25, 0.85),
}
#: precision -> the same, against the eager model quantised as the runtime quantises. The two differ by float
#: summation order, rounding ties, saturating int8 pair sums (x86 without VNNI) and, with token merging, a
#: matching that a tiny difference can flip: a faithful int8 program is held to 12 % of the largest logit
#: (a zeroed linear or a dropped block moves them by 20 % or more; see docs/runtimes.md for the figures)
SAME_SCHEME = {"int8": (0.12, 0.97), "int8-weight": (0.02, 0.98), "int4-weight": (0.02, 0.98)}
#: At most this many calibration images are run (a static batch-1 program runs them one by one).
MAX_IMAGES = 256


def tolerance(config: Any, same_scheme: tuple[str, ...] = ()) -> tuple[str, float, float]:
    """(the precision that sets the tolerance, max relative logit difference, min top-1 agreement).

    A quantised entry of a part named in ``same_scheme`` is quantised alike in the reference
    (:data:`SAME_SCHEME`); the other entries are compared with fp32 (:data:`TOLERANCE`).
    Every entry of a per-block part counts; the loosest sets both figures.
    """
    tols = []
    for part in PARTS:
        for kind in dict.fromkeys(perblock.entries(getattr(config.precision, part))):
            alike = part in same_scheme and kind in SAME_SCHEME
            tols.append((kind, *(SAME_SCHEME if alike else TOLERANCE)[kind]))
    loosest = max(tols, key=lambda t: t[1])
    return loosest[0], loosest[1], min(t[2] for t in tols)


def reference_model(prepared: nn.Module, config: Any, device: torch.device | str) -> nn.Module:
    """The candidate's eager fp32 model: the reference every runtime is checked against."""
    from vitsearch.evaluators.runtimes.base import float_structure
    from vitsearch.evaluators.runtimes.eager import finalized

    return finalized(prepared, float_structure(config, keep_half=False), device)


def same_scheme(reference: nn.Module, runtime: str, config: Any) -> tuple[nn.Module, tuple[str, ...]]:
    """``reference`` (eager fp32) quantised as ``runtime`` quantises ``config``; (model, the parts so quantised)."""
    if runtime != "onnxruntime":  # the other runtimes quantise nothing themselves (support.PRECISION)
        return reference, ()
    from vitsearch.evaluators.runtimes.onnxexport import quantised_like_ort

    return quantised_like_ort(reference, config)


def check_numerics(deployed: Deployed, reference: nn.Module, images: torch.Tensor, config: Any) -> dict[str, Any]:
    """Top-1 agreement and max logit difference of ``deployed`` vs the candidate in eager, on ``images``.

    ``reference``: the candidate's eager fp32 model (:func:`reference_model`), not changed
    here; the parts the runtime quantises itself are quantised alike on a copy
    (:func:`same_scheme`), run on the batches the program runs (dynamic int8 scales are
    per batch). Returns the figures (JSON-able); raises NumericsMismatch (naming them)
    when either is outside the config's tolerance (:func:`tolerance`): with token
    reduction, on more images than the agreement allows to differ (one of 64 for int8),
    since a flipped token choice moves one image's logits far; without, on any image.
    """
    images = images[:MAX_IMAGES].to(deployed.device, torch.float32)
    model, alike = same_scheme(reference.eval(), deployed.runtime, config)
    as_run = Deployed("eager", torch.__version__, model, deployed.device, deployed.batch, 0.0)
    with torch.inference_mode():
        ref = as_run(images).float().cpu()
        got = deployed(images).float().cpu()
    if got.shape != ref.shape:
        raise NumericsMismatch(f"runtime {deployed.runtime}: output shape {tuple(got.shape)} differs from eager "
                               f"{tuple(ref.shape)}")
    per_image = (got - ref).abs().amax(-1)
    diff = float(per_image.max())
    scale = float(ref.abs().max()) or 1.0
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    worst, max_rel, min_agree = tolerance(config, alike)
    what = "eager fp32 of the same candidate" + (
        f", {' and '.join(alike)} linears quantised as {deployed.runtime} quantises them" if alike else "")
    n = int(images.shape[0])
    over = int((per_image / scale > max_rel).sum())
    # token reduction chooses tokens by similarity or attention: a tiny difference can flip one image's choice and
    # move that image's logits far, so a share of images as small as the agreement's may lie beyond the tolerance
    # (a wrong program moves nearly all of them); without it the largest difference decides
    allowed = int((1 - min_agree) * n + 1e-9) if not config.tokens.is_identity() else 0
    report = {"images": n, "top1_agreement": round(agree, 4), "max_abs_logit_diff": diff,
              "max_rel_logit_diff": diff / scale, "images_over_tolerance": over, "images_over_allowed": allowed,
              "precision": worst, "tolerance_rel": max_rel, "tolerance_agreement": min_agree, "reference": what,
              "finite": bool(torch.isfinite(got).all())}
    if not report["finite"] or over > allowed or agree < min_agree:
        raise NumericsMismatch(
            f"runtime {deployed.runtime}: outputs of {config.summary()} differ from {what} on {n} "
            f"calibration images: top-1 agreement {agree:.2%} (needs >= {min_agree:.0%}), max logit difference "
            f"{diff:.4g} = {diff / scale:.2%} of the largest logit (allowed {max_rel:.1%} for {worst}"
            + (f"; beyond it on {over} images, at most {allowed} allowed with token reduction)" if allowed else ")")
            + ("" if report["finite"] else ", non-finite outputs"))
    return report


def calibration_images(calibration: Any) -> torch.Tensor:
    """The calibration split as one (N, C, H, W) tensor (at most :data:`MAX_IMAGES`)."""
    from vitsearch.spaces.vit.importance import calibration_batches

    return torch.cat(calibration_batches(calibration))[:MAX_IMAGES]


def accuracy_in_runtime(deployed: Deployed, dataset: Any, batch_size: int, source: str, reference=None):
    """Top-1/top-5 of ``deployed`` on ``dataset``, run in its runtime (an AccuracyResult; ``reference``: logits to
    compare with, :func:`~vitsearch.evaluators.accuracy.evaluate_accuracy`)."""
    from vitsearch.evaluators.accuracy import evaluate_accuracy

    return evaluate_accuracy(deployed.as_module(), dataset, deployed.device, batch_size,
                             source=f"{source}, run in {deployed.runtime} {deployed.version}", reference=reference)
