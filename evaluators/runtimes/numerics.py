"""Numerics: a candidate in a runtime is checked once against eager; accuracy in the runtime.

The reference is the candidate's eager *float* model (same structure, masks and
weights; fp32). Comparing a quantised runtime program with torchao's quantised eager
model would mix two different approximations (ORT's int8 is per-tensor with dynamic
activations, torchao's per-channel), so each runtime is held to how far *its* format
may move the float logits: the tolerance of the loosest precision in the config.
A mismatch raises :class:`NumericsMismatch` with the figures; it never passes silently.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitsearch.evaluators.runtimes.base import Deployed, NumericsMismatch

#: precision -> (max |logit difference| / max |reference logit|, min top-1 agreement)
TOLERANCE = {
    "fp32": (1e-3, 0.99),
    "int8-weight": (0.05, 0.97),
    "fp16": (0.03, 0.97),
    "bf16": (0.08, 0.95),
    "int8": (0.15, 0.90),
    "int4-weight": (0.25, 0.85),
}
#: At most this many calibration images are run (a static batch-1 program runs them one by one).
MAX_IMAGES = 256


def tolerance(config: Any) -> tuple[str, float, float]:
    """(loosest precision of the config, max relative logit difference, min top-1 agreement)."""
    order = list(TOLERANCE)
    worst = max((getattr(config.precision, p) for p in ("attn", "mlp")), key=order.index)
    return (worst, *TOLERANCE[worst])


def reference_model(prepared: nn.Module, config: Any, device: torch.device | str) -> nn.Module:
    """The candidate's eager fp32 model: the reference every runtime is checked against."""
    from vitsearch.evaluators.runtimes.eager import finalized
    from vitsearch.evaluators.runtimes.onnxexport import float_config

    return finalized(prepared, float_config(config, keep_half=False), device)


def check_numerics(deployed: Deployed, reference: nn.Module, images: torch.Tensor, config: Any) -> dict[str, Any]:
    """Top-1 agreement and max logit difference of ``deployed`` vs ``reference`` on ``images``.

    Returns the figures (JSON-able); raises NumericsMismatch (naming them) when either
    is outside the config's tolerance.
    """
    images = images[:MAX_IMAGES].to(deployed.device, torch.float32)
    with torch.inference_mode():
        ref = reference.eval()(images).float().cpu()
        got = deployed(images).float().cpu()
    if got.shape != ref.shape:
        raise NumericsMismatch(f"runtime {deployed.runtime}: output shape {tuple(got.shape)} differs from eager "
                               f"{tuple(ref.shape)}")
    diff = float((got - ref).abs().max())
    scale = float(ref.abs().max()) or 1.0
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    worst, max_rel, min_agree = tolerance(config)
    report = {"images": int(images.shape[0]), "top1_agreement": round(agree, 4), "max_abs_logit_diff": diff,
              "max_rel_logit_diff": diff / scale, "precision": worst, "tolerance_rel": max_rel,
              "tolerance_agreement": min_agree, "reference": "eager fp32 of the same candidate",
              "finite": bool(torch.isfinite(got).all())}
    if not report["finite"] or diff / scale > max_rel or agree < min_agree:
        raise NumericsMismatch(
            f"runtime {deployed.runtime}: outputs of {config.summary()} differ from eager on {report['images']} "
            f"calibration images: top-1 agreement {agree:.2%} (needs >= {min_agree:.0%}), max logit difference "
            f"{diff:.4g} = {diff / scale:.2%} of the largest logit (allowed {max_rel:.1%} for {worst})"
            + ("" if report["finite"] else ", non-finite outputs"))
    return report


def calibration_images(calibration: Any) -> torch.Tensor:
    """The calibration split as one (N, C, H, W) tensor (at most :data:`MAX_IMAGES`)."""
    from vitsearch.spaces.vit.importance import calibration_batches

    return torch.cat(calibration_batches(calibration))[:MAX_IMAGES]


def accuracy_in_runtime(deployed: Deployed, dataset: Any, batch_size: int, source: str):
    """Top-1/top-5 of ``deployed`` on ``dataset``, run in its runtime (an AccuracyResult)."""
    from vitsearch.evaluators.accuracy import evaluate_accuracy

    return evaluate_accuracy(deployed.as_module(), dataset, deployed.device, batch_size,
                             source=f"{source}, run in {deployed.runtime} {deployed.version}")
