"""Per-block configs (schema version 2): JSON, the version rule, and the non-uniform models compress builds."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from vitsearch.spaces import CompressionConfig, ConfigError, compress
from vitsearch.spaces.blocks import block_shapes
from vitsearch.spaces.vit.blocks import PerPart
from vitsearch.spaces.vit.dims import VitDims

from knob_examples import ALL_FIVE, KNOB_EXAMPLES

PER_BLOCK = {  # the built-in architecture: 8 blocks of 6 heads, MLP width 288
    "depth": {"keep": 6},
    "heads": {"keep": [6, 5, 4, 4, 3, 1], "kv_heads": [3, 5, 2, 1, 3, 1]},
    "tokens": {"schedule": {"2": 0.7}},
    "sparsity": {"mlp": "2:4", "mlp_keep": [288, 200, 104, 48, 40, 8]},
}


def test_per_block_config_round_trips_as_version_2():
    cfg = CompressionConfig.from_dict(PER_BLOCK)
    data = json.loads(cfg.to_json())
    assert data["schema_version"] == 2
    assert data["heads"] == PER_BLOCK["heads"] and data["sparsity"] == PER_BLOCK["sparsity"]
    again = CompressionConfig.from_json(cfg.to_json())
    assert again == cfg and hash(again) == hash(cfg) and again.is_per_block()
    assert cfg.summary() == ("depth 6 | heads 6,5,4,4,3,1 kv 3,5,2,1,3,1 | mlp 2:4 mlp_keep 288,200,104,48,40,8 | "
                             "tokens merge@2:0.7")
    cols = cfg.knob_columns()
    assert cols["heads_keep"] == 3.833 and cols["heads_kv"] == 2.5  # numbers, as a uniform config's
    assert cols["heads_blocks"] == "heads 6,5,4,4,3,1 kv 3,5,2,1,3,1"
    assert cols["sparsity_mlp_keep"] == "288,200,104,48,40,8"


def test_table_columns_of_uniform_and_per_block_configs_write_to_parquet(tmp_path):
    """A saliency search records both forms in one trials table: each column keeps one type."""
    import pandas as pd

    rows = [CompressionConfig.from_dict(d).knob_columns() for d in ({}, ALL_FIVE, PER_BLOCK)]
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    assert len(pd.read_parquet(tmp_path / "t.parquet")) == 3


@pytest.mark.parametrize("data", [*KNOB_EXAMPLES.values(), ALL_FIVE, {}], ids=lambda d: json.dumps(d)[:40])
def test_version_1_configs_load_and_write_back_unchanged(data):
    """A uniform config is what version 1 wrote: a stored run's configs read back to the same text."""
    old = {"schema_version": 1, **data}
    cfg = CompressionConfig.from_dict(old)
    assert not cfg.is_per_block()
    assert cfg.to_dict() == CompressionConfig.from_dict(data).to_dict()
    assert json.loads(cfg.to_json())["schema_version"] == 1
    assert CompressionConfig.from_dict({**old, "schema_version": 2}) == cfg


def test_an_all_equal_list_is_the_uniform_form():
    cfg = CompressionConfig.from_dict({"heads": {"keep": [4, 4, 4, 4, 4, 4, 4, 4], "kv_heads": [2] * 8}})
    assert cfg == CompressionConfig.from_dict({"heads": {"keep": 4, "kv_heads": 2}})
    assert cfg.to_dict() == {"schema_version": 1, "heads": {"kv_heads": 2, "keep": 4}}


@pytest.mark.parametrize("data, words", [
    ({"schema_version": 1, "heads": {"keep": [4, 3]}}, ["schema_version", "1", "per-block", "version 2"]),
    ({"depth": {"keep": 3}, "heads": {"keep": [4, 3]}}, ["heads.keep", "2 entries", "keeps 3 blocks"]),
    ({"depth": {"keep": 2}, "sparsity": {"mlp_keep": [8, 8, 8]}}, ["sparsity.mlp_keep", "3 entries", "keeps 2"]),
    ({"heads": {"keep": [4, 3], "kv_heads": [2, 2]}}, ["heads.kv_heads[1]", "2", "heads.keep[1] 3", "1, 3"]),
    ({"heads": {"keep": [4, 3], "kv_heads": [2, 1, 1]}}, ["heads.kv_heads", "3 entries", "2 in heads.keep"]),
    ({"heads": {"keep": [4, 0]}}, ["heads.keep", "[4, 0]", "positive"]),
    ({"heads": {"keep": []}}, ["heads.keep", "non-empty"]),
    ({"sparsity": {"mlp_keep": 96}}, ["sparsity.mlp_keep", "96", "list"]),
    ({"sparsity": {"mlp": "structured:0.5", "mlp_keep": [8]}}, ["sparsity.mlp_keep", "structured:0.5"]),
])
def test_invalid_per_block_configs_are_refused_clearly(data, words):
    with pytest.raises(ConfigError) as err:
        CompressionConfig.from_dict(data)
    assert all(w in str(err.value) for w in words), str(err.value)


