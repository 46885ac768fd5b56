"""Accuracy on the val split, and the short distillation "recovery" of a compressed model.

Recovery (``recover``): teacher = the uncompressed base model; student = the compressed
model before quantization (``vitsearch.spaces.prepare``); loss = KL on logits softened
by ``temperature`` (scaled by T^2) weighted ``alpha`` + cross-entropy on the labels
weighted ``1 - alpha``; AdamW; sparsity masks re-applied after every step; precision
(``vitsearch.spaces.finalize``) applied after the fine-tune. Seeded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from vitsearch.spaces.errors import ConfigError, DataError


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 (and top-5 where there are more than 5 classes) on ``n`` images."""

    top1: float
    top5: float | None
    n: int
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_compatible(model: nn.Module, input_size: tuple[int, ...], num_classes: int) -> None:
    """Refuse data the model cannot take: wrong channels/size or more classes than logits."""
    pe = getattr(model, "patch_embed", None)
    if pe is not None:
        want_c = pe.proj.in_channels
        want_hw = tuple(pe.img_size) if getattr(pe, "strict_img_size", True) and pe.img_size else None
        if input_size[0] != want_c or (want_hw and tuple(input_size[1:]) != want_hw):
            need = f"{want_c}x{want_hw[0]}x{want_hw[1]}" if want_hw else f"{want_c} channels"
            raise DataError(
                f"data: images are {'x'.join(map(str, input_size))} but the model takes {need}; "
                "resize the data (input_size) or choose a model for this input size")
    model_classes = getattr(model, "num_classes", None)
    if model_classes and num_classes > model_classes:
        raise DataError(
            f"data: {num_classes} classes but the model predicts {model_classes}; "
            "set model.num_classes (and a matching checkpoint) or use data with at most that many classes")


@torch.inference_mode()
def evaluate_accuracy(model: nn.Module, dataset: Dataset, device: torch.device | str = "cpu",
                      batch_size: int = 250, source: str = "val") -> AccuracyResult:
    """Top-1/top-5 of ``model`` on ``dataset``, batched, in inference mode."""
    if batch_size <= 0:
        raise ConfigError(f"batch_size: must be > 0, got {batch_size}")
    model.eval()
    correct1 = correct5 = total = 0
    n_classes = None
    for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = model(images.to(device)).float().cpu()
        n_classes = logits.shape[-1]
        if labels.min() < 0 or labels.max() >= n_classes:
            raise DataError(f"data: label {int(labels.max())} is outside the model's {n_classes} classes (0..{n_classes - 1})")
        correct1 += (logits.argmax(-1) == labels).sum().item()
        if n_classes > 5:
            top5 = logits.topk(5, dim=-1).indices
            correct5 += (top5 == labels[:, None]).any(-1).sum().item()
        total += len(labels)
    if total == 0:
        raise DataError(f"data: the {source} split is empty")
    return AccuracyResult(correct1 / total, correct5 / total if n_classes > 5 else None, total,
                          f"{source}, {total} images")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                  reduction="batchmean", log_target=True)
    return alpha * t * t * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


def recover(base: nn.Module, config, train: Dataset, *, steps: int, device: torch.device | str = "cpu",
            lr: float = 1e-4, batch_size: int = 64, temperature: float = 2.0, alpha: float = 0.5,
            seed: int = 0, calibration=None) -> nn.Module:
    """Compress ``base`` with ``config``, distil it for ``steps`` steps, then quantize.

    ``steps == 0`` is plain ``compress``. Returns a new model; ``base`` is untouched.
    """
    from vitsearch.spaces import finalize

    student = distilled(base, config, train, steps=steps, device=device, lr=lr, batch_size=batch_size,
                        temperature=temperature, alpha=alpha, seed=seed, calibration=calibration)
    model = finalize(student, config, device=str(device))
    info = getattr(model, "vitsearch_info", None)
    if isinstance(info, dict):
        info["recovery_steps"] = steps
    return model


def distilled(base: nn.Module, config, train: Dataset, *, steps: int, device: torch.device | str = "cpu",
              lr: float = 1e-4, batch_size: int = 64, temperature: float = 2.0, alpha: float = 0.5,
              seed: int = 0, calibration=None) -> nn.Module:
    """The float model before quantization: ``prepare`` (structure, masks), then ``steps`` of distillation.

    Deterministic for a given seed, so an exported variant can be rebuilt exactly.
    """
    from vitsearch.spaces import prepare

    student = prepare(base, config, calibration=calibration, device=str(device))
    if steps > 0:
        _distil(student, base, train, steps, device, lr, batch_size, temperature, alpha, seed)
    return student


def _distil(student, teacher, train, steps, device, lr, batch_size, temperature, alpha, seed):
    from vitsearch.spaces import reapply_masks

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sampler = RandomSampler(train, replacement=True, num_samples=steps * batch_size, generator=gen)
    loader = DataLoader(train, batch_size=batch_size, sampler=sampler)
    teacher = teacher.to(device).eval()
    student = student.to(device).train()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with torch.no_grad():
            target = teacher(images)
        loss = distillation_loss(student(images), target, labels, temperature, alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        reapply_masks(student)
    student.eval()
