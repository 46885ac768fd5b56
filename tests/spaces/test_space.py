"""SearchSpace / SpaceSpec: static distributions, only valid configs, exact size."""

from __future__ import annotations

import itertools

import optuna
import pydantic
import pytest
import torch

from vitsearch.spaces import CompressionConfig, ConfigError, SearchSpace, SpaceSpec, compress
from vitsearch.spaces.knobs import REGISTRY
from vitsearch.spaces.knobs.base import FIELDS
from vitsearch.spaces.vit.dims import VitDims

optuna.logging.set_verbosity(optuna.logging.WARNING)
TINY = VitDims(embed_dim=48, num_heads=6, head_dim=8, mlp_hidden=192, depth=8, num_patches=49, num_prefix_tokens=1)
WIDE = {
    "depth": {"keep_min": 3},
    "heads": {"keep": [2, 4, 6], "kv_heads": [1, 2, 3, 6]},
    "tokens": {"methods": ["merge", "prune"], "blocks": [1, 3, 5], "shares": [1.0, 0.8, 0.5]},
    "sparsity": {"attn": ["dense", "2:4", "unstructured:0.5"], "mlp": ["dense", "2:4", "structured:0.5"]},
    "precision": {"attn": ["fp32", "int8", "bf16"], "mlp": ["fp32", "int8", "int8-weight"]},
}


@pytest.mark.parametrize("sampler", [optuna.samplers.NSGAIISampler(seed=0, population_size=8),
                                     optuna.samplers.TPESampler(seed=0, n_startup_trials=5)])
def test_suggest_yields_valid_configs_that_compress(tiny, tiny_input, sampler):
    space = SearchSpace.from_spec(WIDE, tiny)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    seen = set()
    for i in range(16):
        trial = study.ask(space.distributions())
        cfg = space.suggest(trial)
        assert CompressionConfig.from_json(cfg.to_json()) == cfg
        out = compress(tiny, cfg)
        with torch.no_grad():
            y = out(tiny_input)
        assert torch.isfinite(y).all()
        seen.add(cfg)
        study.tell(trial, [float(y.abs().mean()), float(i)])
    assert len(seen) > 8
    assert set(study.trials[-1].params) <= set(space.distributions())


def test_distributions_are_static():
    space = SearchSpace(WIDE, TINY)
    assert space.distributions() == space.distributions()
    assert "heads.kv" in space.distributions() and "tokens.share@5" in space.distributions()


def _all_configs(space):
    dists = space.distributions()
    values = [range(d.low, d.high + 1) if hasattr(d, "low") else d.choices for d in dists.values()]
    for combo in itertools.product(*values):
        yield space.config_from_params(dict(zip(dists, combo)))


def test_size_counts_distinct_configs():
    spec = {"depth": {"keep_min": 4, "keep_max": 6}, "heads": {"keep": [4, 6], "kv_heads": [1, 2, 3]},
            "tokens": {"methods": ["merge", "prune"], "blocks": [2, 4, 5], "shares": [1.0, 0.7]},
            "sparsity": {"attn": ["dense"], "mlp": ["dense", "2:4"]}, "precision": {"mlp": ["fp32"], "attn": ["fp32", "int8"]}}
    space = SearchSpace(spec, TINY)
    configs = set(_all_configs(space))
    assert space.size() == len(configs)
    for cfg in configs:  # every mapped config is valid for the model dims
        assert cfg.heads.kv_heads is None or (cfg.heads.keep or 6) % cfg.heads.kv_heads == 0
        assert all(b < (cfg.depth.keep or 8) for b, _ in cfg.tokens.schedule)


def test_default_space_fits_the_builtin_model(tiny):
    space = SearchSpace.from_spec(None, tiny)
    assert space.size() > 1000
    assert space.keep_range == (4, 8) and space.kv_choices == [1, 2, 3, 6]
    presets = space.presets()
    assert presets[0].is_identity()
    assert len(presets) == len(set(presets)) >= 4
    assert any(p.precision.mlp == "int8" for p in presets)


def test_presets_enqueue_as_parameters(tiny):
    space = SearchSpace.from_spec(WIDE, tiny)
    study = optuna.create_study(directions=["minimize", "minimize"])
    for params in space.preset_params():
        study.enqueue_trial(params)
    for cfg in space.presets():
        assert space.suggest(study.ask(space.distributions())) == cfg
        assert space.config_from_params(space.params_for(cfg)) == cfg


