"""The one place vitsearch reads state that Ray Tune's OptunaSearch and Optuna do not publish.

Contract: every read of a private attribute (a leading underscore) of Ray Tune's
``OptunaSearch`` or of an Optuna study, trial or storage happens in this module, each
beside the version it was checked against; the rest of vitsearch calls these functions
(``tests/search/engine/test_optuna_access.py`` fails when another module under ``search/`` reads
one itself, and runs each function on real studies in memory, SQLite and journal
storages). An upgrade that moves one of these attributes breaks here, and only here.

Public API is used where it does the same job at the same cost; where the public route
costs a storage read per call on a path every candidate takes (ask, tell, heartbeat,
reuse), the private attribute is read instead, and the comment says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial
    from ray.tune.search.optuna import OptunaSearch


def study_of(searcher: OptunaSearch) -> optuna.Study:
    """The Optuna study that a Ray Tune ``OptunaSearch`` asks and tells (None until its space is set)."""
    # private: OptunaSearch._ot_study, checked with Ray 2.60.0 (Ray publishes no accessor)
    return searcher._ot_study


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (a live trial or a frozen one), unique across the storage's studies.

    What the storage's per-trial calls take (``record_heartbeat``, ``set_trial_state_values``,
    ``get_trial``); a trial's ``number`` is unique only within its study.
    """
    # private: Trial._trial_id / FrozenTrial._trial_id, checked with Optuna 5.1.0; the public route
    # (storage.get_trial_id_from_study_id_trial_number) is a storage read per call and needs the private study id
    return trial._trial_id


def frozen_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` of ``study`` as its storage holds it now; KeyError if the study has no such trial.

    The storage's own object, not a copy: read it, do not change it. A finished trial
    is read from the storage's cache (no database round trip).
    """
    # private: Study._storage and Study._study_id, checked with Optuna 5.1.0; the public route
    # (study.get_trials) reads every trial of the study, once per reused candidate, where this reads one
    storage = study._storage
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))


def storage_of(study: optuna.Study):
    """The storage ``study`` reads and writes (what its mutex locks: :mod:`vitsearch.search.engine.mutex`)."""
    # private: Study._storage, checked with Optuna 5.1.0 (Optuna publishes no accessor)
    return study._storage


def rdb_of(storage):
    """The ``RDBStorage`` under ``storage`` (itself, or the one Optuna's cache wraps for a study), else None."""
    import optuna

    # private: _CachedStorage._backend, checked with Optuna 5.1.0 (a study on an RDBStorage holds the cache)
    inner = getattr(storage, "_backend", None)
    for candidate in (storage, inner):
        if isinstance(candidate, optuna.storages.RDBStorage):
            return candidate
    return None


def journal_file(storage) -> Path | None:
    """The file of a ``JournalStorage`` on a ``JournalFileBackend``, else None."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if not isinstance(storage, optuna.storages.JournalStorage):
        return None
    # private: JournalStorage._backend and JournalFileBackend._file_path, checked with Optuna 5.1.0
    backend = storage._backend
    return Path(backend._file_path) if isinstance(backend, JournalFileBackend) else None
