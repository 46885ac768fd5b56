"""``space.allocation``: the search draws global budgets, the allocator decodes them into per-block configs."""

from __future__ import annotations

import itertools
import pickle

import optuna
import pydantic
import pytest
import torch

from vitsearch.spaces import CompressionConfig, ConfigError, SearchSpace, SpaceSpec, compress
from vitsearch.spaces.vit.dims import VitDims

optuna.logging.set_verbosity(optuna.logging.WARNING)
SALIENCY = {"allocation": {"mode": "saliency"}}
SMALL = {"depth": {"keep_min": 7}, "heads": {"kv_heads": [1, 6]}, "tokens": {"shares": [1.0]},
         "sparsity": {"attn": ["dense"], "mlp": ["dense"]}, "precision": {"attn": ["fp32"], "mlp": ["fp32"]},
         "allocation": {"mode": "saliency", "heads_removed": [0.0, 0.25], "mlp_removed": [0.0, 0.5]}}


@pytest.fixture(scope="module")
def saliency_space(builtin_model, mnist):
    return SearchSpace.from_spec(SALIENCY, builtin_model, calibration=mnist.calibration)


def _all_params(space):
    dists = space.distributions()
    values = [range(d.low, d.high + 1) if hasattr(d, "low") else d.choices for d in dists.values()]
    return [dict(zip(dists, combo)) for combo in itertools.product(*values)]


def test_uniform_mode_keeps_the_parameters_and_the_study_dump(builtin_model):
    """Existing studies see the same parameters, and their study file dumps as before."""
    space = SearchSpace.from_spec({}, builtin_model)
    assert list(space.distributions()) == ["depth.keep", "heads.keep", "heads.kv", "tokens.share@2",
                                           "tokens.share@4", "sparsity.attn", "sparsity.mlp", "precision.attn",
                                           "precision.mlp"]
    assert space.budgets is None and "allocation" not in SpaceSpec().model_dump(mode="json")
    dumped = SpaceSpec.model_validate(SALIENCY).model_dump(mode="json")
    assert dumped["allocation"]["mode"] == "saliency" and SpaceSpec.model_validate(dumped).allocation.mode == "saliency"


def test_saliency_mode_draws_budgets_and_decodes_per_block_configs(saliency_space, builtin_model):
    names = list(saliency_space.distributions())
    assert "heads.keep" not in names and names[-2:] == ["allocation.heads_removed", "allocation.mlp_removed"]
    assert all("structured" not in c for c in saliency_space.distributions()["sparsity.mlp"].choices)
    study = optuna.create_study(directions=["minimize"], sampler=optuna.samplers.TPESampler(seed=0))
    per_block = 0
    x = torch.randn(2, 1, 28, 28)
    for i in range(12):
        trial = study.ask(saliency_space.distributions())
        cfg = saliency_space.suggest(trial)
        n = cfg.depth.keep or 8
        pairs = cfg.heads.per_block(n, 6)
        widths = cfg.sparsity.hidden(n, 288)
        assert all(q % kv == 0 and q >= 1 for q, kv in pairs) and all(w % 8 == 0 and w >= 8 for w in widths)
        assert 6 * n - sum(q for q, _ in pairs) == round(trial.params["allocation.heads_removed"] * 6 * n)
        assert CompressionConfig.from_json(cfg.to_json()) == cfg  # what a trial records is explicit
        assert saliency_space.config_from_params(saliency_space.params_for(cfg)) == cfg
        per_block += cfg.is_per_block()
        if i < 3:
            assert torch.isfinite(compress(builtin_model, cfg)(x)).all()
        study.tell(trial, float(i))
    assert per_block >= 6


def test_decoding_is_deterministic_across_builds(builtin_model, mnist, saliency_space):
    from vitsearch.spaces import allocate

    allocate._CACHE.clear()
    again = SearchSpace.from_spec(SALIENCY, builtin_model, calibration=mnist.calibration)
    shipped = pickle.loads(pickle.dumps(saliency_space))  # as a Ray worker holds it
    params = {"depth.keep": 6, "heads.kv": 2, "allocation.heads_removed": 0.5, "allocation.mlp_removed": 0.75}
    cfg = saliency_space.config_from_params(params)
    assert again.config_from_params(params) == shipped.config_from_params(params) == cfg
    assert cfg.is_per_block() and len(cfg.heads.keep) == 6


def test_presets_start_from_the_identity(saliency_space):
    presets = saliency_space.presets()
    assert presets[0].is_identity() and len(presets) == len(set(presets)) >= 4
    assert any(p.is_per_block() for p in presets)


def test_size_counts_the_distinct_configs(builtin_model, mnist):
    space = SearchSpace.from_spec(SMALL, builtin_model, calibration=mnist.calibration)
    configs = {space.config_from_params(p) for p in _all_params(space)}
    assert space.size() == len(configs) > 8


def test_a_dumped_and_reread_study_space_builds_the_same_space(builtin_model, saliency_space):
    """A run dir stores its study with every field written out; reading it back changes nothing."""
    again = SpaceSpec.model_validate(SpaceSpec.model_validate(SALIENCY).model_dump(mode="python"))
    assert again == saliency_space.spec
    rebuilt = SearchSpace.from_spec(again, builtin_model, calibration=None)
    assert list(rebuilt.distributions()) == list(saliency_space.distributions())


