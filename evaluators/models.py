"""Base models: the built-in ``vitsearch-tiny``, timm models by name, local checkpoints.

vitsearch compresses timm ``VisionTransformer``-family models (ViT, DeiT, DeiT-distilled
and any timm model whose class derives from
``timm.models.vision_transformer.VisionTransformer``): the knobs rely on its
``blocks`` / ``Attention`` / ``Mlp`` layout. Other architectures are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from vitsearch.spaces.errors import ModelError

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

#: Architecture of the built-in model: 28x28 one-channel inputs, patch 4 -> 49 patch
#: tokens + 1 class token, 6 heads (K/V grouping can use 1, 2, 3 or 6 K/V heads).
VITSEARCH_TINY_ARGS = dict(
    img_size=28,
    patch_size=4,
    in_chans=1,
    num_classes=10,
    embed_dim=144,
    depth=8,
    num_heads=6,
    mlp_ratio=2.0,
    class_token=True,
    global_pool="token",
)
BUILTIN_WEIGHTS = "vitsearch_tiny.pt"
SUPPORTED_FAMILY = (
    "timm VisionTransformer-family models (vit_*, deit_*, deit3_*, and other classes "
    "deriving from timm.models.vision_transformer.VisionTransformer)"
)


@dataclass(frozen=True)
class ModelSpec:
    """Which base model to build: ``builtin:<name>``, ``timm:<name>`` or a checkpoint.

    ``checkpoint`` is a path to a state dict; with it, ``name`` gives the timm
    architecture (``timm:<arch>`` or ``builtin:vitsearch-tiny``).
    """

    name: str = "builtin:vitsearch-tiny"
    pretrained: bool = True
    checkpoint: str | None = None
    num_classes: int | None = None


def create_vitsearch_tiny(drop_path_rate: float = 0.0) -> nn.Module:
    """Build the built-in architecture with random weights."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(drop_path_rate=drop_path_rate, **VITSEARCH_TINY_ARGS)
    # timm's data-config helpers read mean/std/input size from pretrained_cfg.
    model.pretrained_cfg = dict(
        input_size=(1, 28, 28), mean=MNIST_MEAN, std=MNIST_STD,
        interpolation="bilinear", crop_pct=1.0, num_classes=10,
        architecture="vitsearch-tiny",
    )
    return model


def builtin_weights_path() -> Path:
    """Path of the trained built-in weights shipped as package data."""
    return Path(str(resources.files("vitsearch.evaluators") / "weights" / BUILTIN_WEIGHTS))


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict safely (``weights_only=True``); one clear error otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"checkpoint: {str(path)!r} is a folder, not a file; give the path of a saved state dict "
                         "(.pt/.pth)")
    if not path.is_file():
        raise ModelError(f"checkpoint: file {str(path)!r} does not exist; give the path of a saved state dict (.pt/.pth)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, unsafe globals...
        raise ModelError(
            f"checkpoint: {str(path)!r} could not be loaded as a state dict with "
            f"torch.load(weights_only=True) ({type(exc).__name__}); save one with "
            "torch.save(model.state_dict(), path)"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"checkpoint: {str(path)!r} is not a state dict (a dict of tensor names to tensors)")
    return obj


def check_supported(model: nn.Module, name: str) -> nn.Module:
    """Refuse anything that is not a timm VisionTransformer-family model."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise ModelError(
            f"model: {name!r} is a {type(model).__name__}, not a supported ViT; "
            f"vitsearch supports {SUPPORTED_FAMILY}"
        )
    return model


def check_timm_architecture(arch: str, kwargs: dict | None = None) -> None:
    """Refuse a timm architecture that is not a VisionTransformer, judged without weights.

    The model is built on PyTorch's meta device (shapes only: no memory, no download,
    well under a second even for ViT-g); where an architecture cannot be built there,
    the check is left to the real build.
    """
    import timm

    try:
        with torch.device("meta"):
            probe = timm.create_model(arch, pretrained=False, **(kwargs or {}))
    except Exception:  # noqa: BLE001 - the real build reports its own error
        return
    check_supported(probe, f"timm:{arch}")


def _create_timm(arch: str, pretrained: bool, num_classes: int | None) -> nn.Module:
    import timm

    if not timm.is_model(arch):
        hint = timm.list_models(f"*{arch.split('_')[0]}*")[:5]
        raise ModelError(
            f"model: unknown timm model {arch!r}; use a name from timm.list_models() "
            f"(e.g. deit_small_patch16_224){', similar: ' + ', '.join(hint) if hint else ''}"
        )
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    check_timm_architecture(arch, kwargs)  # refuse a non-ViT before any weight download
    try:
        model = timm.create_model(arch, pretrained=pretrained, **kwargs)
    except Exception as exc:
        if not pretrained:
            raise ModelError(f"model: timm could not build {arch!r}: {exc}") from None
        raise ModelError(
            f"model: could not fetch pretrained weights for timm:{arch} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}); "
            "offline? download them elsewhere and set `checkpoint: <path to state dict>`"
        ) from None
    return check_supported(model, f"timm:{arch}")


def load_base_model(spec: ModelSpec) -> nn.Module:
    """Build the base model a study names, in eval mode, on the CPU."""
    kind, _, arch = spec.name.partition(":")
    if kind == "builtin":
        if arch != "vitsearch-tiny":
            raise ModelError(f"model: unknown built-in model {spec.name!r}; built-in models: builtin:vitsearch-tiny")
        model = create_vitsearch_tiny()
        if spec.checkpoint is None and spec.pretrained:
            _load_into(model, load_state_dict_file(builtin_weights_path()), str(builtin_weights_path()))
    elif kind == "timm" and arch:
        use_hub = spec.pretrained and spec.checkpoint is None
        model = _create_timm(arch, use_hub, spec.num_classes)
    else:
        raise ModelError(
            f"model: {spec.name!r} is not a model name; use builtin:vitsearch-tiny or timm:<timm model name>"
        )
    if spec.checkpoint is not None:
        _load_into(model, load_state_dict_file(spec.checkpoint), spec.checkpoint)
    return model.eval()


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            detail.append(f"{len(wrong)} of wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise ModelError(
            f"checkpoint: {where!r} does not match the architecture: " + "; ".join(detail)
            + "; pass the timm model name the checkpoint was saved from"
        )
    model.load_state_dict(state)
