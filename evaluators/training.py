"""Training recipe of the built-in ``vitsearch-tiny`` on ``mnist5k`` (``vitsearch train-builtin``).

A ViT from scratch learns slowly on 4,000 images, so the recipe leans on many cheap
epochs and augmentation done as one batched affine warp (no per-image Python work):
AdamW (lr 1e-3, weight decay 0.05), one-cycle schedule with 10 % warm-up, batch 64,
label smoothing 0.1, stochastic depth 0.1, random rotation +-12 deg, scale 0.9-1.1,
shift +-2 px. Seeded; the whole run is reproducible on the same machine and torch.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of the built-in model's training run."""

    epochs: int = 120
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_pct: float = 0.1
    label_smoothing: float = 0.1
    drop_path: float = 0.1
    rotate_deg: float = 12.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.15  # in affine_grid units ([-1, 1] spans the image): 0.15 ~ 2 px at 28 px
    seed: int = 0
    threads: int = 2


def augment(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Random rotation, scale and shift of a whole batch with one ``grid_sample``."""
    from vitsearch.evaluators.augment import affine_warped

    return affine_warped(x, gen, recipe.rotate_deg, recipe.scale, recipe.shift)


@torch.inference_mode()
def evaluate_top1(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250) -> float:
    """Top-1 accuracy (0..1) of ``model`` on in-memory tensors."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += (model(images[i:i + batch_size]).argmax(-1) == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


def train_builtin(out: Path, recipe: Recipe = Recipe(), progress: bool = True, limit_train: int | None = None) -> dict:
    """Train ``vitsearch-tiny`` on mnist5k train, save its state dict to ``out``.

    Returns a summary (recipe, val accuracy, wall time) that is also written beside the
    weights as JSON. ``limit_train`` trains on a seeded random subset of the train split (tests).
    """
    from tqdm.auto import tqdm

    from vitsearch.evaluators.data import load_mnist5k
    from vitsearch.evaluators.models import create_vitsearch_tiny

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    splits = load_mnist5k(seed=0)
    x_train, y_train = splits.train.tensors
    if limit_train is not None:
        keep = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(recipe.seed))[:limit_train]
        x_train, y_train = x_train[keep], y_train[keep]
    x_val, y_val = splits.val.tensors

    model = create_vitsearch_tiny(drop_path_rate=recipe.drop_path)
    steps_per_epoch = math.ceil(len(x_train) / recipe.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=recipe.warmup_pct)
    history = []
    start = time.perf_counter()
    bar = tqdm(range(recipe.epochs), desc="train vitsearch-tiny", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            logits = model(augment(x_train[idx], recipe, gen))
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch + 1, "train_loss": round(total / len(order), 4)}
        if (epoch + 1) % 10 == 0 or epoch + 1 == recipe.epochs:
            row["val_top1"] = evaluate_top1(model, x_val, y_val)
        history.append(row)
        bar.set_postfix({k: v for k, v in row.items() if k != "epoch"})
    model.eval()
    summary = {
        "model": "builtin:vitsearch-tiny",
        "data": splits.describe(),
        "recipe": asdict(recipe),
        "val_top1": evaluate_top1(model, x_val, y_val),
        "val_images": len(x_val),
        "train_images": len(x_train),
        "wall_s": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "history": history,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary
