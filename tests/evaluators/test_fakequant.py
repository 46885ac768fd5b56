"""Fake quantisation: the numbers of the real quantised model, straight-through gradients, a model left as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitsearch.evaluators.fakequant import (FakeQuantLinear, FakeQuantScheme, fake_quantised, ort_blockwise,
                                            ort_dynamic_uint8, ort_int8_weight, scheme_for, torchao_int4,
                                            torchao_int8)
from vitsearch.evaluators.runtimes import get_runtime, runtime_names
from vitsearch.evaluators.runtimes.base import float_structure
from vitsearch.evaluators.runtimes.onnxexport import quantised_like_ort
from vitsearch.spaces import CompressionConfig, finalize, prepare
from vitsearch.spaces.errors import ConfigError

MIXED = {"depth": {"keep": 6}, "precision": {"attn": "int8", "mlp": "int8-weight"}}
INT8 = {"depth": {"keep": 6}, "precision": {"attn": "int8", "mlp": "int8"}}


@pytest.fixture(scope="module")
def images(mnist):
    return mnist.val.tensors[0][:32]


def _prepared(builtin_model, mnist, doc):
    """(config, its float structure prepared): what distillation trains for any runtime."""
    config = CompressionConfig.from_dict(doc)
    return config, prepare(builtin_model, float_structure(config), calibration=mnist.calibration)


@pytest.mark.parametrize("doc", [INT8, MIXED], ids=["int8", "int8 attn + int8-weight mlp"])
def test_torchao_fake_quant_computes_the_finalized_models_logits(builtin_model, mnist, images, doc):
    """Eager's scheme in training equals torchao's quantised model (per-token int8 activations, per-channel
    weights, its integer product and scale order), while int8 moves the float logits far more."""
    config, prepared = _prepared(builtin_model, mnist, doc)
    with torch.no_grad():
        real = finalize(prepared, config)(images)
        with fake_quantised(prepared, scheme_for("torchao", config)):
            fake = prepared(images)
        plain = prepared(images)
    scale = real.abs().max()
    assert (fake - real).abs().max() <= 1e-5 * scale
    assert (plain - real).abs().max() > 1e-3 * scale  # the test can tell quantised from float


@pytest.mark.parametrize("precision", [{"attn": "int8", "mlp": "int8"}, {"attn": "int8-weight", "mlp": "int4-weight"}],
                         ids=["int8", "8-bit and 4-bit weights"])
@pytest.mark.parametrize("images_per_call", [1, 8])
def test_ort_fake_quant_computes_what_quantised_like_ort_computes(builtin_model, mnist, images, precision,
                                                                  images_per_call):
    """ORT's scheme, with one dynamic activation range per call of the program's batch, equals the torch
    reference the ORT program is checked against, run call by call."""
    config, prepared = _prepared(builtin_model, mnist, {"depth": {"keep": 6}, "precision": precision})
    reference, parts = quantised_like_ort(prepared, config)
    assert parts == ("attn", "mlp")
    with torch.no_grad():
        expected = torch.cat([reference(c) for c in images.split(images_per_call)])
        with fake_quantised(prepared, scheme_for("ort", config, images=images_per_call)):
            fake = prepared(images)
        plain = prepared(images)
    scale = expected.abs().max()
    assert (fake - expected).abs().max() <= 1e-5 * scale
    assert (plain - expected).abs().max() > 1e-3 * scale


def test_ort_fake_quant_is_closer_to_the_ort_program_than_the_float_model(builtin_model, mnist, images):
    """Against the real ONNX Runtime int8 program (batch 1): the fake-quantised logits are far nearer than the
    float ones (ORT rounds its scales in float32, so not bit for bit)."""
    config, prepared = _prepared(builtin_model, mnist, INT8)
    program = get_runtime("onnxruntime").deploy(prepared, config, images[:1], 1)
    with torch.no_grad():
        got = program(images)
        with fake_quantised(prepared, scheme_for("ort", config, images=1)):
            fake = prepared(images)
        plain = prepared(images)
    assert (fake - got).abs().max() < 0.2 * (plain - got).abs().max()


def test_int4_weights_are_torchaos_tinygemm_groups():
    """torchao's int4 (tinygemm) quantise-dequantise of a weight, from its own primitives (CPU has no int4 kernel)."""
    from torchao.quantization.quant_primitives import (MappingType, _choose_qparams_affine_tinygemm,
                                                       _dequantize_affine_tinygemm, _quantize_affine_tinygemm)

    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    block = (1, 128)
    scale, zero = _choose_qparams_affine_tinygemm(w, MappingType.ASYMMETRIC, block, torch.int32, 0, 15,
                                                  scale_dtype=torch.bfloat16, zero_point_dtype=torch.bfloat16)
    q = _quantize_affine_tinygemm(w, block, scale, zero, torch.int32, 0, 15)
    expected = _dequantize_affine_tinygemm(q, block, scale, zero, torch.int32, 0, 15, output_dtype=torch.bfloat16)
    assert torch.equal(torchao_int4(w.float(), 128), expected)


