"""block_shapes: a config's per-block cost structure, against the model compress() builds."""

from __future__ import annotations

import pytest
import torch

from vitsearch.spaces import CompressionConfig, ConfigError, compress
from vitsearch.spaces.blocks import block_shapes
from vitsearch.spaces.knobs import REGISTRY
from vitsearch.spaces.vit.blocks import BlockShape, PerPart, base_blocks
from vitsearch.spaces.vit.dims import VitDims

from knob_examples import ALL_FIVE, KNOB_EXAMPLES

TINY = VitDims(embed_dim=48, num_heads=6, head_dim=8, mlp_hidden=192, depth=8, num_patches=49, num_prefix_tokens=1)


def test_identity_config_gives_the_base_dims(arch):
    model, _ = arch
    dims = VitDims.of(model)
    shapes = block_shapes(CompressionConfig(), dims)
    assert shapes == tuple(base_blocks(dims))
    n = dims.num_patches + dims.num_prefix_tokens
    assert len(shapes) == dims.depth
    for b in shapes:
        assert (b.embed_dim, b.head_dim, b.q_heads, b.kv_heads, b.mlp_hidden, b.n_attn, b.n_mlp) == (
            dims.embed_dim, dims.head_dim, dims.num_heads, dims.num_heads, dims.mlp_hidden, n, n)
        assert b.precision == PerPart("fp32", "fp32") and b.sparsity == PerPart("dense", "dense")
        assert b.token_share is None


@pytest.mark.parametrize("name", REGISTRY)
def test_each_knob_identity_leaves_the_blocks_alone(name):
    """Every registered cost contribution maps the base list to itself for its identity sub-config."""
    knob = REGISTRY[name]
    blocks = base_blocks(TINY)
    assert knob.shape(blocks, knob.config_cls(), TINY) == blocks


def _observed(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """(tokens entering attention, tokens entering the MLP) per block, as a forward pass sees them."""
    seen: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape[1]))
             for blk in model.blocks for m in (blk.attn, blk.mlp)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return list(zip(seen[::2], seen[1::2]))


@pytest.mark.parametrize("name", sorted({**KNOB_EXAMPLES, "all-five": ALL_FIVE}))
def test_block_shapes_describe_the_compressed_model(tiny, tiny_input, name):
    config = CompressionConfig.from_dict(KNOB_EXAMPLES.get(name, ALL_FIVE))
    model = compress(tiny, config)
    shapes = block_shapes(config, VitDims.of(tiny))
    assert len(shapes) == len(model.blocks)
    for shape, block in zip(shapes, model.blocks):
        attn = block.attn
        assert (shape.q_heads, shape.kv_heads) == (attn.num_heads, getattr(attn, "num_kv_heads", attn.num_heads))
        assert shape.mlp_hidden == block.mlp.fc1.out_features
        assert shape.precision == PerPart(config.precision.attn, config.precision.mlp)
        assert shape.sparsity == PerPart(config.sparsity.attn, config.sparsity.mlp)
    assert [(b.n_attn, b.n_mlp) for b in shapes] == _observed(model, tiny_input)


def test_blocks_carry_the_schedule_per_block():
    config = CompressionConfig.from_dict({"depth": {"keep": 4}, "tokens": {"method": "prune", "schedule": {"1": 0.5}}})
    shapes = block_shapes(config, TINY)
    assert [b.token_share for b in shapes] == [None, 0.5, None, None]
    assert [(b.n_attn, b.n_mlp) for b in shapes] == [(50, 50), (50, 25), (25, 25), (25, 25)]  # round(24.5) == 24
    assert {b.token_method for b in shapes} == {"prune"}


def test_configs_that_do_not_fit_the_dims_are_refused():
    with pytest.raises(ConfigError, match="depth.keep: 9 is not allowed for a model with 8 blocks"):
        block_shapes(CompressionConfig.from_dict({"depth": {"keep": 9}}), TINY)
    with pytest.raises(ConfigError, match="tokens.schedule: block 8 is not allowed"):
        block_shapes(CompressionConfig.from_dict({"tokens": {"schedule": {"8": 0.7}}}), TINY)


def test_block_shapes_are_frozen_plain_data():
    """Predictors travel to Ray workers and cache by config: the list pickles and hashes."""
    import dataclasses
    import pickle

    shapes = block_shapes(CompressionConfig.from_dict(ALL_FIVE), TINY)
    assert pickle.loads(pickle.dumps(shapes)) == shapes and hash(shapes) == hash(tuple(shapes))
    with pytest.raises(dataclasses.FrozenInstanceError):
        shapes[0].q_heads = 1
    assert isinstance(shapes[0], BlockShape)