def test_saliency_mode_without_the_model_is_refused():
    dims = VitDims(embed_dim=48, num_heads=6, head_dim=8, mlp_hidden=192, depth=8, num_patches=49,
                   num_prefix_tokens=1)
    with pytest.raises(ConfigError, match="from_spec"):
        SearchSpace(SALIENCY, dims)


@pytest.mark.parametrize("spec, words", [
    ({"heads": {"keep": [4, 6]}}, ["space.heads.keep", "saliency", "remove it"]),
    ({"sparsity": {"mlp": ["dense", "structured:0.5"]}}, ["space.sparsity.mlp", "structured", "mlp_removed"]),
    ({"allocation": {"mode": "saliency", "heads_removed": [0.9]}}, ["allocation.heads_removed", "0.9", "0.833"]),
])
def test_saliency_mode_refuses_what_it_replaces(builtin_model, spec, words):
    spec = {**spec, "allocation": {**SALIENCY["allocation"], **spec.get("allocation", {})}}
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_spec(spec, builtin_model)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("allocation, words", [
    ({"heads_removed": [0.5]}, ["heads_removed", "mode saliency"]),
    ({"mode": "saliency", "mlp_removed": [1.0]}, ["mlp_removed", "[0, 1)"]),
    ({"mode": "global"}, ["mode", "uniform", "saliency"]),
    ({"mode": "saliency", "group": 0}, ["group"]),
])
def test_allocation_section_validation(allocation, words):
    with pytest.raises(pydantic.ValidationError) as err:
        SpaceSpec.model_validate({"allocation": allocation})
    assert all(w in str(err.value) for w in words), str(err.value)


MACS_BUDGET = {"allocation": {"mode": "saliency", "budget": "macs"}}


@pytest.fixture(scope="module")
def macs_space(builtin_model, mnist):
    return SearchSpace.from_spec(MACS_BUDGET, builtin_model, calibration=mnist.calibration)


def _head_and_mlp_macs(config, dims, n):
    from vitsearch.spaces.allocate import mac_costs

    macs = mac_costs(dims)
    heads = [q for q, _ in config.heads.per_block(n, dims.num_heads)]
    return sum(macs.head[0] * q + macs.group[0] * w / 8 for q, w in zip(heads, config.sparsity.hidden(n, dims.mlp_hidden)))


def test_the_macs_budget_is_one_share_met_in_every_kept_block_set(macs_space, builtin_model):
    """budget: macs draws one parameter; each share decodes to a per-block config whose head and MLP MACs are at
    most that share of the kept blocks' (and within one structure of it), at every depth."""
    dists = macs_space.distributions()
    assert "allocation.macs_kept" in dists and "allocation.heads_removed" not in dists
    assert "heads.keep" not in dists and dists["allocation.macs_kept"].choices == (1.0, 0.8, 0.65, 0.5, 0.4)
    dims = macs_space.dims
    whole = _head_and_mlp_macs(CompressionConfig(), dims, dims.depth) / dims.depth
    per_block = 0
    for depth in (None, 6):
        for share in dists["allocation.macs_kept"].choices:
            params = {"allocation.macs_kept": share, **({"depth.keep": depth} if depth else {})}
            cfg = macs_space.config_from_params(params)
            n = depth or dims.depth
            left = _head_and_mlp_macs(cfg, dims, n)
            assert share * n * whole * 0.97 < left <= share * n * whole + 1e-6, (share, depth, left / (n * whole))
            assert macs_space.config_from_params(macs_space.params_for(cfg)) == cfg
            per_block += cfg.is_per_block()
    assert per_block >= 6  # the allocator gives blocks different heads or widths
    assert macs_space.presets()[0].is_identity()
    x = torch.randn(2, 1, 28, 28)
    assert torch.isfinite(compress(builtin_model, macs_space.config_from_params({"allocation.macs_kept": 0.4}))(x)).all()
    assert "budget" not in SpaceSpec.model_validate(SALIENCY).model_dump(mode="json")["allocation"]  # as before
    assert SpaceSpec.model_validate(MACS_BUDGET).model_dump(mode="json")["allocation"]["budget"] == "macs"
    again = SpaceSpec.model_validate(SpaceSpec.model_validate(MACS_BUDGET).model_dump(mode="python"))
    assert again == macs_space.spec and pickle.loads(pickle.dumps(macs_space)).distributions() == dists


@pytest.mark.parametrize("allocation, words", [
    ({"mode": "saliency", "budget": "macs", "heads_removed": [0.5]}, ["heads_removed", "budget macs", "types"]),
    ({"mode": "saliency", "macs_kept": [0.5]}, ["macs_kept", "budget types", "macs"]),
    ({"budget": "macs"}, ["budget", "mode saliency"]),
    ({"mode": "saliency", "budget": "macs", "macs_kept": [1.5]}, ["macs_kept", "(0, 1]"]),
    ({"mode": "saliency", "budget": "flops"}, ["budget", "types", "macs"]),
])
def test_macs_budget_validation(allocation, words):
    with pytest.raises(pydantic.ValidationError) as err:
        SpaceSpec.model_validate({"allocation": allocation})
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_macs_share_below_one_structure_per_block_is_refused(builtin_model):
    with pytest.raises(ConfigError, match=r"allocation.macs_kept: 0.05 is not allowed.*down to 0\.\d+"):
        SearchSpace.from_spec({"allocation": {"mode": "saliency", "budget": "macs", "macs_kept": [1.0, 0.05]}},
                              builtin_model)
