"""The engine's books (search/engine/accounting.py), the worker's evaluation pipeline, and the searcher's time
budget through its clock (search/engine/clock.py: batches near the deadline, the end kept for the front)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from vitsearch.search.engine.accounting import descendants_cpu, engine_books, process_cpu_seconds, system_cpu_between


def _t(worker: str, start: float, seconds: float) -> dict:
    return {"worker": worker, "seconds": seconds, "started_at": start, "finished_at": start + seconds}


def test_engine_books_split_startup_steady_state_and_drain():
    # fit 0..20 s, 2 workers; w1 evaluates 2..6 and 7..11 (1 s gap), w2 3..8 and 8..18 (no gap)
    timings = [_t("w1", 2, 4), _t("w1", 7, 4), _t("w2", 3, 5), _t("w2", 8, 10)]
    books = engine_books(timings, fit_start=0.0, fit_end=20.0, workers=2)
    assert books["evaluations"] == 4 and books["evaluation_seconds"] == 23
    assert books["startup_seconds"] == 2 and books["drain_seconds"] == 2
    # steady state: spans 9 s + 15 s = 24 s, busy 23 s
    assert books["steady_overhead_share"] == pytest.approx(1 - 23 / 24, abs=1e-4)
    assert books["median_gap_seconds"] == pytest.approx(0.5)
    assert books["engine_overhead_share"] == pytest.approx(1 - 23 / 40, abs=1e-4)
    assert books["worker_processes"] == 2


def test_engine_books_without_evaluations():
    assert engine_books([], 0.0, 5.0, 2) == {"fit_seconds": 5.0, "evaluations": 0}


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_cpu_of_this_process_and_its_children():
    start = process_cpu_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert process_cpu_seconds(os.getpid()) >= start + 0.15
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()+0.3\n"
                              "while time.process_time()<t: pass\ntime.sleep(30)"])
    try:
        deadline = time.time() + 300  # a bound on wall time only; a loaded machine is slow, not wrong
        while time.time() < deadline and (descendants_cpu() or {}).get("ray_system", 0) < 0.25:
            time.sleep(0.1)
        assert descendants_cpu()["ray_system"] >= 0.25  # not a ray:: process: counted as system
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_worker_exiting_at_the_end_of_the_fit_is_not_booked_as_ray_system():
    """A Ray worker (``ray::`` command line) that has exited and is not yet reaped reads with an empty command
    line and its whole CPU: the books count what each process used between the snapshots, as the kind it had."""
    import subprocess
    import sys

    burn = "import sys,time\nsys.stdin.readline()\nt=time.process_time()+0.3\nwhile time.process_time()<t: pass\n"
    child = subprocess.Popen(["ray::fake_worker", "-c", burn], executable=sys.executable, stdin=subprocess.PIPE)
    try:
        deadline = time.time() + 300  # bounds on wall time only; a loaded machine is slow, not wrong
        while time.time() < deadline and _kind(descendants_cpu(), child.pid) is None:
            time.sleep(0.05)
        before = descendants_cpu()
        assert _kind(before, child.pid) == "ray_workers"
        child.stdin.write(b"go\n")
        child.stdin.flush()
        while time.time() < deadline and _state(child.pid) != "Z":  # exited, not reaped: a zombie
            time.sleep(0.05)
        after = descendants_cpu()
        (kind, cpu), = (v for (pid, _), v in after["processes"].items() if pid == child.pid)
        assert kind is None and cpu >= 0.25  # its command line is gone, its CPU still there
        assert system_cpu_between(before, after) < 0.2
        assert after["ray_system"] - before["ray_system"] < 0.2 and after["ray_workers"] < 0.2
    finally:
        child.kill()
        child.wait()


def _kind(snapshot: dict, pid: int) -> str | None:
    return next((kind for (p, _), (kind, _) in snapshot["processes"].items() if p == pid), None)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_ray_system_cpu_counts_each_process_since_the_first_snapshot():
    before = {"processes": {(1, 0): ("ray_system", 5.0), (2, 0): ("ray_workers", 10.0), (3, 0): ("ray_system", 1.0),
                            (7, 0): ("ray_system", 1.0), (8, 0): ("ray_system", 9.0)}}
    after = {"processes": {(1, 0): ("ray_system", 7.0), (2, 0): (None, 400.0), (3, 0): (None, 4.0),
                           (4, 0): ("ray_system", 0.5), (5, 0): (None, 300.0), (6, 0): ("ray_workers", 50.0),
                           (7, 0): ("ray_workers", 100.0), (8, 50): ("ray_system", 2.0)}}
    # 1: 2 s; 2: a worker exiting (not system); 3: a system process read exiting, 3 s; 4: new, 0.5 s; 5, 6: not
    # system; 7: a worker still starting at the first snapshot (not system); 8: its pid reused by a new process, 2 s
    assert system_cpu_between(before, after) == pytest.approx(7.5)


def test_pipeline_reports_every_candidate_in_order_while_the_next_evaluates(monkeypatch):
    """The worker's evaluation thread runs ahead of the (blocking) report."""
    import ray.tune

    from vitsearch.search.engine import worker

    events: list[tuple[str, int]] = []
    lock = threading.Lock()

    def fake_evaluate(session, cand, feasibility, predictor=None, reference=None):
        number = cand["number"]
        with lock:
            events.append(("start", number))
        if number == 6:
            last_started.set()
        return {"seconds": 0.05, "evaluation": {"n": number}}

    last_started = threading.Event()

    def slow_report(metrics):  # Tune's report blocks until the driver takes the result
        if pipelined:  # the evaluation thread must reach the last candidate while the first report blocks
            assert last_started.wait(timeout=30)
        with lock:
            events.append(("report", metrics["candidate_number"]))

    monkeypatch.setattr(worker, "evaluate_candidate", fake_evaluate)
    monkeypatch.setattr(worker, "_session", lambda holder: object())
    monkeypatch.setattr(ray.tune, "report", slow_report)
    batch = {"candidates": [{"number": n, "config": {}} for n in (4, 5, 6)]}
    pipelined = True
    worker.evaluate_batch(batch, [None], feasibility=None)
    assert [n for kind, n in events if kind == "report"] == [4, 5, 6]
    # every candidate started before the first report returned: evaluation did not wait on reporting
    assert events.index(("start", 6)) < events.index(("report", 4))
    events.clear()
    pipelined = False
    worker.evaluate_batch(batch, [None], feasibility=None, pipeline=False)  # the serial path, for comparison
    assert events == [("start", 4), ("report", 4), ("start", 5), ("report", 5), ("start", 6), ("report", 6)]


