"""Per-layer sensitivity: one value per (block, part), a planted fragile block found, the model untouched;
the allocator's counts, order, ties and errors."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch

from vitsearch.evaluators.sensitivity import measure_sensitivity
from vitsearch.spaces.mixedprecision import Sensitivity, allocate_precision
from vitsearch.spaces.errors import ConfigError

CALIBRATION = torch.randn(40, 1, 28, 28, generator=torch.Generator().manual_seed(5))
FRAGILE = 2  # the block whose MLP is made fragile to int8


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fragile():
    """The built-in architecture (random weights) where block FRAGILE's fc1 has one input 1000x up and its
    norm2 output 1000x down: the float model computes the same function, but int8 of that weight row or
    that activation loses everything else in it (SmoothQuant's outlier, reversed)."""
    from vitsearch.evaluators.models import create_vitsearch_tiny

    torch.manual_seed(0)
    model = create_vitsearch_tiny().eval()
    block = model.blocks[FRAGILE]
    with torch.no_grad():
        before = model(CALIBRATION[:8])
        block.norm2.weight[0] /= 1000.0
        block.norm2.bias[0] /= 1000.0
        block.mlp.fc1.weight[:, 0] *= 1000.0
        assert torch.allclose(model(CALIBRATION[:8]), before, atol=1e-3)  # same float model
    return model


@pytest.mark.parametrize("family", ["torchao", "ort"])
def test_one_finite_value_per_block_and_the_fragile_block_stands_out(fragile, family):
    s = measure_sensitivity(fragile, CALIBRATION, family, images=32)
    depth = len(fragile.blocks)
    assert len(s.attn) == len(s.mlp) == depth and (s.precision, s.images, s.scheme) == ("int8", 32, family)
    assert all(math.isfinite(v) and v >= 0.0 for v in s.attn + s.mlp)
    assert max(s.attn + s.mlp) > 0.0
    others = [v for i, v in enumerate(s.mlp) if i != FRAGILE] + list(s.attn)
    assert s.mlp[FRAGILE] > 10 * max(others)


def test_the_model_is_left_as_it_was(fragile):
    model = copy.deepcopy(fragile).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [(name, type(m)) for name, m in model.named_modules()]
    measure_sensitivity(model, CALIBRATION, "torchao", images=8)
    assert model.training
    assert [(name, type(m)) for name, m in model.named_modules()] == modules
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_images_caps_the_calibration_and_bad_inputs_are_refused(fragile):
    assert measure_sensitivity(fragile, CALIBRATION[:5], "ort", precision="int8-weight", images=64).images == 5
    with pytest.raises(ConfigError, match="images: 0"):
        measure_sensitivity(fragile, CALIBRATION, "torchao", images=0)
    with pytest.raises(ConfigError, match="family 'tensorrt'"):
        measure_sensitivity(fragile, CALIBRATION, "tensorrt")
    with pytest.raises(ConfigError, match="'fp16' is not quantised"):
        measure_sensitivity(fragile, CALIBRATION, "torchao", precision="fp16")


def _sens(attn, mlp):
    return Sensitivity(tuple(attn), tuple(mlp), "int8", 8, "torchao")


def test_least_damage_goes_low_first():
    s = _sens([0.5, 0.1, 0.9], [0.2, 0.7, 0.05])
    assert allocate_precision(s, 0.5) == (["fp32", "int8", "fp32"], ["int8", "fp32", "int8"])  # 3 of 6
    assert allocate_precision(s, 1 / 6, low="int8-weight", high="bf16") == (["bf16"] * 3,
                                                                          ["bf16", "bf16", "int8-weight"])


def test_share_zero_and_one_and_rounding():
    s = _sens([0.3, 0.1], [0.2, 0.4])
    assert allocate_precision(s, 0.0) == (["fp32", "fp32"], ["fp32", "fp32"])
    assert allocate_precision(s, 1.0) == (["int8", "int8"], ["int8", "int8"])
    for share in (0.1, 0.3, 0.6, 0.9):
        attn, mlp = allocate_precision(s, share)
        assert (attn + mlp).count("int8") == round(share * 4)


def test_ties_go_to_the_earlier_block_then_attn():
    s = _sens([0.1] * 3, [0.1] * 3)
    assert allocate_precision(s, 1 / 6) == (["int8", "fp32", "fp32"], ["fp32"] * 3)
    assert allocate_precision(s, 2 / 6) == (["int8", "fp32", "fp32"], ["int8", "fp32", "fp32"])
    assert allocate_precision(s, 3 / 6) == (["int8", "int8", "fp32"], ["int8", "fp32", "fp32"])


def test_costs_rank_damage_per_unit_gain():
    s = _sens([0.4, 0.1], [0.3, 0.2])
    assert allocate_precision(s, 0.25) == (["fp32", "int8"], ["fp32", "fp32"])  # equal gains: least damage
    # block 0's attn saves 10x more: 0.04 per unit beats everything else
    assert allocate_precision(s, 0.25, costs=((10.0, 1.0), (1.0, 1.0))) == (["int8", "fp32"], ["fp32", "fp32"])


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan"), "half", True])
def test_a_bad_share_is_refused_in_one_line(share):
    with pytest.raises(ConfigError, match=r"share .* not allowed; expected .* in \[0, 1\]") as err:
        allocate_precision(_sens([0.1], [0.2]), share)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [{"costs": ((1.0, 1.0),)}, {"costs": ((1.0, 0.0), (1.0, 1.0))},
                                    {"low": "int3"}, {"high": "fp64"}], ids=["length", "zero", "low", "high"])
def test_bad_costs_or_precisions_are_refused(kwargs):
    with pytest.raises(ConfigError, match="not allowed"):
        allocate_precision(_sens([0.1, 0.2], [0.3, 0.4]), 0.5, **kwargs)


def test_sensitivity_pickles_and_refuses_bad_values():
    s = _sens([0.1, 0.0], [2.5, 1e-9])
    assert pickle.loads(pickle.dumps(s)) == s
    with pytest.raises(ConfigError, match="sensitivity.mlp: nan"):
        _sens([0.1], [float("nan")])
    with pytest.raises(ConfigError, match="one of each per block"):
        _sens([0.1, 0.2], [0.1])
