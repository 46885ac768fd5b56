import pytest
import torch

from vitsearch.evaluators.accuracy import check_compatible, evaluate_accuracy, logits_on, wilson_interval
from vitsearch.evaluators.distill import recover
from vitsearch.spaces import CompressionConfig, compress
from vitsearch.spaces.errors import DataError


def test_accuracy_equals_direct_computation(builtin_model, mnist):
    x, y = mnist.val.tensors
    with torch.inference_mode():
        logits = builtin_model(x)
    direct1 = (logits.argmax(-1) == y).sum().item() / len(y)
    direct5 = (logits.topk(5, -1).indices == y[:, None]).any(-1).sum().item() / len(y)
    got = evaluate_accuracy(builtin_model, mnist.val, batch_size=128)
    assert got.top1 == pytest.approx(direct1, abs=1e-9) and got.top5 == pytest.approx(direct5, abs=1e-9)
    assert got.n == 500 and "500 images" in got.source


def test_how_closely_a_model_follows_reference_logits(builtin_model, mnist):
    from torch.utils.data import Subset

    val = Subset(mnist.val, range(100))
    reference = logits_on(builtin_model, val, batch_size=32)
    assert reference.shape == (100, 10)
    same = evaluate_accuracy(builtin_model, val, batch_size=48, reference=reference)  # batches other than the logits'
    assert same.reference_kl == pytest.approx(0.0, abs=1e-6) and same.reference_agreement == 1.0
    assert evaluate_accuracy(builtin_model, val).reference_kl is None  # only when asked
    cut = compress(builtin_model, CompressionConfig.from_dict({"depth": {"keep": 3}}))
    got = evaluate_accuracy(cut, val, batch_size=32, reference=reference)
    with torch.inference_mode():  # the KL divergence of its softmax from the reference's, per image, averaged
        mine = cut(torch.stack([val[i][0] for i in range(100)])).log_softmax(-1)
    want = (reference.softmax(-1) * (reference.log_softmax(-1) - mine)).sum(-1).mean().item()
    assert got.reference_kl == pytest.approx(want, rel=1e-4) and got.reference_kl > 0.01
    assert got.reference_agreement == (mine.argmax(-1) == reference.argmax(-1)).sum().item() / 100 < 1.0
    with pytest.raises(DataError, match="101 reference logits for 100 images"):
        evaluate_accuracy(builtin_model, val, reference=torch.cat([reference, reference[:1]]))
    with pytest.raises(DataError, match="40 reference logits for 100 images"):
        evaluate_accuracy(builtin_model, val, batch_size=32, reference=reference[:40])
    with pytest.raises(DataError, match="reference logits of 9 classes, the model gives 10"):
        evaluate_accuracy(builtin_model, val, batch_size=32, reference=reference[:, :9])


@pytest.mark.slow
def test_recovery_improves_a_damaged_model(builtin_model, mnist):
    # 20 steps: 0.948 -> 0.958 on the val split (60 steps reached 0.956: no more gain, three times the time)
    config = CompressionConfig.from_dict({"depth": {"keep": 4}})
    before = evaluate_accuracy(compress(builtin_model, config, calibration=mnist.calibration), mnist.val).top1
    after_model = recover(builtin_model, config, mnist.train, steps=20, seed=0, calibration=mnist.calibration)
    after = evaluate_accuracy(after_model, mnist.val).top1
    assert after > before + 0.005
    assert after_model.vitsearch_info["recovery_steps"] == 20
    # seeded: the same run gives the same model (a few steps show it: every step draws from the seeded stream)
    first, again = (recover(builtin_model, config, mnist.train, steps=3, seed=0, calibration=mnist.calibration)
                    for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    other = recover(builtin_model, config, mnist.train, steps=3, seed=1, calibration=mnist.calibration)
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))


def test_masks_survive_recovery(builtin_model, mnist):
    config = CompressionConfig.from_dict({"sparsity": {"attn": "2:4", "mlp": "2:4"}})
    model = recover(builtin_model, config, mnist.train, steps=5, lr=1e-3, seed=0)
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "blocks" in n]
    assert linears
    for lin in linears:
        groups = lin.weight.detach().reshape(-1, 4)
        assert ((groups == 0).sum(-1) >= 2).all()
    # the teacher is untouched
    assert (builtin_model.blocks[0].mlp.fc1.weight != 0).float().mean() > 0.99


def test_labels_outside_classes_and_bad_input(builtin_model, mnist):
    from torch.utils.data import TensorDataset

    x, y = mnist.val.tensors
    with pytest.raises(DataError, match="outside the model's 10 classes"):
        evaluate_accuracy(builtin_model, TensorDataset(x[:8], y[:8] + 10))
    with pytest.raises(DataError, match="model takes 1x28x28"):
        check_compatible(builtin_model, (3, 28, 28), 10)
    with pytest.raises(DataError, match="predicts 10"):
        check_compatible(builtin_model, (1, 28, 28), 100)
    with pytest.raises(Exception, match="batch_size"):
        evaluate_accuracy(builtin_model, mnist.val, batch_size=0)


def test_wilson_interval_brackets_the_share_and_narrows_with_n():
    lo, hi = wilson_interval(0.98, 500)
    assert lo < 0.98 < hi <= 1.0 and hi - lo == pytest.approx(0.0245, abs=0.002)
    lo2, hi2 = wilson_interval(0.98, 5000)
    assert hi2 - lo2 < hi - lo
    assert wilson_interval(1.0, 500)[1] == pytest.approx(1.0) and wilson_interval(1.0, 500)[0] < 1.0  # never a zero-width 100 %
    with pytest.raises(DataError, match="n=0"):
        wilson_interval(0.5, 0)