def test_params_for_refuses_configs_outside_the_space():
    space = SearchSpace(None, TINY)
    with pytest.raises(ConfigError, match="not inside this search space"):
        space.params_for(CompressionConfig.from_dict({"precision": {"mlp": "bf16"}}))


def test_kv_choice_maps_to_a_divisor_of_kept_heads():
    space = SearchSpace({"heads": {"keep": [4, 6], "kv_heads": [1, 2, 3, 6]}}, TINY)
    cfg = space.config_from_params({"heads.keep": 4, "heads.kv": 3})
    assert cfg.heads == cfg.heads.__class__(keep=4, kv_heads=2)
    assert space.config_from_params({"heads.keep": 6, "heads.kv": 6}).heads.is_identity()


@pytest.mark.parametrize("spec, words", [
    ({"depth": {"keep_min": 6, "keep_max": 4}}, ["keep_min"]),
    ({"tokens": {"shares": [0.3]}}, ["0.5", "merge"]),
    ({"sparsity": {"attn": ["structured:0.5"]}}, ["sparsity.attn", "mlp only"]),
    ({"precision": {"mlp": ["int3"]}}, ["int3"]),
    ({"heads": {"keep": [0]}}, ["below 1"]),
    ({"depht": {}}, ["depht"]),
])
def test_spec_validation_messages(spec, words):
    with pytest.raises(pydantic.ValidationError) as err:
        SpaceSpec.model_validate(spec)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("spec, words", [
    ({"depth": {"keep_max": 9}}, ["space.depth", "8 blocks"]),
    ({"heads": {"keep": [8]}}, ["space.heads.keep", "6 heads"]),
    ({"heads": {"keep": [4], "kv_heads": [3]}}, ["space.heads.kv_heads", "divides"]),
    ({"tokens": {"blocks": [8]}}, ["space.tokens.blocks", "8"]),
    ({"precision": {"mlp": ["int4-weight"]}}, ["space.precision.mlp", "int4-weight", "cpu"]),
])
def test_space_checks_against_the_model(spec, words):
    with pytest.raises(ConfigError) as err:
        SearchSpace(spec, TINY)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_space_and_configs_pickle():
    import pickle

    space = SearchSpace(WIDE, TINY)
    again = pickle.loads(pickle.dumps(space))
    assert again.size() == space.size() and again.distributions() == space.distributions()
    cfg = space.presets()[-1]
    assert pickle.loads(pickle.dumps(cfg)) == cfg


# ---- every registered knob's sub-space ----------------------------------------------
def test_spec_sections_are_the_registered_knobs():
    assert tuple(SpaceSpec.model_fields) == (*FIELDS, "allocation")  # the knobs, then how they are set per block
    assert list(SpaceSpec.model_json_schema()["properties"]) == [*FIELDS, "allocation"]
    # the parameters come knob by knob, in the same order
    names = list(SearchSpace(WIDE, TINY).distributions())
    assert [n.split(".")[0] for n in names] == sorted((n.split(".")[0] for n in names), key=FIELDS.index)


@pytest.mark.parametrize("name", FIELDS)
def test_each_knob_sub_space_default_round_trips(name):
    cls = REGISTRY[name].space_spec
    default = cls()
    assert cls.model_validate(default.model_dump(mode="json")) == default
    assert SpaceSpec.model_validate({name: default.model_dump(mode="json")}) == SpaceSpec()
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        SpaceSpec.model_validate({name: {"not_a_field": 1}})


@pytest.mark.parametrize("name", FIELDS)
def test_each_knob_decodes_every_parameter_value_to_a_valid_config(name):
    """Every combination of one knob's parameters (the others left at their first choice)
    decodes to a valid config that encodes back; ``count`` is the number of distinct sub-configs."""
    space = SearchSpace(WIDE, TINY)
    part = space.parts[name]
    dists = part.distributions()
    assert dists and list(dists) == [n for n in space.distributions() if n.split(".")[0] == name]
    values = [range(d.low, d.high + 1) if hasattr(d, "low") else d.choices for d in dists.values()]
    first = space.config_from_params({})
    subs = set()
    for combo in itertools.product(*values):
        cfg = space.config_from_params(dict(zip(dists, combo)))
        assert CompressionConfig.from_json(cfg.to_json()) == cfg
        assert space.config_from_params(space.params_for(cfg)) == cfg
        others = [k for k in FIELDS if k != name and name not in REGISTRY[k].space.reads]
        assert all(getattr(cfg, k) == getattr(first, k) for k in others)
        subs.add(getattr(cfg, name))
    assert part.count({r: getattr(first, r) for r in part.reads}) == len(subs)
