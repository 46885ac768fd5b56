"""The predictors' structural features, read from the per-block list (spaces.blocks.block_shapes)."""

from __future__ import annotations

import pytest

from vitsearch.evaluators.latency.predict.residual import config_features, vocab_of
from vitsearch.evaluators.latency.predict.whole import is_mac_column, structure_features
from vitsearch.evaluators.macs import block_macs
from vitsearch.spaces import CompressionConfig
from vitsearch.spaces.blocks import block_shapes
from vitsearch.spaces.vit.dims import VitDims

DIMS = VitDims(embed_dim=32, num_heads=4, head_dim=8, mlp_hidden=64, depth=4, num_patches=16, num_prefix_tokens=1)
CONFIGS = [CompressionConfig.from_dict(c) for c in (
    {},
    {"depth": {"keep": 3}, "heads": {"keep": 2, "kv_heads": 1}, "tokens": {"method": "prune", "schedule": {"0": 0.5}},
     "sparsity": {"mlp": "structured:0.5"}, "precision": {"mlp": "int8"}},
    {"tokens": {"schedule": {"1": 0.75, "2": 0.5}}, "precision": {"attn": "bf16", "mlp": "bf16"}},
)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.summary())
def test_whole_model_mac_columns_are_the_blocks_macs(config):
    f = structure_features(config, DIMS)
    macs = sum(block_macs(b) for b in block_shapes(config, DIMS))
    assert sum(v for k, v in f.items() if is_mac_column(k)) == pytest.approx(1e-6 * macs, rel=1e-12)
    assert f["n_blocks"] == len(block_shapes(config, DIMS))


def test_residual_feature_positions_are_kept():
    """Saved trees split on feature positions: the row's layout is part of every predictor file."""
    vocab = vocab_of(CONFIGS, DIMS)
    assert vocab == {"precision": ["bf16", "fp32", "int8"], "sparsity": ["dense", "structured:0.5"],
                     "method": ["merge", "prune"]}
    # blocks, heads, K/V heads, precision attn / mlp, sparsity attn / mlp, method, tokens into attention / MLP,
    # one share per base block, the first stage
    assert config_features(CONFIGS[1], DIMS, vocab, 1.5) == [
        3.0, 2.0, 1.0, 1.0, 2.0, 0.0, 1.0, 1.0, 35.0, 27.0, 0.5, 1.0, 1.0, 1.0, 1.5]
    assert config_features(CONFIGS[0], DIMS, vocab, 2.0) == [
        4.0, 4.0, 4.0, 1.0, 1.0, 0.0, 0.0, -1.0, 68.0, 68.0, 1.0, 1.0, 1.0, 1.0, 2.0]