def _shapes(model):
    return [(b.attn.num_heads, getattr(b.attn, "num_kv_heads", b.attn.num_heads), b.mlp.fc1.out_features)
            for b in model.blocks]


def test_compress_builds_each_block_as_asked(tiny, tiny_input):
    cfg = CompressionConfig.from_dict(PER_BLOCK)
    out = compress(tiny, cfg, calibration=torch.randn(8, 1, 28, 28))
    h, kv, w = (PER_BLOCK["heads"]["keep"], PER_BLOCK["heads"]["kv_heads"], PER_BLOCK["sparsity"]["mlp_keep"])
    assert _shapes(out) == list(zip(h, kv, w))
    for block in out.blocks:  # 2:4 masks were laid on the narrowed MLP: exactly half of each weight is zero
        for lin in (block.mlp.fc1, block.mlp.fc2):
            assert (lin.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    shapes = block_shapes(cfg, VitDims.of(tiny))
    assert [(s.q_heads, s.kv_heads, s.mlp_hidden) for s in shapes] == _shapes(out)
    assert {s.sparsity for s in shapes} == {PerPart("dense", "2:4")}
    y = out(tiny_input)
    assert y.shape == (3, 10) and torch.isfinite(y).all()
    assert torch.equal(pickle.loads(pickle.dumps(out))(tiny_input), y)
    assert out.vitsearch_info["heads"]["num_heads"] == h and out.vitsearch_info["sparsity"]["mlp"]["hidden_kept"] == w


def test_per_block_heads_and_widths_on_deit(deit, deit_input):
    keep, widths = [1, 2, 3] * 4, [768 - 64 * i for i in range(12)]
    out = compress(deit, {"heads": {"keep": keep}, "sparsity": {"mlp_keep": widths}})
    assert [s[0] for s in _shapes(out)] == keep and [s[2] for s in _shapes(out)] == widths
    for i, kept in enumerate(out.vitsearch_info["heads"]["kept"]):
        assert len(kept) == keep[i] and kept == sorted(kept)
    assert torch.isfinite(out(deit_input)).all()


def test_full_lists_change_nothing(tiny, tiny_input):
    out = compress(tiny, {"heads": {"keep": [6] * 7 + [5]}, "sparsity": {"mlp_keep": [288] * 8}})
    assert _shapes(out)[:7] == [(6, 6, 288)] * 7 and _shapes(out)[7] == (5, 5, 288)
    same = compress(tiny, {"sparsity": {"mlp_keep": [288] * 8}})
    torch.testing.assert_close(same(tiny_input), tiny(tiny_input), rtol=0, atol=0)


@pytest.mark.parametrize("data, words", [
    ({"heads": {"keep": [4] * 6 + [3]}}, ["heads.keep", "7 entries", "keeps 8 blocks"]),
    ({"sparsity": {"mlp_keep": [300] + [8] * 7}}, ["sparsity.mlp_keep[0]", "300", "288"]),
    ({"heads": {"keep": [7] + [4] * 7}}, ["heads.keep[0]", "7", "6 heads"]),
])
def test_configs_that_do_not_fit_the_model_are_refused(tiny, data, words):
    """By compress and by block_shapes alike (the MACs and predictors read the latter)."""
    for check in (lambda: compress(tiny, data), lambda: block_shapes(CompressionConfig.from_dict(data),
                                                                     VitDims.of(tiny))):
        with pytest.raises(ConfigError) as err:
            check()
        assert all(w in str(err.value) for w in words), str(err.value)
