"""Top-1 / top-5 accuracy of a model on a data split (distillation lives in :mod:`.distill`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitsearch.spaces.errors import ConfigError, DataError

from vitsearch.evaluators.latency.stats import wilson


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 (and top-5 where there are more than 5 classes) on ``n`` images.

    ``correct``: which images were right at top-1, in the data set's order, as packed
    bits (:func:`vitsearch.evaluators.paired.pack`), so two models judged on the same
    images can be compared pairwise (:func:`vitsearch.evaluators.paired.paired_drop`).
    """

    top1: float
    top5: float | None
    n: int
    source: str
    correct: str | None = None
    reference_kl: float | None = None  # mean KL(reference || model) over the images, nats (given reference logits)
    reference_agreement: float | None = None  # share of images whose top-1 is the reference's

    def to_dict(self) -> dict:
        """JSON form, without the per-image bits."""
        return {k: v for k, v in asdict(self).items() if k != "correct"}

    def correct_mask(self):
        """Per-image top-1 correctness as a bool numpy array (DataError when not recorded)."""
        from vitsearch.evaluators.paired import unpack

        if self.correct is None:
            raise DataError(f"accuracy on {self.source}: per-image results were not recorded")
        return unpack(self.correct, self.n)


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
                      batch_size: int = 250, source: str = "val",
                      reference: torch.Tensor | None = None) -> AccuracyResult:
    """Top-1/top-5 of ``model`` on ``dataset``, batched, in inference mode.

    ``reference``: another model's logits on the same images in the data set's order (the
    teacher's, :func:`logits_on`): the result also says how closely ``model`` follows it, as
    the mean KL(reference || model) of their softmaxes (nats) and the share of images
    where their top-1 agree (continuous where top-1 counts images).
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size: must be > 0, got {batch_size}")
    from vitsearch.evaluators.latency.lock import step_aside
    from vitsearch.evaluators.paired import pack

    model.eval()
    correct1 = correct5 = total = 0
    n_classes = None
    hits: list[torch.Tensor] = []
    kl_sum, agree = 0.0, 0
    if reference is not None and len(reference) != len(dataset):
        raise DataError(f"accuracy on {source}: {len(reference)} reference logits for {len(dataset)} images")
    for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = model(images.to(device)).float().cpu()
        if reference is not None:
            ref = reference[total:total + len(labels)]
            if ref.shape != logits.shape:
                raise DataError(f"accuracy on {source}: reference logits of {ref.shape[-1]} classes, the model "
                                f"gives {logits.shape[-1]}")
            kl_sum += torch.nn.functional.kl_div(logits.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                                                 reduction="sum").item()
            agree += (logits.argmax(-1) == ref.argmax(-1)).sum().item()
        n_classes = logits.shape[-1]
        if labels.min() < 0 or labels.max() >= n_classes:
            raise DataError(f"data: label {int(labels.max())} is outside the model's {n_classes} classes (0..{n_classes - 1})")
        hit = logits.argmax(-1) == labels
        hits.append(hit)
        correct1 += hit.sum().item()
        if n_classes > 5:
            top5 = logits.topk(5, dim=-1).indices
            correct5 += (top5 == labels[:, None]).any(-1).sum().item()
        total += len(labels)
        step_aside()  # a measurement waiting for the device goes first
    if total == 0:
        raise DataError(f"data: the {source} split is empty")
    fidelity = (kl_sum / total, agree / total) if reference is not None else (None, None)
    return AccuracyResult(correct1 / total, correct5 / total if n_classes > 5 else None, total,
                          f"{source}, {total} images", pack(torch.cat(hits).numpy()), *fidelity)


@torch.inference_mode()
def logits_on(model: nn.Module, dataset: Dataset, device: torch.device | str = "cpu",
              batch_size: int = 250) -> torch.Tensor:
    """``model``'s float logits on every image of ``dataset`` in its order, on the CPU (a reference for
    :func:`evaluate_accuracy`)."""
    if batch_size <= 0:
        raise ConfigError(f"batch_size: must be > 0, got {batch_size}")
    model.eval()
    out = [model(images.to(device)).float().cpu() for images, _ in DataLoader(dataset, batch_size=batch_size)]
    if not out:
        raise DataError("data: no images to take reference logits on")
    return torch.cat(out)


def wilson_interval(share: float, n: int) -> tuple[float, float]:
    """95 % Wilson score interval (:func:`vitsearch.evaluators.latency.stats.wilson`) of an accuracy
    ``share`` measured on ``n`` images; DataError for no images.
    """
    if n <= 0:
        raise DataError(f"data: an accuracy interval needs at least one image, got n={n}")
    return wilson(share * n, n)
