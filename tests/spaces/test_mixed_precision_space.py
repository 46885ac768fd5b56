"""``space.allocation.precision: sensitivity``: one budget, the share of linear groups quantised, and per-block
precision chosen by measured sensitivity per MAC saved (#24, ModelOpt AutoQuantize-style)."""

from __future__ import annotations

import pytest

from vitsearch.spaces import CompressionConfig, ConfigError, SearchSpace, compress
from vitsearch.spaces.budgets import QUANTISED, AllocationSpec
from vitsearch.spaces.mixedprecision import Sensitivity

DEPTH = 8  # the built-in architecture's blocks
#: block 1's attention and block 5's MLP are fragile; block 7 is the least important (dropped first)
SENS = Sensitivity(attn=(1e-4, 9.0, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4),
                   mlp=(2e-4, 2e-4, 2e-4, 2e-4, 2e-4, 7.0, 2e-4, 2e-4), precision="int8", images=16,
                   scheme="torchao", blocks=(5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 1.0))
SPACE = {"allocation": {"precision": "sensitivity"}}


def _lists(config: CompressionConfig, n: int = DEPTH) -> tuple[list[str], list[str]]:
    blocks = config.precision.per_block(n)
    return [b.attn for b in blocks], [b.mlp for b in blocks]


def test_the_budget_replaces_the_per_part_choices(tiny):
    space = SearchSpace.from_spec(SPACE, tiny, sensitivity=SENS)
    dists = space.distributions()
    assert QUANTISED in dists and "precision.attn" not in dists and "precision.mlp" not in dists
    assert dists[QUANTISED].choices == (0.0, 0.25, 0.5, 0.75, 1.0)


def test_the_fragile_groups_are_the_last_to_be_quantised(tiny):
    space = SearchSpace.from_spec(SPACE, tiny, sensitivity=SENS)
    attn, mlp = _lists(space.config_from_params({QUANTISED: 0.75}))  # 12 of 16 groups
    assert sum(v == "int8" for v in attn + mlp) == 12
    assert attn[1] == "fp32" and mlp[5] == "fp32"  # the two fragile ones stay in the base precision
    least = space.preset_params()[0]
    assert space.config_from_params({**least, QUANTISED: 0.0}) == CompressionConfig()  # all-base lists: the identity
    attn, mlp = _lists(space.config_from_params({QUANTISED: 1.0}))
    assert set(attn + mlp) == {"int8"}


def test_dropped_blocks_leave_the_ranking_and_the_lists_follow_the_kept_blocks(tiny):
    space = SearchSpace.from_spec({**SPACE, "depth": {"keep_min": 6}}, tiny, sensitivity=SENS)
    config = space.config_from_params({"depth.keep": 7, QUANTISED: 0.5})
    attn, mlp = _lists(config, 7)
    assert len(attn) == len(mlp) == 7 and sum(v == "int8" for v in attn + mlp) == 7
    assert space.params_for(config)[QUANTISED] == 0.5  # round trip, for enqueueing
    model = compress(tiny, config)
    assert len(model.blocks) == 7


def test_size_and_presets_count_the_budget(tiny):
    space = SearchSpace.from_spec(SPACE, tiny, sensitivity=SENS)
    uniform = SearchSpace.from_spec({"precision": {"attn": ["fp32"], "mlp": ["fp32"]}}, tiny)
    assert space.size() == uniform.size() * 5
    presets = space.presets()
    assert presets[0] == CompressionConfig() and any(p.precision.is_per_block() or not p.precision.is_identity()
                                                     for p in presets[1:])


def test_a_bf16_model_keeps_its_unquantised_groups_in_bf16(tiny):
    space = SearchSpace.from_spec(SPACE, tiny, sensitivity=SENS, base_precision="bf16")
    config = space.config_from_params({QUANTISED: 0.5})
    attn, mlp = _lists(config)
    assert set(attn + mlp) == {"bf16", "int8"} and config.precision.base == "bf16"


def test_the_mode_is_refused_without_what_it_needs(tiny):
    with pytest.raises(ConfigError, match=r"needs the base model's measured sensitivity"):
        SearchSpace.from_spec(SPACE, tiny)
    with pytest.raises(ConfigError, match=r"needs a quantised choice in space.precision"):
        SearchSpace.from_spec({**SPACE, "precision": {"attn": ["fp32"], "mlp": ["fp32", "bf16"]}}, tiny,
                              sensitivity=SENS)
    with pytest.raises(ConfigError, match=r"'int8' cannot run on device 'cpu' in this runtime"):
        SearchSpace.from_spec(SPACE, tiny, precisions=("fp32",), sensitivity=SENS)
    with pytest.raises(Exception, match=r"quantised only applies with precision sensitivity"):
        AllocationSpec(quantised=[0.5])
    with pytest.raises(Exception, match=r"share outside \[0, 1\]"):
        AllocationSpec(precision="sensitivity", quantised=[1.5])


def test_a_study_measures_the_sensitivity_in_its_runtime_and_draws_runnable_configs(tiny_input):
    """The preflight path a run takes: sensitivity measured on the calibration split with torchao's scheme."""
    import torch

    from vitsearch.evaluators.models import ModelSpec, load_base_model
    from vitsearch.search.preflight import runtime_search_space
    from vitsearch.search.study import parse_study

    spec = parse_study({"space": SPACE, "data": {"calibration_size": 32}})
    base = load_base_model(ModelSpec("builtin:vitsearch-tiny", True, None, None))
    space, _ = runtime_search_space(spec, base, "cpu")
    assert space.mixed.sensitivity.scheme == "torchao" and space.mixed.sensitivity.images == 32
    config = space.config_from_params({QUANTISED: 0.25})
    out = compress(base, config)(tiny_input)
    assert torch.isfinite(out).all()
