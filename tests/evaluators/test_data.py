import numpy as np
import pytest
import torch
from PIL import Image

from vitsearch.evaluators.data import load_imagefolder, load_mnist5k
from vitsearch.evaluators.models import create_vitsearch_tiny
from vitsearch.spaces.errors import DataError


def test_mnist5k_split_sizes_and_stratification(mnist):
    assert len(mnist.train) == 4000 and len(mnist.val) == 1000
    assert np.bincount(mnist.train.tensors[1].numpy()).tolist() == [400] * 10
    assert np.bincount(mnist.val.tensors[1].numpy()).tolist() == [100] * 10
    assert len(mnist.calibration) == 256
    assert mnist.input_size == (1, 28, 28) and mnist.num_classes == 10


def test_mnist5k_split_is_deterministic_and_disjoint(mnist):
    again = load_mnist5k(seed=0)
    assert torch.equal(again.train.tensors[0], mnist.train.tensors[0])
    assert torch.equal(again.val.tensors[0], mnist.val.tensors[0])
    assert again.calibration.indices == mnist.calibration.indices
    other = load_mnist5k(seed=1)
    assert not torch.equal(other.val.tensors[0], mnist.val.tensors[0])
    # no val image is also a train image
    train = {t.numpy().tobytes() for t in mnist.train.tensors[0]}
    assert not any(v.numpy().tobytes() in train for v in mnist.val.tensors[0])


def _write_folder(root, classes=("a", "b"), per_class=3, size=28, mode="L"):
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = (np.random.default_rng(i).random((size, size)) * 255).astype(np.uint8)
                Image.fromarray(arr, mode="L").convert(mode).save(d / f"{i}.png")


def test_imagefolder_uses_model_eval_transforms(tmp_path):
    _write_folder(tmp_path)
    splits = load_imagefolder(tmp_path, create_vitsearch_tiny())
    assert len(splits.train) == 6 and len(splits.val) == 6 and splits.num_classes == 2
    x, y = splits.val[0]
    assert tuple(x.shape) == (1, 28, 28) and y in (0, 1)


def test_imagefolder_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_imagefolder(tmp_path / "nope", create_vitsearch_tiny())
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_imagefolder(tmp_path, create_vitsearch_tiny())


def test_imagefolder_splits_pickle(tmp_path):
    import pickle

    _write_folder(tmp_path, mode="RGB")
    splits = pickle.loads(pickle.dumps(load_imagefolder(tmp_path, create_vitsearch_tiny())))
    assert tuple(splits.train[0][0].shape) == (1, 28, 28)  # RGB files read as the model's 1 channel