def test_pipeline_stops_its_thread_when_tune_stops_the_trial(monkeypatch):
    """Tune stopping a trial makes report raise: no evaluation may run on into the next batch."""
    import ray.tune

    from vitsearch.search.engine import worker

    started: list[int] = []

    def fake_evaluate(session, cand, feasibility, predictor=None, reference=None):
        number = cand["number"]
        started.append(number)
        time.sleep(0.05)
        return {"seconds": 0.05}

    def stopping_report(metrics):
        raise SystemExit  # what Ray's session does when the controller stops the trial

    monkeypatch.setattr(worker, "evaluate_candidate", fake_evaluate)
    monkeypatch.setattr(worker, "_session", lambda holder: object())
    monkeypatch.setattr(ray.tune, "report", stopping_report)
    with pytest.raises(SystemExit):
        worker.evaluate_batch({"candidates": [{"number": n, "config": {}} for n in range(20)]}, [None], None)
    assert not [t for t in threading.enumerate() if t.name == "vitsearch-evaluate"]
    assert len(started) < 20  # stopped between candidates, not run to the end


def _searcher(model, tmp_path, **kw):
    """A CandidateSearch over the default space on a SQLite study (random sampler, 2 workers)."""
    import optuna

    from vitsearch.search.engine.feasibility import Feasibility
    from vitsearch.search.engine.searcher import CandidateSearch
    from vitsearch.search.study import parse_study
    from vitsearch.spaces import SearchSpace

    space = SearchSpace.from_spec(parse_study({"name": "x"}).space, model)
    return CandidateSearch(space=space, objectives=[("accuracy", "maximize"), ("latency_ms", "minimize")],
                           feasibility=Feasibility(None, None, None), workers=2,
                           sampler=optuna.samplers.RandomSampler(seed=0),
                           storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"), study_name="x", **kw)


def test_last_batches_are_shared_between_workers(builtin_model, tmp_path):
    """Near the target the searcher splits what is left instead of handing it all to one worker."""
    search = _searcher(builtin_model, tmp_path, target=10, batch_size=8)
    sizes = []
    for i in range(6):
        out = search.suggest(f"t{i}")
        if not isinstance(out, dict):
            break
        sizes.append(len(out["candidates"]))
    # 10 wanted, 2 workers: 5, then half of the 5 left, ... never more than 10 in all
    assert sizes[:2] == [5, 3] and sum(sizes) == 10 and sizes == sorted(sizes, reverse=True)


def test_a_resumed_runs_summary_keeps_the_earlier_attempts_books(tmp_path):
    """summary.json's ``engine`` is one attempt's; a resume keeps the earlier ones and adds them all up."""
    import json

    from vitsearch.search.engine.driver import earlier_attempts

    path = tmp_path / "summary.json"
    assert earlier_attempts(path, {"evaluations": 3, "evaluation_seconds": 1.5}) == {
        "engine_earlier_attempts": [], "evaluations_all_attempts": 3, "evaluation_seconds_all_attempts": 1.5}
    path.write_text(json.dumps({"engine": {"evaluations": 4, "evaluation_seconds": 2.0}, "seconds": 30.0}))
    second = earlier_attempts(path, {"evaluations": 3, "evaluation_seconds": 1.5})
    assert second["engine_earlier_attempts"] == [{"evaluations": 4, "evaluation_seconds": 2.0, "seconds": 30.0}]
    assert second["evaluations_all_attempts"] == 7 and second["evaluation_seconds_all_attempts"] == 3.5
    path.write_text(json.dumps({"engine": {"evaluations": 3, "evaluation_seconds": 1.5}, "seconds": 20.0, **second}))
    third = earlier_attempts(path, {"evaluations": 1, "evaluation_seconds": 0.5})  # a third attempt: both kept
    assert [b["evaluations"] for b in third["engine_earlier_attempts"]] == [4, 3]
    assert third["evaluations_all_attempts"] == 8
    path.write_text("{half a fi")  # a summary torn by a crash (no longer written so): this attempt alone
    assert earlier_attempts(path, {"evaluations": 1})["engine_earlier_attempts"] == []


def test_near_the_deadline_a_batch_is_sized_by_the_slow_candidates_not_the_median(builtin_model, tmp_path):
    """Settled candidates take seconds, evaluated ones minutes: the batch must fit the expensive ones."""
    import time

    search = _searcher(builtin_model, tmp_path, target=100, batch_size=64, deadline=time.time() + 300)
    assert search._fits_before_deadline() == 1  # nothing known yet
    search.clock.first_seconds = [2.0] * 5 + [140.0] * 4  # the median (2 s) would allow 150 in 300 s
    assert search._fits_before_deadline() <= 2


def _rung_ladder():
    from vitsearch.search.engine.rungs import Ladder

    return Ladder((10, 50, 150), 3.0, (True, False))


def test_the_end_of_a_time_budget_is_kept_for_the_fronts_remaining_rungs(builtin_model, tmp_path):
    """finish_reserve: the front's rungs still to run, by the rung times measured, shared by the workers,
    each candidate's rungs in a row; at most a quarter of the budget; nothing before anything was timed."""
    import time

    from vitsearch.search.engine.clock import FINISH_MARGIN, FINISH_SHARE

    now = time.time()
    search = _searcher(builtin_model, tmp_path, target=100, batch_size=4, deadline=now + 600, ladder=_rung_ladder(),
                       finish_front=True)
    search.clock.started = now - 100_000  # a budget so long that the quarter's cap stays out of the way
    lad = search.promotions.ladder
    lad.record(0, 0, (0.90, 1.0))
    lad.record(1, 0, (0.80, 0.5))
    lad.record(2, 0, (0.70, 0.9))  # dominated: not the front's
    lad.record(3, 0, (0.99, 0.1), feasible=False)  # over a budget: never the front's, whatever its values
    assert search.clock.finish_reserve() == 0.0  # no evaluation timed yet
    search.clock.first_seconds = [6.0]
    # no promotion timed: the first rung's time scaled by the steps (40 and 100 more than its 10)
    assert search.clock.finish_reserve() == pytest.approx(FINISH_MARGIN * (6 * 4 + 6 * 10))  # the longer of: 2 chains
    search.clock.rung_seconds = {1: [15.0, 17.0, 16.0]}  # rung 2 from rung 1's time: 100 steps to its 40
    assert search.clock.rung_cost(2) == pytest.approx(16 * 100 / 40)
    search.clock.rung_seconds[2] = [45.0]
    assert search.clock.finish_reserve() == pytest.approx(FINISH_MARGIN * (16 + 45))
    for n in range(4, 10):  # six more on the front (each more accurate and slower): 8 front candidates
        lad.record(n, 0, (0.91 + n / 100, 1.0 + n / 10))
    assert sorted(lad.front()) == [0, 1, 4, 5, 6, 7, 8, 9]
    assert search.clock.finish_reserve() == pytest.approx(FINISH_MARGIN * 8 * 61 / 2)  # shared by the 2 workers
    search.clock.started = now
    assert search.clock.finish_reserve() == pytest.approx(FINISH_SHARE * 600)  # capped at a quarter of the budget
    # 100 s of 600 left: under the reserve
    search.clock.started, search.clock.deadline = time.time() - 500, time.time() + 100
    assert search._finishing() and lad.finishing and not lad.quotas
    assert search._fits_before_deadline() == 0  # no new candidate fits before the reserve
    search.finish_front = False  # plain successive halving: the time is the new candidates'
    assert not search._finishing() and search._fits_before_deadline() >= 1


def test_in_the_reserve_no_new_candidate_is_asked_and_the_front_is_promoted(builtin_model, tmp_path, caplog):
    import json
    import logging
    import time

    caplog.set_level(logging.INFO, logger="vitsearch.run")

    search = _searcher(builtin_model, tmp_path, target=100, batch_size=4, ladder=_rung_ladder(), finish_front=True)
    first = search.suggest("t0")  # no deadline yet: a full batch of new candidates
    assert isinstance(first, dict) and all(job["rung"] == 0 for job in first["candidates"])
    numbers = [job["number"] for job in first["candidates"]]
    search._batches.clear()  # told (here by hand): their first rung's results, the first two on the front
    for i, number in enumerate(numbers):
        search.promotions.remember_first(number, json.dumps({"depth": {"keep": 7 - i}}), {"accuracy": 0.9},
                                         [0.9 - i / 10, 1.0 - i / 10 if i < 2 else 2.0])
    # 320 s left of a long budget; the front's rungs take 240 s + 600 s each by the steps: rung 2 cannot fit,
    # rung 1 can, and its reserve (1.25 x 240 s) leaves less than one first rung (60 s) for a new candidate
    search.clock.started, search.clock.deadline = time.time() - 2000, time.time() + 320
    search.clock.first_seconds = [60.0]
    assert search.clock.finish_reserve() == pytest.approx(300) and search.clock.deadline - time.time() > 300
    asked = len(search.study.trials)
    promoted = []
    for tune_id in ("t1", "t2"):
        job = search.suggest(tune_id)["candidates"]
        assert len(job) == 1 and job[0]["rung"] == 1
        promoted.append(job[0]["number"])
    assert sorted(promoted) == sorted(numbers[:2]) and search.promotions.ladder.finishing
    assert search.suggest("t3") is None  # both in flight, nothing else due: wait, ask nothing new
    told = [r.getMessage() for r in caplog.records if "finish the front" in r.getMessage()]
    assert len(told) == 1 and "2 of its candidates below the top rung" in told[0]  # said once, when it began
    search.clock.deadline = time.time() + 45  # rung 2 takes 16 s x 100 / 40 = 40 s, x1.25: it cannot finish in time
    for tune_id, number in zip(("t1", "t2"), promoted):
        search.on_trial_result(tune_id, {"candidate_json": json.dumps({
            "number": number, "rung": 1, "evaluation": {"accuracy": 0.95, "latency": {"median_ms": 1.0}}, "feasible": True,
            "constraints": [], "seconds": 16.0})})
    assert search.promotions.due() is None and search.suggest("t4") == "FINISHED"  # nothing left that fits
    assert search.stopped_at_deadline  # the time budget ended it
    assert len(search.study.trials) == asked


def test_once_every_candidate_is_asked_the_front_is_finished_before_the_search_ends(builtin_model, tmp_path):
    """Also where a driver finds the target met at its first ask (a resumed run): its first suggest promotes."""
    import optuna

    search = _searcher(builtin_model, tmp_path, target=2, batch_size=4, ladder=_rung_ladder(), finish_front=True)
    trials = []
    for tune_id in ("t0", "t1"):  # near the target each worker gets one
        assert len(search.suggest(tune_id)["candidates"]) == 1
        trials += search._batches.pop(tune_id)
    for i, trial in enumerate(trials):  # told as the searcher tells them; the two trade off: both on the front
        values = [0.9 - i / 10, 1.0 - i / 2]
        search.teller.settle(trial, values, optuna.trial.TrialState.COMPLETE,
                             {"evaluation": {"accuracy": values[0]}, "feasible": True})
        search.promotions.remember_first(trial.number, trial.user_attrs["config"], {"accuracy": values[0]}, values)
    # the quota (2 // 3) promotes nobody; the end promotes both, one rung at a time: a second driver on the
    # study (or a resumed one), which finds the target met at its first ask, takes one
    resumed = _searcher(builtin_model, tmp_path, target=2, batch_size=4, ladder=_rung_ladder(), finish_front=True)
    first = resumed.suggest("r0")
    assert first != "FINISHED" and first["candidates"][0]["rung"] == 1
    job = search.suggest("t2")  # and the first driver the other
    assert job != "FINISHED" and job["candidates"][0]["rung"] == 1 and search.promotions.ladder.finishing
    assert {first["candidates"][0]["number"], job["candidates"][0]["number"]} == {t.number for t in trials}
