"""`vitsearch run` with rungs of distillation: 2 workers end to end, and a kill in the middle of a promotion.

Real Ray (2 CPUs, no dashboard), real Optuna storage, the built-in model; tiny rungs
(1, 3, 6 steps of batch 16) keep it to tens of seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from clitools import SMALL_STUDY, vitsearch
from tinystudy import tiny_study_dict

# slow; the timeout is raised above the suite's 600 s for machines shared with other jobs
# (a couple of minutes each on an idle 2-core CPU)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

#: clitools' small study (its short interleaved timings) with tiny rungs and 2 workers
STUDY = tiny_study_dict(
    SMALL_STUDY, recovery={"rungs": [1, 3, 6], "reduction": 2, "batch_size": 16},
    search={"trials": 6, "workers": 2},
    # cheap knobs only: int8 at batch 1 is many times slower to time here (and settled as no gain anyway)
    space={"precision": {"attn": ["fp32"], "mlp": ["fp32"]}, "sparsity": {"attn": ["dense"]}},
)


def _rung_attrs(run: Path):
    from vitsearch.search.results.tables import rung_attrs

    study = optuna.load_study(study_name="t", storage=f"sqlite:///{run / 'optuna.db'}")
    return study, *rung_attrs(study.user_attrs)


def _check_ladder(run: Path) -> None:
    """Every promotion issued once, finished once, from a candidate its rung ranked; weights kept."""
    study, records, issued, failed = _rung_attrs(run)
    evaluated = [t for t in study.trials if t.state.name == "COMPLETE" and "reused_from" not in t.user_attrs]
    done = {(n, k) for n, by in records.items() for k in by}
    assert done | set(failed) == issued, "a promotion was lost or recorded without being issued"
    for t in evaluated:  # seen in the worker's evaluation thread; None where nothing was distilled
        ev = t.user_attrs["evaluation"]
        assert ev["recovery_threads"] == (1 if ev["recovery_steps"] else None)
    identity = [t.number for t in evaluated if json.loads(t.user_attrs["config"]).keys() <= {"schema_version"}]
    for k in (1, 2):
        below = {t.number for t in evaluated} if k == 1 else {n for n, by in records.items() if 1 in by}
        promoted = {n for n, kk in issued if kk == k}
        # promoted only from a result at the rung below (ASHA may promote more than the final quota:
        # a candidate in the top 1/reduction when it was promoted keeps its promotion), never the teacher
        assert promoted <= below and not (promoted & set(identity))
    for (n, k) in done:
        rec = records[n][k]
        assert rec["evaluation"]["recovery_steps"] == STUDY["recovery"]["rungs"][k]
        assert rec["evaluation"]["recovery_threads"] == 1  # 2 CPUs, 2 workers: what a replay must use
        assert (n, k - 1) in done or k == 1
        assert (run / "rungs" / f"trial-{n}-rung-{k}.pt").is_file()
        assert "val split" in rec["evaluation"]["accuracy_source"]


def _check_front_at_top(run: Path) -> None:
    """recovery.finish_front (default): the end of the search took every compressed front point to the top rung."""
    study, _, _, failed = _rung_attrs(run)
    front = json.loads((run / "summary.json").read_text())["pareto_test"]
    configs = {t.number: json.loads(t.user_attrs["config"]) for t in study.trials if "config" in t.user_attrs}
    assert front and all(r["rung"] == 2 for r in front
                         if configs[r["number"]].keys() - {"schema_version"} and not any(n == r["number"]
                                                                                          for n, _ in failed))


def test_rung_run_two_workers(tmp_path, tiny_study):
    run = tmp_path / "run"
    out = vitsearch("run", tiny_study(STUDY), "--out", run, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["evaluated"] == 6 and summary["reached_rung"][0] == 6
    assert summary["reached_rung"][1] >= 1 and summary["rungs"] == [1, 3, 6]
    _check_ladder(run)
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{run / 'optuna.db'}")
    for t in study.trials:
        ev = t.user_attrs.get("evaluation") or {}
        if t.state.name == "COMPLETE":  # Optuna is told measured values only
            assert ev["accuracy"] is not None and t.values[0] == ev["accuracy"]
        if t.user_attrs.get("settled"):  # settled on cost: PRUNED, no invented accuracy, measured constraints
            assert t.state.name == "PRUNED" and t.values is None and ev.get("accuracy") is None
            assert "accuracy" not in t.constraints
    frame = pd.read_parquet(run / "trials.parquet")
    assert {"rung", "settled", "accuracy_first_rung"} <= set(frame.columns)
    promoted = frame[frame.rung >= 1]
    assert (promoted.recovery_steps > 1).all()
    # the front is at the highest rung each reached, re-measured on test with its interval
    front = summary["pareto_test"]
    assert front and all(r["test_lo"] <= r["test_accuracy"] <= r["test_hi"] and r["test_n"] == 2000 for r in front)
    assert all(r["rung"] == frame.loc[frame.number == r["number"], "rung"].item() for r in front)
    _check_front_at_top(run)
    assert "test acc [95% CI]" in out.stdout and "6 evaluated" in out.stdout
    cache = json.loads((run / "test_accuracy.json").read_text())  # and the uncompressed model, to pair with
    assert set(cache) == {f"{r['number']}:{r['rung']}" for r in front} | {"base"}
    assert all(cache[k]["test_correct"] and cache[k]["test_n"] == 2000 for k in cache)


def test_kill_in_the_middle_of_a_promotion_and_resume(tmp_path, tiny_study):
    study_path = tiny_study(STUDY)
    run, marker = tmp_path / "run", tmp_path / "hung"
    faults = json.dumps({"hang_on_rung": [1, str(marker)]})
    proc = subprocess.Popen([sys.executable, "-m", "vitsearch.search.cli", "run", str(study_path), "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "VITSEARCH_TEST_FAULTS": faults})
    deadline = time.time() + 900
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None and marker.exists(), "no promotion started before the run ended"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray processes, while a promotion runs
    proc.wait()
    _, records, issued, _ = _rung_attrs(run)
    hung = [tuple(map(int, line.split(":"))) for line in marker.read_text().split()]
    assert set(hung) <= issued and not any(1 in records.get(n, {}) for n, _ in hung)

    out = vitsearch("run", study_path, "--resume", run, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_ladder(run)
    _, records, issued_after, failed = _rung_attrs(run)
    assert issued <= issued_after and not failed
    assert all(k in records.get(n, {}) for n, k in hung), "the promotion in flight at the kill was lost"
    _check_front_at_top(run)  # the resumed driver found the target met and finished the front
    summary = json.loads((run / "summary.json").read_text())
    assert summary["evaluated"] == 6
