"""Trials owned by their driver and shared between drivers, on a real SQLite RDB storage (no server
needed): a dead driver's trials asked again (at once on this machine, after the heartbeat grace
elsewhere, after ORPHAN_S when no driver is named), the claim made before the sampler draws, and the
shared target, duplicates and reuse (search/engine/ownership.py, search/engine/sharing.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState


def _rdb_study(tmp_path: Path, grace: int = 1):
    from vitsearch.search.engine.ownership import Ownership, RetryStale
    from vitsearch.search.storage import open_storage

    retry = RetryStale()
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", on_stale=retry)
    storage.grace_period = grace  # the driver uses GRACE_S (20 s); a test waits seconds, not 20
    study = optuna.create_study(storage=storage, study_name="o", directions=["maximize", "minimize"])
    return study, Ownership(study, storage, retry)


def _ask(study, owner: str, x: int):
    import warnings

    study.enqueue_trial({"x": x})  # asked next, with exactly these parameters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna: heartbeats are meant for Study.optimize (the driver beats itself)
        trial = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    trial.set_user_attr("config", json.dumps({"depth": {"keep": x + 2}}))  # a CompressionConfig, as the engine writes
    trial.set_user_attr("driver", owner)
    return trial


def test_only_dead_drivers_trials_are_failed_and_asked_again(tmp_path):
    from vitsearch.search.engine.optuna_access import trial_id
    from vitsearch.search.engine.ownership import driver_id

    study, own = _rdb_study(tmp_path, grace=3)  # 3 s: a stall of a second on a loaded machine is no death
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_here = driver_id(gone.pid)  # a driver of this machine whose process is gone
    gone.wait()
    live_here = _ask(study, driver_id(), 1)  # this test's own process: alive
    remote = _ask(study, "elsewhere:123:456", 2)  # another machine: only its heartbeat tells
    own.storage.record_heartbeat(trial_id(remote))
    dead = _ask(study, dead_here, 3)
    assert own.reap(force=True) == [dead.number]  # at once, without waiting for the grace period
    time.sleep(4.5)  # the remote driver's heartbeat is now older than the (test) grace period of 3 s
    assert own.reap(force=True) == [remote.number]
    states = {t.number: t.state for t in study.trials}
    assert states[live_here.number] == TrialState.RUNNING  # a live driver's trial is never touched
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert sorted(t.params["x"] for t in waiting) == [2, 3]  # asked again with the same parameters
    assert all(set(t.user_attrs) == {"config"} for t in waiting)  # not the dead driver's id
    from vitsearch.search.results.tables import trials_frame

    frame = trials_frame(study).set_index("number")
    assert frame.loc[dead.number, "error"].startswith("its driver stopped while it ran; asked again as trial")


SAMPLING_DRIVER = """
import sys, time, warnings
import optuna
from vitsearch.search.engine.ownership import Ownership, RetryStale
from vitsearch.search.storage import open_storage

class Slow(optuna.samplers.RandomSampler):  # a sampler still drawing when the driver is killed
    def sample_independent(self, *args, **kwargs):
        print("sampling", flush=True)
        time.sleep(600)

