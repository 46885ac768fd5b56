import numpy as np
import pytest

from vitsearch.search.engine.sampler_bench import hypervolume_2d, run_bench
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
def test_bench_search_runs_and_caches(tmp_path):
    summary = run_bench("default", trials=4, seeds=[0], samplers=["random", "nsga2"], out=tmp_path, progress=False)
    assert set(summary["hypervolume"]) == {"random", "nsga2"}
    first = summary["new_evaluations"]
    again = run_bench("default", trials=4, seeds=[0], samplers=["random"], out=tmp_path, progress=False)
    assert again["new_evaluations"] == 0 and first >= 1  # every config came from the cache
