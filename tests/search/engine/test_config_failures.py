"""A config whose failure follows from the config is evaluated once; asked again, it is settled from the record.
A trial another driver failed as stale meanwhile (mid-ask, or just before its tell) is left to that driver.

The searcher, the worker's evaluation function and an Optuna SQLite storage run for real;
Tune's part (handing the batch to a worker, returning its report) is done by hand.
"""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from vitsearch.search.engine import sharing, worker


def _searcher(model, tmp_path):
    from vitsearch.search.engine.feasibility import Feasibility
    from vitsearch.search.engine.searcher import CandidateSearch
    from vitsearch.search.study import parse_study
    from vitsearch.spaces import SearchSpace

    space = SearchSpace.from_spec(parse_study({"name": "x"}).space, model)
    return CandidateSearch(space=space, objectives=[("accuracy", "maximize"), ("latency_ms", "minimize")],
                           feasibility=Feasibility(None, None, None), target=5, batch_size=1,
                           sampler=optuna.samplers.RandomSampler(seed=0),
                           storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"), study_name="x")


def _one_config_twice(search, depth: int) -> dict:
    """Enqueue the same parameters twice (the sampler asks one config two times); that config as a dict."""
    params = {name: (depth if name == "depth.keep" else dist.choices[0])
              for name, dist in search.vs_space.distributions().items()}
    search.study.enqueue_trial(params)
    search.study.enqueue_trial(params)
    return search.vs_space.config_from_params(params).to_dict()


def _hand_out(search, tune_id: str, evaluate: bool = True) -> list[dict]:
    """One suggest; with ``evaluate`` each job handed out runs in the worker's function and is reported back."""
    batch = search.suggest(tune_id)
    jobs = batch["candidates"] if isinstance(batch, dict) else []
    for job in jobs if evaluate else ():
        payload = {**worker.evaluate_candidate(None, job, search.feasibility), "number": job["number"]}
        search.on_trial_result(tune_id, {"candidate_json": json.dumps(payload)})
    if evaluate:
        search.on_trial_complete(tune_id)
    return jobs


def test_a_config_that_fails_for_good_is_evaluated_once(builtin_model, tmp_path, monkeypatch):
    """Trial 0's config fails for good: trial 1 (same config) is settled from it; trial 2's failure may pass
    on another try (a plain RuntimeError), so trial 3 (its config again) is evaluated."""
    search = _searcher(builtin_model, tmp_path)
    doomed, flaky = _one_config_twice(search, depth=4), _one_config_twice(search, depth=5)
    monkeypatch.setenv("VITSEARCH_TEST_FAULTS", json.dumps({"fail_config": [doomed], "raise_on": [2]}))
    handed = [_hand_out(search, "t0"), _hand_out(search, "t1"), _hand_out(search, "t2", evaluate=False)]
    assert [[j["number"] for j in jobs] for jobs in handed] == [[0], [2], [3]]
    assert sum(j["config"] == doomed for jobs in handed for j in jobs) == 1
    assert [j["config"] for j in handed[2]] == [flaky]
    trials = {t.number: t for t in search.study.get_trials(deepcopy=False)}
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs[sharing.ATTR_DETERMINISTIC] is True
    assert trials[1].state == TrialState.PRUNED and trials[1].user_attrs[sharing.ATTR_REPEATS] == 0
    assert trials[1].user_attrs["error"].startswith("repeats trial 0, whose config failed for good: "
                                                    "InjectedConfigFault: injected fault for config")
    assert trials[2].state == TrialState.FAIL and sharing.ATTR_DETERMINISTIC not in trials[2].user_attrs
    assert search.failures_in_a_row == 2  # the two evaluations that failed; the settled repeat is not one
    from vitsearch.search.results.tables import counts_line, run_counts, trials_frame

    counts = run_counts(trials_frame(search.study))
    assert (counts["repeated_failures"], counts["failed"], counts["duplicates_in_flight"]) == (1, 2, 0)
    assert "(1 repeats of a config that failed for good, not evaluated again)" in counts_line(counts, [])


@pytest.mark.parametrize("exc, determined", [
    ("numerics", True), ("export", True), ("oom", False), ("device", False), ("runtime", False)])
def test_which_errors_follow_from_the_config(exc, determined):
    import torch

    from vitsearch.evaluators.runtimes import NumericsMismatch
    from vitsearch.evaluators.runtimes.onnxexport import ExportRefused
    from vitsearch.spaces.errors import DeviceError

    made = {"numerics": NumericsMismatch("off"), "export": ExportRefused("export failed"),
            "oom": torch.OutOfMemoryError("out of memory"), "device": DeviceError("no CUDA provider"),
            "runtime": RuntimeError("worker lost")}[exc]
    assert worker.config_determined(made) is determined


def _fail_as_stale(search, number: int) -> None:
    """What another driver's reap does to a trial whose driver stopped beating: FAIL, in the storage."""
    from vitsearch.search.engine.optuna_access import frozen_trial, trial_id

    storage = search.study._storage
    assert storage.set_trial_state_values(trial_id(frozen_trial(search.study, number)), state=TrialState.FAIL)


def test_a_result_of_a_trial_failed_elsewhere_just_before_its_tell_is_dropped(builtin_model, tmp_path, monkeypatch):
    """Another driver fails the trial between the searcher's last attribute write and its tell (Optuna then
    raises ValueError, 'Cannot tell a FAIL trial'): the result is dropped and the driver goes on."""
    search = _searcher(builtin_model, tmp_path)
    (job,) = _hand_out(search, "t0", evaluate=False)
    tell = search.study.tell

    def tell_after_a_reap(trial, *args, **kwargs):
        _fail_as_stale(search, trial.number)
        return tell(trial, *args, **kwargs)

    monkeypatch.setattr(search.study, "tell", tell_after_a_reap)
    payload = {**worker.evaluate_candidate(None, job, search.feasibility), "number": job["number"]}
    search.on_trial_result("t0", {"candidate_json": json.dumps(payload)})
    search.on_trial_complete("t0")
    assert search.study.trials[job["number"]].state == TrialState.FAIL and job["number"] in search.told
    assert job["number"] not in search.promotions.ladder.results.get(0, {})  # no contender for a promotion
    monkeypatch.setattr(search.study, "tell", tell)
    _hand_out(search, "t1", evaluate=False)
    with pytest.raises(ValueError, match="number of the values"):  # a ValueError on a live trial still raises
        search.teller.settle(search._batches["t1"][0], [0.5], TrialState.COMPLETE, {})


def test_a_trial_failed_elsewhere_while_it_was_asked_is_left_and_another_asked(builtin_model, tmp_path, monkeypatch):
    """The driver was stopped mid-ask longer than the grace period and another driver failed the trial: writing
    its config raises UpdateFinishedTrialError; the searcher leaves it (its retry is the other driver's) and asks
    the next."""
    search = _searcher(builtin_model, tmp_path)
    config_from_params = search.vs_space.config_from_params
    stopped = []

    def reaped_meanwhile(params):
        if not stopped:
            stopped.append(search.study.trials[-1].number)
            _fail_as_stale(search, stopped[0])
        return config_from_params(params)

    monkeypatch.setattr(search.vs_space, "config_from_params", reaped_meanwhile)
    (job,) = _hand_out(search, "t0", evaluate=False)
    assert job["number"] == stopped[0] + 1
    assert search.study.trials[stopped[0]].state == TrialState.FAIL and stopped[0] not in search.told