warnings.simplefilter("ignore")
storage = open_storage(sys.argv[1], on_stale=RetryStale())
study = optuna.load_study(study_name="o", storage=storage, sampler=Slow())
Ownership(study, storage).ask({"x": optuna.distributions.IntDistribution(0, 9)})
"""


def test_a_driver_killed_while_its_sampler_draws_leaves_a_trial_that_names_it(tmp_path):
    """The trial is claimed before its parameters are drawn: killed mid-sampling, the driver's trial is failed
    and asked again at once (before, it named no driver and waited out ORPHAN_S, a minute)."""
    study, own = _rdb_study(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", SAMPLING_DRIVER, f"sqlite:///{tmp_path / 'o.db'}"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "sampling"
    finally:
        proc.kill()
        proc.wait()
    (trial,) = study.trials
    assert trial.state == TrialState.RUNNING and trial.user_attrs["driver"].split(":")[1] == str(proc.pid)
    assert not trial.params  # killed before any parameter was drawn
    assert own.reap(force=True) == [trial.number]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]


def test_a_trial_failed_as_stale_while_it_is_claimed_is_let_go(tmp_path, monkeypatch):
    """The driver was stopped between its first heartbeat and naming itself, longer than the grace period; another
    driver failed the trial: ask raises UpdateFinishedTrialError and the trial is no longer this driver's (no more
    heartbeats for it)."""
    import pytest

    from vitsearch.search.engine.optuna_access import trial_id

    study, own = _rdb_study(tmp_path)
    beat = own.storage.record_heartbeat

    def beat_then_reaped(tid):
        beat(tid)
        assert own.storage.set_trial_state_values(tid, state=TrialState.FAIL)

    monkeypatch.setattr(own.storage, "record_heartbeat", beat_then_reaped)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        own.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and trial_id(trial) not in own._owned


def test_a_trial_that_names_no_driver_is_asked_again_once_it_is_older_than_orphan_s(tmp_path, monkeypatch):
    import warnings

    import vitsearch.search.engine.ownership as ownership

    study, own = _rdb_study(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        orphan = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})  # a driver gone before it claimed
    monkeypatch.setattr(ownership, "ORPHAN_S", 4.0)  # seconds: a loaded machine may stall one before the reap
    assert own.reap(force=True) == []  # young: its driver may still be about to claim it
    time.sleep(4.5)
    assert own.reap(force=True) == [orphan.number]
    assert [t.params for t in study.trials if t.state == TrialState.WAITING] == [orphan.params]


def test_shared_target_surplus_duplicates_and_reuse(tmp_path):
    from vitsearch.search.engine import sharing

    study, _ = _rdb_study(tmp_path)
    first = _ask(study, "a:1:1", 1)
    assert sharing.verdict(study, first, first.user_attrs["config"], target=3).action == "evaluate"
    twin = _ask(study, "b:2:2", 1)  # the same config, asked by another driver while the first runs
    v = sharing.verdict(study, twin, twin.user_attrs["config"], target=3)
    assert v.action == "duplicate" and v.source == first.number
    study.tell(twin, state=TrialState.PRUNED)
    study.tell(first, [0.9, 1.0])
    again = _ask(study, "b:2:2", 1)
    assert sharing.verdict(study, again, again.user_attrs["config"], target=3) == sharing.Verdict("reuse", first.number)
    study.tell(again, [0.9, 1.0])
    third = _ask(study, "a:1:1", 2)
    late = _ask(study, "b:2:2", 3)  # two drivers raced for the last of 3 slots: the later trial yields
    assert sharing.verdict(study, third, third.user_attrs["config"], target=3).action == "evaluate"
    assert sharing.verdict(study, late, late.user_attrs["config"], target=3).action == "surplus"
    study.tell(late, state=TrialState.PRUNED)
    study.tell(third, [0.8, 0.5])
    study.enqueue_trial({"x": 4})  # a retry nobody needs once the target is reached
    assert sharing.drain_surplus(study, target=3) == 1
    assert sharing.counts(study) == {"COMPLETE": 3, "RUNNING": 0, "WAITING": 0}


def test_a_driver_beside_the_creator_waits_for_its_presets(tmp_path):
    """A driver that finds the study empty waits for the creator's presets instead of enqueueing a second copy;
    a study still empty after the wait (its creator died first) gets them from this driver."""
    import threading

    from vitsearch.search.engine.startup import _trials_arrive

    study, _ = _rdb_study(tmp_path)
    started = time.monotonic()
    assert not _trials_arrive(study, wait_s=0.3)  # nobody enqueues: this driver will
    assert 0.3 <= time.monotonic() - started < 5
    creator = threading.Timer(0.5, lambda: study.enqueue_trial({"x": 0}))
    creator.start()
    try:
        assert _trials_arrive(study, wait_s=30)  # the creator's preset arrives: not enqueued twice
    finally:
        creator.join()
    assert len(study.trials) == 1
