import numpy as np
import pytest

from vitsearch.search.engine.rungs import hypervolume_2d
from vitsearch.search.engine.sampler_bench import run_bench
from vitsearch.search.results.tables import pareto_mask


def test_hypervolume_known_areas():
    ref = (1.0, 1.0)
    assert hypervolume_2d(np.array([[0.0, 0.0]]), ref) == pytest.approx(1.0)
    assert hypervolume_2d(np.array([[0.5, 0.0], [0.0, 0.5]]), ref) == pytest.approx(0.75)
    # a dominated point adds nothing; a point beyond the reference adds nothing
    assert hypervolume_2d(np.array([[0.5, 0.0], [0.0, 0.5], [0.6, 0.6], [2.0, 0.0]]), ref) == pytest.approx(0.75)
    assert hypervolume_2d(np.empty((0, 2)), ref) == 0.0


def test_pareto_mask_keeps_non_dominated():
    values = np.array([[0.9, 2.0], [0.95, 3.0], [0.85, 2.5], [0.95, 3.0]])  # accuracy up, latency down
    assert pareto_mask(values, [True, False]).tolist() == [True, True, False, True]


@pytest.mark.slow
def test_bench_search_runs_and_caches_on_the_space_a_run_searches(builtin_model, tmp_path):
    """bench-search draws from the space `vitsearch run` searches: in the study's runtime, with its allocation (here
    precision by sensitivity, which needs the base model's measured sensitivity)."""
    import json

    from vitsearch.search.study import parse_study
    from vitsearch.spaces import CompressionConfig

    spec = parse_study({"space": {"allocation": {"precision": "sensitivity", "quantised": [0.5]}}})
    summary = run_bench(spec, trials=4, seeds=[0], samplers=["random", "nsga2"], out=tmp_path, progress=False)
    assert set(summary["hypervolume"]) == {"random", "nsga2"}
    first = summary["new_evaluations"]
    again = run_bench(spec, trials=4, seeds=[0], samplers=["random"], out=tmp_path, progress=False)
    assert again["new_evaluations"] == 0 and first >= 1  # every config came from the cache
    drawn = [CompressionConfig.from_dict(json.loads(key))
             for key in json.loads(next(tmp_path.glob("eval_cache_*.json")).read_text())]
    drawn = [c for c in drawn if c != CompressionConfig()]  # the uncompressed reference is cached too
    assert drawn
    for config in drawn:  # half the kept blocks' linear groups int8, chosen group by group
        n = config.depth.keep or len(builtin_model.blocks)
        assert sum(v == "int8" for block in config.precision.per_block(n) for v in block) == n, config.to_dict()


def test_a_config_with_no_gain_is_settled_as_vitsearch_run_settles_it(tmp_path):
    """Slower than the uncompressed model (latency the only cost): accuracy None and why, even when an older
    benchmark cached an accuracy for it; the uncompressed model itself is never settled against itself."""
    import json

    from vitsearch.search.engine.gain import Reference
    from vitsearch.search.engine.sampler_bench import EvalCache
    from vitsearch.spaces import CompressionConfig

    slow = CompressionConfig.from_dict({"precision": {"attn": "int8", "mlp": "int8"}})
    fast = CompressionConfig.from_dict({"depth": {"keep": 4}})
    key = lambda c: json.dumps(c.to_dict(), sort_keys=True)  # noqa: E731
    path = tmp_path / "cache.json"
    path.write_text(json.dumps({key(slow): {"accuracy": 0.97, "latency_ms": 9.0, "size_mb": 1.0},
                                key(fast): {"accuracy": 0.95, "latency_ms": 1.5, "size_mb": 2.0},
                                key(CompressionConfig()): {"accuracy": 0.98, "latency_ms": 3.0, "size_mb": 4.0}}))
    reference = Reference(3.0, 4.0, 10, "measured", ("latency_ms",))
    cache = EvalCache(path, session=None, reference=reference)  # all cached: the session is never used
    settled = cache.get(slow)
    assert settled["accuracy"] is None and "no gain over the uncompressed model" in settled["settled"]
    assert cache.get(fast)["accuracy"] == 0.95 and cache.get(CompressionConfig())["accuracy"] == 0.98
    assert EvalCache(path, session=None).get(slow)["accuracy"] == 0.97  # without a reference: as cached
