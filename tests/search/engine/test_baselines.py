"""bench-search --baselines: the hand recipes, their wall-time stop, and how fronts are compared."""

from __future__ import annotations

import numpy as np
import pytest

from vitsearch.evaluators.paired import pack
from vitsearch.search.engine.baselines import (RECIPES, front_quality, recipe_configs, run_recipe, val_front)
from vitsearch.spaces.vit.dims import VitDims


def test_every_recipe_gives_valid_configs_mild_first(builtin_model):
    from vitsearch.evaluators import analytic_macs

    dims = VitDims.of(builtin_model)
    base = analytic_macs(builtin_model)
    for name in RECIPES:
        configs = recipe_configs(name, dims)
        assert configs and all(not c.is_identity() for c in configs), name
        if name != "int8":  # structure recipes: every step removes work
            assert all(analytic_macs(builtin_model, c) < base for c in configs), name
    depth = recipe_configs("depth", dims)
    assert [c.depth.keep for c in depth] == list(range(dims.depth - 1, dims.depth // 2 - 1, -1))
    tome = recipe_configs("tome", dims)
    first = dict(tome[0].tokens.schedule)  # the same r merged in every block: shares (n - r) / n, n shrinking
    n, r = dims.num_patches, max(1, round(0.03 * dims.num_patches))
    for block in range(len(first)):
        assert first[block] == pytest.approx((n - r) / n)
        n -= r
    refused = recipe_configs("int8", dims, lambda c: "refused" if c.precision.attn == "int8" else None)
    assert [c.precision.attn for c in refused] == ["fp32"]


def test_the_val_front_keeps_only_points_nothing_beats():
    pts = [{"val_accuracy": 0.9, "latency_ratio": 0.5}, {"val_accuracy": 0.95, "latency_ratio": 0.8},
           {"val_accuracy": 0.89, "latency_ratio": 0.6}, {"val_accuracy": 0.95, "latency_ratio": 0.9}]
    assert val_front(pts) == pts[:2]


def _bits(n_wrong: int, n: int = 500, offset: int = 0) -> str:
    ok = np.ones(n, dtype=bool)
    ok[offset:offset + n_wrong] = False
    return pack(ok)


def test_front_quality_uses_the_paired_upper_bound_for_within_x_points():
    base = {"test_correct": _bits(5), "test_n": 500, "test_accuracy": 0.99}
    ref = {"test_accuracy": 0.94, "latency_ratio": 1.0}
    same = {"latency_ratio": 0.7, "test_accuracy": 0.99, "test_correct": _bits(5), "test_n": 500, "summary": "a"}
    mid = {"latency_ratio": 0.55, "test_accuracy": 0.984, "test_correct": _bits(8), "test_n": 500, "summary": "b"}
    far = {"latency_ratio": 0.4, "test_accuracy": 0.97, "test_correct": _bits(15), "test_n": 500, "summary": "c"}
    q = front_quality([same, mid, far], ref, base)
    # the same images right: its upper bound is under 1 point; 3 more wrong (+0.6 pt) bounds the drop under 2 points
    # only; 10 more wrong (+2 pt) bounds it under neither
    assert q["fastest_within"]["1 point"]["summary"] == "a"
    assert q["fastest_within"]["1 point"]["speedup"] == pytest.approx(1 / 0.7)
    assert q["fastest_within"]["2 point"]["summary"] == "b"
    assert q["best_test_accuracy_at_half_latency"] == 0.97 and q["hypervolume"] > 0


def test_a_recipe_stops_at_its_wall_time_and_scores_its_front_on_test(tmp_path):
    from tinystudy import tiny_study_dict

    from vitsearch.search.session import load_session
    from vitsearch.search.study import parse_study

    spec = parse_study(tiny_study_dict(recovery={"steps": 1, "batch_size": 8}, latency={"predictor": "off"}))
    session = load_session(spec)
    run = run_recipe(session, "depth", minutes=1e-4, seed=0, progress=False)
    assert run["tried"] == 1 < run["of"]  # the first model is always made; the next would overrun
    p = run["points"][0]
    assert p["config"]["depth"] == {"keep": VitDims.of(session.base).depth - 1}
    assert 0 < p["latency_ratio"] < 2 and p["test_n"] == len(session.data.test) and p["test_correct"]
    assert run["front"] == run["points"] and run["steps"] == 1


def test_recipes_to_run_are_named_or_none():
    from vitsearch.search.engine.baselines import RECIPES
    from vitsearch.search.engine.baselines_bench import parse_recipes

    assert parse_recipes(None) == tuple(RECIPES)
    assert parse_recipes("none") == ()  # vitsearch's searches alone
    assert parse_recipes(" depth+mlp, depth,depth+mlp ") == ("depth+mlp", "depth")  # once each, in order


def test_a_benchmark_of_the_searches_alone_says_so():
    from types import SimpleNamespace

    from vitsearch.search.engine.baselines_bench import format_baselines, summarise

    runs = {"vitsearch": [{"seed": 0, "hypervolume": 0.02, "fastest_within": {}}]}
    s = summarise(SimpleNamespace(name="d", device="cpu"), 10, [0], {}, {"test_accuracy": 0.99}, runs, 600.0, "cpu")
    assert s["recipes"] == [] and s["best_recipe"] is None and s["ratio_vs_best_recipe"] is None
    assert "vitsearch alone (no recipe run)" in format_baselines(s)
    runs["depth"] = [{"seed": 0, "hypervolume": 0.01, "fastest_within": {}}]
    s = summarise(SimpleNamespace(name="d", device="cpu"), 10, [0], {}, {"test_accuracy": 0.99}, runs, 600.0, "cpu")
    assert s["recipes"] == ["depth"] and s["ratio_vs_best_recipe"] == pytest.approx(2.0)
    assert "best recipe run (depth): 2.00x" in format_baselines(s)