def _dequantised(family: str, kind: str, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, weight) as the scheme feeds them to the product, written out independently of FakeQuantLinear."""
    if family == "ort":
        xq = ort_dynamic_uint8(x, None) if kind == "int8" else x
        wq = ort_int8_weight(w) if kind == "int8" else ort_blockwise(w, 8 if kind == "int8-weight" else 4)
        return xq.detach(), wq.detach()
    qw, sw = torchao_int8(w)
    if kind == "int8":
        qx, sx = torchao_int8(x)
        return (qx * sx).detach(), (qw * sw).detach()
    return x.detach(), (qw * sw).detach()


@pytest.mark.parametrize("family,kind", [("torchao", "int8"), ("torchao", "int8-weight"), ("ort", "int8"),
                                         ("ort", "int8-weight"), ("ort", "int4-weight")])
def test_gradients_pass_straight_through(family, kind):
    """The gradients reaching the weight, bias and input are those of the product of the quantised tensors."""
    gen = torch.Generator().manual_seed(1)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(3, 5, 64, generator=gen, requires_grad=True)
    grad = torch.randn(3, 5, 32, generator=gen)
    fake = FakeQuantLinear(linear, kind, FakeQuantScheme(family, ((None, "mlp", kind),)))
    y = fake(x)
    y.backward(grad)
    xq, wq = _dequantised(family, kind, x, linear.weight)
    xq.requires_grad_(True)
    wq.requires_grad_(True)
    ref = F.linear(xq, wq, linear.bias.detach())
    ref.backward(grad)
    assert torch.allclose(y, ref, atol=1e-5) and not torch.allclose(y, linear(x), atol=1e-4)
    assert torch.allclose(linear.weight.grad, wq.grad, atol=1e-5) and linear.weight.grad.abs().sum() > 0
    assert torch.allclose(x.grad, xq.grad, atol=1e-5) and torch.allclose(linear.bias.grad, grad.sum((0, 1)))


def test_the_model_gets_its_own_linears_back(builtin_model, mnist, images):
    """Inside the block the quantised linears are wrapped; after it (also after an error) the model has exactly
    its modules, parameters and state-dict keys again, and computes its float logits."""
    config, prepared = _prepared(builtin_model, mnist, MIXED)
    keys, linears = list(prepared.state_dict()), [m for m in prepared.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        before = prepared(images)
    with fake_quantised(prepared, scheme_for("torchao", config)) as model:
        assert sum(isinstance(m, FakeQuantLinear) for m in model.modules()) == 6 * 4
        assert any(".linear." in k for k in model.state_dict())
    with pytest.raises(RuntimeError, match="boom"), fake_quantised(prepared, scheme_for("torchao", config)):
        raise RuntimeError("boom")
    assert list(prepared.state_dict()) == keys
    assert [m for m in prepared.modules() if isinstance(m, torch.nn.Linear)] == linears
    with torch.no_grad():
        assert torch.equal(prepared(images), before)


def test_schemes_from_configs_and_their_errors():
    assert scheme_for("torchao", CompressionConfig.from_dict({"precision": {"attn": "bf16"}})) is None
    scheme = scheme_for("ort", CompressionConfig.from_dict({"precision": {"mlp": "int8"}}), images=4)
    assert scheme.targets == ((None, "mlp", "int8"),) and scheme.kinds(3) == [("mlp", "int8")]
    assert scheme.describe() == "ort: mlp int8"
    with pytest.raises(ConfigError, match=r"family 'tensorrt' is not known; expected one of torchao, ort"):
        FakeQuantScheme("tensorrt", ((None, "mlp", "int8"),))
    with pytest.raises(ConfigError, match=r"precision.attn 'fp16' is not quantised; expected one of int8"):
        FakeQuantScheme("ort", ((None, "attn", "fp16"),))
    with pytest.raises(ConfigError, match="images 0 must be a positive image count"):
        FakeQuantScheme("ort", ((None, "attn", "int8"),), images=0)


@pytest.mark.parametrize("name", runtime_names())
def test_every_runtime_says_how_it_quantises(name):
    """Eager and compile quantise with torchao (per token: the batch does not matter), ORT with its own scheme
    and one activation range per program call; TensorRT quantises nothing (it refuses integer precisions)."""
    config = CompressionConfig.from_dict(INT8)
    scheme = get_runtime(name).fake_quant_scheme(config, 8)
    expected = {"eager": ("torchao", None), "compile": ("torchao", None), "onnxruntime": ("ort", 8)}.get(name)
    assert (scheme and (scheme.family, scheme.images)) == expected
    assert get_runtime(name).fake_quant_scheme(CompressionConfig(), 8) is None
