"""The one adapter to private state of Ray Tune and Optuna: the only reader, and right with the installed versions."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from vitsearch.search.engine.optuna_access import frozen_trial, study_of, trial_id
from vitsearch.search.storage import open_storage

SEARCH = Path(__file__).resolve().parents[3] / "search"
ADAPTER = SEARCH / "engine" / "optuna_access.py"
#: private attributes of Ray Tune's OptunaSearch and of Optuna's Study, Trial and FrozenTrial
PRIVATE = {"_ot_study", "_ot_trials", "_trial_id", "_storage", "_study_id", "_study_name"}


def private_reads(source: str) -> list[str]:
    """``line: name`` of each read of a PRIVATE attribute: ``x._name``, or the name as a string (``getattr``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            found.append(f"{node.lineno}: {node.attr}")
        elif isinstance(node, ast.Constant) and node.value in PRIVATE:
            found.append(f"{node.lineno}: {node.value!r}")
    return found


def test_the_scan_finds_attribute_and_getattr_reads_but_not_prose():
    source = ('"""Docs may name study._storage."""\n'
              "a = study._storage  # and comments: trial._trial_id\n"
              "b = getattr(trial, '_trial_id')\n"
              "c = searcher._ot_study._study_id\n")
    assert sorted(private_reads(source)) == ["2: _storage", "3: '_trial_id'", "4: _ot_study", "4: _study_id"]


def test_no_module_under_search_but_the_adapter_reads_private_optuna_or_tune_state():
    modules = [p for p in SEARCH.rglob("*.py") if p != ADAPTER]
    assert len(modules) > 20  # the scan sees the package
    offenders = {str(p.relative_to(SEARCH)): reads for p in modules if (reads := private_reads(p.read_text()))}
    assert offenders == {}, "read these through vitsearch.search.engine.optuna_access"


def test_the_adapter_reads_what_it_says_it_reads():
    assert {r.split(": ")[1] for r in private_reads(ADAPTER.read_text())} == {
        "_ot_study", "_trial_id", "_storage", "_study_id"}


def _storage(kind: str, tmp_path: Path):
    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    if kind == "sqlite":
        return open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    return open_storage(f"journal:{tmp_path / 'optuna.log'}")


def _two_studies(storage) -> optuna.Study:
    """A first study with two trials, then the study under test: COMPLETE, PRUNED with attrs, RUNNING, WAITING."""
    other = optuna.create_study(storage=storage, study_name="other")
    for _ in range(2):
        other.tell(other.ask(), 0.5)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    space = {"x": FloatDistribution(0.0, 1.0)}
    first = study.ask(space)
    study.tell(first, [0.9, 1.5])
    second = study.ask(space)
    second.set_user_attr("settled", "cost budget")
    study.tell(second, state=TrialState.PRUNED)
    study.ask(space)  # RUNNING
    study.enqueue_trial({"x": 0.25})  # WAITING
    return study


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_trial_ids_are_the_storages_and_frozen_trials_match_the_public_view(kind, tmp_path):
    storage = _storage(kind, tmp_path)
    study = _two_studies(storage)
    public = study.get_trials(deepcopy=False)
    study_id = storage.get_study_id_from_name("s")
    for t in public:
        # the public route to a trial's id, through the storage's published calls
        assert trial_id(t) == storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        got = frozen_trial(study, t.number)
        assert (got.number, got.state, got.values, got.params, got.user_attrs) == (
            t.number, t.state, t.values, t.params, t.user_attrs)
    assert trial_id(public[0]) >= 2  # unique across the storage: the other study's two trials came first
    assert frozen_trial(study, 1).user_attrs["settled"] == "cost budget"
    with pytest.raises(KeyError):
        frozen_trial(study, 99)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_a_live_trials_id_drives_the_storages_per_trial_calls(kind, tmp_path):
    storage = _storage(kind, tmp_path)
    study = optuna.create_study(storage=storage, study_name="s")
    live = study.ask({"x": FloatDistribution(0.0, 1.0)})
    assert trial_id(live) == trial_id(study.get_trials(deepcopy=False)[0])
    assert storage.set_trial_state_values(trial_id(live), state=TrialState.FAIL)  # what a driver's reaping does
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.FAIL]
    assert frozen_trial(study, live.number).state == TrialState.FAIL


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_study_of_is_the_study_ray_tunes_optuna_search_asks_and_tells(kind, tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    storage = _storage(kind, tmp_path)
    search = OptunaSearch(space={"x": FloatDistribution(0.0, 1.0)}, metric="m", mode="max", storage=storage,
                          study_name="tuned")
    params = search.suggest("t0")
    study = study_of(search)
    assert isinstance(study, optuna.Study) and study.study_name == "tuned"
    search.on_trial_complete("t0", {"m": 0.75, **params})
    reloaded = optuna.load_study(study_name="tuned", storage=storage)
    assert [(t.state, t.value, t.params) for t in reloaded.trials] == [(TrialState.COMPLETE, 0.75, params)]
    assert frozen_trial(study, 0).value == 0.75


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_a_studys_storage_and_what_lies_under_it(kind, tmp_path):
    from vitsearch.search.engine.optuna_access import journal_file, rdb_of, storage_of

    storage = _storage(kind, tmp_path)
    study = optuna.create_study(storage=storage, study_name="s")
    held = storage_of(study)
    held.set_study_user_attr(storage.get_study_id_from_name("s"), "k", 1)
    assert study.user_attrs == {"k": 1}  # the storage the study reads and writes
    rdb = rdb_of(held)
    assert (rdb is not None) == (kind == "sqlite") and (rdb is None or rdb is storage)
    assert journal_file(held) == (tmp_path / "optuna.log" if kind == "journal" else None)
