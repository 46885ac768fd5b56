"""Per-block precision (issue #24): ``precision.attn`` / ``precision.mlp`` as one precision per kept block.

The config form (JSON, schema versions, collapse, one-line errors), what ``compress``
builds from it (exactly the named blocks' linears quantised or cast), and the cost
structure (each BlockShape its own block's precision).
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from vitsearch.spaces import CompressionConfig, ConfigError, DeviceError, PrecisionConfig, compress, prepare
from vitsearch.spaces.blocks import block_shapes
from vitsearch.spaces.vit.blocks import PerPart
from vitsearch.spaces.vit.dims import VitDims

MLP_INT8 = ["int8", "fp32", "int8", "fp32", "fp32", "int8", "fp32", "fp32"]  # the built-in model keeps 8 blocks
INT8_BLOCKS = [i for i, v in enumerate(MLP_INT8) if v == "int8"]


def _quantised(linear: torch.nn.Module) -> bool:
    return type(linear.weight) not in (torch.Tensor, torch.nn.Parameter)


def test_a_per_block_precision_round_trips_as_version_2_and_with_a_base_as_3():
    cfg = CompressionConfig.from_dict({"precision": {"mlp": MLP_INT8}})
    data = json.loads(cfg.to_json())
    assert data == {"schema_version": 2, "precision": {"mlp": MLP_INT8}}
    again = CompressionConfig.from_json(cfg.to_json())
    assert again == cfg and hash(again) == hash(cfg) and pickle.loads(pickle.dumps(cfg)) == cfg
    assert cfg.is_per_block() and cfg.precision.is_per_block() and cfg.precision.mlp == tuple(MLP_INT8)
    based = CompressionConfig.from_dict({"precision": {"mlp": ["int8", "bf16"] * 4, "attn": "bf16", "base": "bf16"}})
    assert json.loads(based.to_json())["schema_version"] == 3
    assert CompressionConfig.from_json(based.to_json()) == based


def test_an_all_equal_list_is_the_uniform_precision():
    cfg = CompressionConfig.from_dict({"precision": {"mlp": ["int8"] * 8, "attn": ("bf16", "bf16")}})
    assert cfg == CompressionConfig.from_dict({"precision": {"mlp": "int8", "attn": "bf16"}})
    assert not cfg.is_per_block() and cfg.to_dict()["schema_version"] == 1


def test_summary_and_columns_name_the_blocks_and_stay_strings(tmp_path):
    import pandas as pd

    cfg = CompressionConfig.from_dict({"depth": {"keep": 4}, "precision": {
        "attn": "bf16", "mlp": ["int8", "bf16", "int8", "bf16"], "base": "bf16"}})
    assert cfg.precision.summary() == "bf16 mlp int8,bf16,int8,bf16"
    cols = cfg.knob_columns()
    assert cols["precision_mlp"] == "int8,bf16,int8,bf16" and cols["precision_attn"] == "bf16"
    assert cols["precision_base"] == "bf16"
    rows = [c.knob_columns() for c in (CompressionConfig(), CompressionConfig.from_dict({"precision": {"mlp": "int8"}}),
                                       cfg)]
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")  # one type per column across both forms
    assert list(pd.read_parquet(tmp_path / "t.parquet")["precision_mlp"]) == ["fp32", "int8", "int8,bf16,int8,bf16"]


@pytest.mark.parametrize("data, words", [
    ({"precision": {"mlp": ["int8", "fp32", "int3"]}}, ["precision.mlp[2]", "'int3'", "int8-weight"]),
    ({"precision": {"attn": ["fp32", 8]}}, ["precision.attn[1]", "8", "fp16"]),
    ({"precision": {"mlp": []}}, ["precision.mlp", "[]", "non-empty list"]),
    ({"precision": {"mlp": 8}}, ["precision.mlp", "8", "one per kept block"]),
    ({"depth": {"keep": 3}, "precision": {"mlp": ["int8", "fp32"]}},
     ["precision.mlp", "2 entries", "keeps 3 blocks", "one precision for all"]),
    ({"schema_version": 1, "precision": {"mlp": ["int8", "fp32"]}}, ["schema_version", "per-block", "version 2"]),
])
def test_bad_per_block_precisions_are_one_line_config_errors(data, words):
    with pytest.raises(ConfigError) as err:
        CompressionConfig.from_dict(data)
    text = str(err.value)
    assert "\n" not in text and err.value.exit_code == 2
    for word in words:
        assert word in text, (word, text)


def test_compress_checks_the_length_against_the_kept_blocks_before_slow_work(tiny):
    with pytest.raises(ConfigError, match=r"precision.mlp: 3 entries .* keeps 8 blocks.*one precision"):
        prepare(tiny, {"precision": {"mlp": ["int8", "fp32", "int8"]}})
    with pytest.raises(ConfigError, match=r"precision.attn: 8 entries .* keeps 6 blocks"):
        prepare(tiny, {"depth": {"keep": 6}, "precision": {"attn": MLP_INT8}})


def test_a_per_block_entry_the_device_cannot_run_is_named_by_its_index(tiny):
    with pytest.raises(DeviceError, match=r"precision.mlp\[1\]: 'int4-weight' cannot run on device 'cpu'") as err:
        compress(tiny, {"precision": {"mlp": ["fp32", "int4-weight"] * 4}})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("base", ["fp32", "bf16"])
def test_compress_quantises_exactly_the_blocks_named(tiny, tiny_input, base):
    mlp = [v if v == "int8" else base for v in MLP_INT8]
    cfg = {"precision": {"mlp": mlp, "attn": base, "base": base}}
    out = compress(tiny, cfg)
    for i, block in enumerate(out.blocks):
        assert _quantised(block.mlp.fc1) == _quantised(block.mlp.fc2) == (i in INT8_BLOCKS), i
        assert not _quantised(block.attn.qkv) and not _quantised(block.attn.proj)
        assert block.attn.qkv.weight.dtype == (torch.float32 if base == "fp32" else torch.bfloat16)
    assert out.vitsearch_info["precision"]["mlp"] == mlp
    with torch.no_grad():
        ref, got = tiny(tiny_input), out(tiny_input)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert (got - ref).abs().max() <= 0.1 * ref.abs().max()


def test_float_entries_cast_only_their_own_blocks(tiny, tiny_input):
    attn = ["fp16", "int8-weight"] + ["fp32"] * 6
    out = compress(tiny, {"precision": {"attn": attn}})
    assert out.blocks[0].attn.qkv.weight.dtype == torch.float16 and _quantised(out.blocks[1].attn.proj)
    assert all(b.attn.qkv.weight.dtype == torch.float32 and not _quantised(b.attn.qkv) for b in out.blocks[2:])
    assert all(not _quantised(b.mlp.fc1) and b.mlp.fc1.weight.dtype == torch.float32 for b in out.blocks)
    with torch.no_grad():
        got = out(tiny_input)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()


def test_block_shapes_carry_each_blocks_own_precision(tiny):
    dims = VitDims.of(tiny)
    cfg = CompressionConfig.from_dict({"depth": {"keep": 4},
                                       "precision": {"attn": ["int8", "fp32", "fp32", "int8"], "mlp": "int8-weight"}})
    shapes = block_shapes(cfg, dims)
    assert [b.precision for b in shapes] == [PerPart("int8", "int8-weight"), PerPart("fp32", "int8-weight"),
                                              PerPart("fp32", "int8-weight"), PerPart("int8", "int8-weight")]
    too_long = CompressionConfig.from_dict({"precision": {"mlp": ["int8", "fp32"] * 5}})
    with pytest.raises(ConfigError, match=r"precision.mlp: 10 entries .* keeps 8 blocks"):
        block_shapes(too_long, dims)


def test_per_block_helpers_of_the_precision_config():
    p = PrecisionConfig(attn="int8", mlp=["fp32", "int4-weight"])
    assert p.per_block(2) == [PerPart("int8", "fp32"), PerPart("int8", "int4-weight")]
    assert p.named_values() == [("precision.attn", "int8"), ("precision.mlp[0]", "fp32"),
                                ("precision.mlp[1]", "int4-weight"), ("precision.base", "fp32")]
    assert not p.is_identity() and PrecisionConfig(mlp=["fp32", "fp32"]).is_identity()
