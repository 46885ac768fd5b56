"""The single entry point: ``compress = finalize(prepare(...))``, plus ``reapply_masks``.

``prepare`` makes the trainable float changes (depth, heads, sparsity masks, tokens);
``finalize`` makes the deployment-only ones (precision, 2:4 sparse kernels on CUDA).
A distillation fine-tune sits between the two and calls :func:`reapply_masks` after
each optimizer step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vitsearch.spaces import knobs  # noqa: F401  (registers every knob)
from vitsearch.spaces.config import CompressionConfig
from vitsearch.spaces.errors import ConfigError, DeviceError
from vitsearch.spaces.vit.importance import calibration_batches
from vitsearch.spaces.knobs.base import ORDER, REGISTRY, Context
from vitsearch.spaces.knobs.precision import check_precision_device
from vitsearch.spaces.knobs.sparsity import MASK

FINALIZE_ORDER = ("precision", "sparsity")  # sparse kernels take the final dtype


def compress(model: nn.Module, config: CompressionConfig | dict | str | None = None,
             calibration: Any = None, device: str = "cpu") -> nn.Module:
    """A new compressed copy of ``model`` (never mutated); the identity config changes nothing.

    ``calibration``: images (tensor, Dataset, DataLoader or batches) for the importance
    rankings of blocks, heads and MLP channels; without it data-free criteria are used.
    What was applied is recorded in ``model.vitsearch_info``.
    """
    config = as_config(config)
    return _finalize(prepare(model, config, calibration, device), config, device)


def prepare(model: nn.Module, config: CompressionConfig | dict | str | None = None,
            calibration: Any = None, device: str = "cpu") -> nn.Module:
    """Depth, heads, sparsity masks and tokens on a float copy of ``model`` (still trainable)."""
    from vitsearch.spaces.vit.adapter import check_vit

    config = as_config(config)
    check_vit(model)
    device = _check_device(device)
    check_precision_device(config.precision, device)  # fail before any slow work
    out = copy.deepcopy(model).to(device).eval()
    ctx = Context(config=config, batches=calibration_batches(calibration), device=device, base=model,
                  info={"config": config.to_dict(), "summary": config.summary(), "criterion": {},
                        "device": device, "finalized": False})
    for name in ORDER:
        knob = REGISTRY[name]
        if knob.prepare is not None:
            knob.prepare(out, getattr(config, name), ctx)
    for block in out.blocks:  # one attribute set for MACs / latency code, grouped or not
        if not hasattr(block.attn, "num_kv_heads"):
            block.attn.num_kv_heads = block.attn.num_heads
    out.vitsearch_info = ctx.info
    return out


def finalize(model: nn.Module, config: CompressionConfig | dict | str | None = None,
             device: str = "cpu") -> nn.Module:
    """Precision and sparse kernels on a copy of a prepared (maybe fine-tuned) model."""
    return _finalize(copy.deepcopy(model), as_config(config), device)


def _finalize(model: nn.Module, config: CompressionConfig, device: str) -> nn.Module:
    device = _check_device(device)
    info = copy.deepcopy(getattr(model, "vitsearch_info", None) or {"config": config.to_dict(), "criterion": {}})
    ctx = Context(config=config, batches=None, device=device, info=info)
    model = model.to(device).eval()
    reapply_masks(model)
    for name in FINALIZE_ORDER:
        knob = REGISTRY[name]
        if knob.finalize is not None:
            knob.finalize(model, getattr(config, name), ctx)
    for module in model.modules():  # masks are baked into the weights now; drop their bytes
        if MASK in module._buffers:
            del module._buffers[MASK]
    info.update(finalized=True, device=device)
    model.vitsearch_info = info
    return model


def reapply_masks(model: nn.Module) -> int:
    """Re-zero every masked weight (after an optimizer step); returns the number of layers."""
    count = 0
    with torch.no_grad():
        for module in model.modules():
            mask = module._buffers.get(MASK)
            if mask is not None and type(module.weight) in (torch.Tensor, nn.Parameter):
                module.weight.mul_(mask)
                count += 1
    return count


def as_config(config: CompressionConfig | dict | str | None) -> CompressionConfig:
    """Accept a CompressionConfig, its dict form or JSON text (None = identity)."""
    if isinstance(config, CompressionConfig):
        return config
    if config is None or isinstance(config, dict):
        return CompressionConfig.from_dict(config or {})
    if isinstance(config, str):
        return CompressionConfig.from_json(config)
    raise ConfigError(f"config: a {type(config).__name__} is not allowed; expected a CompressionConfig, "
                      "a dict or JSON text")


def _check_device(device: Any) -> str:
    name = str(device)
    if name == "cpu":
        return name
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device: {name!r} is not available here (no CUDA device); use 'cpu'")
        return name
    raise DeviceError(f"device: {name!r} is not supported; expected 'cpu' or 'cuda[:index]'")
