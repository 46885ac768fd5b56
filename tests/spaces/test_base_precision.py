"""``precision.base``: the precision the rest of a model runs in, and the reference it defines (#23 item 8)."""

from __future__ import annotations

import pickle

import pytest
import torch

from vitsearch.spaces import CompressionConfig, ConfigError, PrecisionConfig, SearchSpace, compress
from vitsearch.spaces.knobs.subspace import Target
from vitsearch.spaces.vit.dims import VitDims

BF16_INT8_MLP = {"precision": {"attn": "bf16", "mlp": "int8", "base": "bf16"}}


def test_the_json_form_names_the_base_only_when_it_is_not_fp32_and_needs_schema_3():
    ref = CompressionConfig.reference("bf16")
    assert ref.to_dict() == {"schema_version": 3, "precision": {"attn": "bf16", "mlp": "bf16", "base": "bf16"}}
    assert CompressionConfig.from_dict(ref.to_dict()) == ref
    assert CompressionConfig.reference("fp32") == CompressionConfig()
    # what older vitsearch wrote still loads, and means fp32 everywhere else
    old = CompressionConfig.from_dict({"schema_version": 1, "precision": {"mlp": "int8"}})
    assert old.precision.base == "fp32" and old.to_dict()["schema_version"] == 1
    with pytest.raises(ConfigError, match=r"schema_version: 2 is not allowed with precision.base; it needs version 3"):
        CompressionConfig.from_dict({"schema_version": 2, "precision": {"base": "bf16"}})
    with pytest.raises(ConfigError, match=r"precision.base: 'int8' is not allowed; expected one of fp32, fp16, bf16"):
        PrecisionConfig(base="int8")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) bse"):
        CompressionConfig.from_dict({"precision": {"bse": "bf16"}})


def test_summary_and_columns_say_the_base_and_the_parts_that_differ():
    assert CompressionConfig.reference("bf16").summary() == "bf16"
    cfg = CompressionConfig.from_dict({"depth": {"keep": 6}, **BF16_INT8_MLP})
    assert cfg.summary() == "depth 6 | bf16 mlp int8"
    assert cfg.knob_columns()["precision_base"] == "bf16"
    assert CompressionConfig.from_dict({"precision": {"mlp": "int8"}}).summary() == "mlp int8"  # as before


def test_on_base_moves_unnamed_precisions_to_the_base_and_keeps_named_ones():
    cfg = CompressionConfig.from_dict({"depth": {"keep": 6}, "precision": {"mlp": "int8"}})
    on = cfg.on_base("bf16")
    assert on.precision == PrecisionConfig(attn="bf16", mlp="int8", base="bf16") and on.depth == cfg.depth
    assert cfg.on_base("fp32") is cfg
    named = CompressionConfig.from_dict({"precision": {"base": "fp16", "attn": "fp16", "mlp": "fp16"}})
    assert named.on_base("bf16") is named
    assert CompressionConfig.reference("bf16").is_reference("bf16") and CompressionConfig().is_reference("bf16")
    assert not cfg.on_base("bf16").is_reference("bf16")


def test_the_reference_runs_every_module_in_the_base_with_fp32_in_and_out(tiny, tiny_input):
    model = compress(tiny, CompressionConfig.reference("bf16"))
    floats = {p.dtype for p in model.parameters()}
    assert floats == {torch.bfloat16}  # patch embedding, norms, head and every block
    out = model(tiny_input)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, tiny(tiny_input), atol=0.15, rtol=0.05)


def test_a_quantised_part_in_a_bf16_model_keeps_the_rest_in_bf16(tiny, tiny_input):
    model = compress(tiny, CompressionConfig.from_dict(BF16_INT8_MLP))
    assert model.norm.weight.dtype == torch.bfloat16 and model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert type(model.blocks[0].mlp.fc1.weight).__name__ != "Parameter"  # torchao's int8 tensor
    out = model(tiny_input)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out.argmax(1) == tiny(tiny_input).argmax(1)).float().mean() >= 2 / 3
    assert model.vitsearch_info["precision"]["base"] == "bf16"
    pickle.loads(pickle.dumps(model))  # Ray ships finalized models: the hooks must pickle


def test_an_fp32_part_inside_a_bf16_model_hands_back_bf16(tiny, tiny_input):
    model = compress(tiny, CompressionConfig.from_dict({"precision": {"attn": "bf16", "mlp": "fp32", "base": "bf16"}}))
    assert model.blocks[0].mlp.fc1.weight.dtype == torch.float32
    seen = []
    model.blocks[0].mlp.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    assert model(tiny_input).dtype == torch.float32
    assert seen == [torch.bfloat16]  # cast back by the part's own hook, which runs first


def test_the_space_of_a_bf16_model_chooses_between_bf16_and_int8(tiny):
    space = SearchSpace.from_spec({}, tiny, base_precision="bf16")
    assert space.distributions()["precision.mlp"].choices == ("bf16", "int8")
    part = space.parts["precision"]
    assert part.presets().least == {"precision.attn": "bf16", "precision.mlp": "bf16"}
    assert part.decode({"precision.mlp": "int8"}, {}) == {"attn": "bf16", "mlp": "int8", "base": "bf16"}
    # the least compressing preset is the reference itself; every drawn config carries the base
    assert CompressionConfig.reference("bf16") in space.presets()
    drawn = space.config_from_params({"precision.attn": "int8"})
    assert drawn.precision == PrecisionConfig(attn="int8", mlp="bf16", base="bf16")
    assert space.params_for(drawn)["precision.attn"] == "int8"
    explicit = SearchSpace.from_spec({"precision": {"mlp": ["fp32", "int8"]}}, tiny, base_precision="bf16")
    assert explicit.distributions()["precision.mlp"].choices == ("fp32", "int8")  # a study's own list is kept
    assert explicit.distributions()["precision.attn"].choices == ("bf16", "int8")
    fp32 = SearchSpace.from_spec({}, tiny)
    assert fp32.distributions()["precision.mlp"].choices == ("fp32", "int8")
    assert "base" not in fp32.parts["precision"].decode({}, {})


def test_a_base_the_target_cannot_run_is_refused_in_one_line(tiny):
    from vitsearch.spaces.knobs.precision import PrecisionChoices, PrecisionSpace

    target = Target("cpu", ("fp32", "int8"), "bf16")
    with pytest.raises(ConfigError, match=r"^model.precision: 'bf16' cannot run on device 'cpu' in this runtime; "
                                          r"it runs fp32$"):
        PrecisionChoices(PrecisionSpace(), VitDims.of(tiny), target, {}).check()
