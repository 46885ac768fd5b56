"""End-to-end tests of `vitsearch run`: real Ray (capped), real Optuna storage, real model.

Each test starts its own small Ray instance (2 CPUs, no dashboard); they take tens of
seconds each, so they are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from clitools import vitsearch

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")

STUDY = {
    "name": "t",
    "latency": {"batch_size": 1, "threads": 1, "warmup": 2, "max_runs": 30, "max_seconds": 0.5},
    "data": {"eval_batch_size": 500},
    "search": {"trials": 8, "workers": 2, "cpus": 2, "seed": 0, "batch_size": 2},
}


def write_study(tmp_path: Path, **overrides) -> Path:
    doc = json.loads(json.dumps(STUDY))
    for key, value in overrides.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path



def load(run_dir: Path) -> tuple[optuna.Study, pd.DataFrame]:
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    return study, pd.read_parquet(run_dir / "trials.parquet")


def evaluated_configs(frame: pd.DataFrame) -> list[str]:
    done = frame[(frame.state == "COMPLETE") & frame.reused_from.isna() & frame.accuracy.notna()]
    return done.config.tolist()


def test_short_study_with_faults_and_budget(tmp_path):
    """8 trials, 2 workers: one trial raises, one worker dies mid-trial, a latency budget."""
    # Budget: between the uncompressed model and the strongest preset, measured here first.
    from vitsearch.search.session import load_session
    from vitsearch.spaces import CompressionConfig

    study_path = write_study(tmp_path)
    session = load_session(study_path)
    full = session.evaluate_staged(CompressionConfig())[0]["latency"]["median_ms"]
    study_path = write_study(tmp_path, constraints={"max_latency_ms": round(full * 0.85, 4)})
    marker = tmp_path / "crashed"
    faults = json.dumps({"raise_on": [2], "crash_once": str(marker)})
    out = vitsearch("run", study_path, "--out", tmp_path / "run", env={"VITSEARCH_TEST_FAULTS": faults})
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    study, frame = load(run)
    assert marker.exists(), "the crash fault never fired"
    states = frame.state.value_counts().to_dict()
    assert states.get("COMPLETE") == 8
    failed = frame[frame.state == "FAIL"]
    assert "injected fault for trial 2" in failed.error.str.cat()
    # infeasible (over the latency budget) trials were never accuracy-evaluated
    infeasible = frame[frame.feasible == False]  # noqa: E712
    assert len(infeasible) >= 1
    assert infeasible.accuracy.isna().all() and infeasible.latency_ms.gt(full * 0.85).all()
    # the uncompressed model (first preset) was evaluated, and tables agree with the study
    assert frame.loc[frame.number == 0, "summary"].item() == "identity"
    assert len(frame) == len(study.trials)
    assert (run / "trials.csv").read_text().count("\n") >= len(frame)
    assert "Pareto front" in out.stdout and "vitsearch pick" in out.stdout
    assert len(set(evaluated_configs(frame))) == len(evaluated_configs(frame))
    # a normal Optuna study: directions and constraints are visible to optuna.load_study users
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    budgeted = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert budgeted and all(set(t.constraints) == {"latency_ms"} for t in budgeted)  # Trial.set_constraint
    assert all(t.constraints["latency_ms"] > 0 for t in budgeted if t.number in set(infeasible.number))
    with sqlite3.connect(run / "optuna.db") as con:  # write-ahead log: cheap commits, readable while running
        assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    # the engine's books: every evaluation on the worker clocks, shares in range, CPU accounted
    summary = json.loads((run / "summary.json").read_text())
    books = summary["engine"]
    evaluated = frame[frame.eval_seconds.notna()]
    assert books["evaluations"] == summary["evaluations"] == len(evaluated) > 0
    assert 0 <= books["steady_overhead_share"] < 1 and 0 <= books["engine_overhead_share"] < 1
    assert books["startup_seconds"] > 0 and books["evaluation_cpu_seconds"] > 0
    assert books["worker_process_cpu_seconds"] >= books["evaluation_cpu_seconds"]
    assert books["worker_processes"] >= 2  # the killed worker's replacement has another pid


def _completed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_resume_after_sigkill(tmp_path):
    study_path = write_study(tmp_path, search={"trials": 8, "batch_size": 1})
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vitsearch.search.cli", "run", str(study_path), "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while _completed(run / "optuna.db") < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started, mid-run
    proc.wait()
    killed_at = _completed(run / "optuna.db")
    assert 3 <= killed_at < 8

    out = vitsearch("run", study_path, "--resume", run)
    assert out.returncode == 0, out.stderr[-3000:]
    study, frame = load(run)
    assert (frame.state == "COMPLETE").sum() == 8
    configs = evaluated_configs(frame)
    assert len(configs) == len(set(configs)), "a config was evaluated twice"
    # resuming with a different study file is refused, and changes nothing
    (tmp_path / "other").mkdir()
    other = write_study(tmp_path / "other", latency={"threads": 2})
    bad = vitsearch("run", other, "--resume", run)
    assert bad.returncode == 2 and "differs" in bad.stderr
    assert len(optuna.load_study(study_name="t", storage=f"sqlite:///{run / 'optuna.db'}").trials) == len(study.trials)


def test_external_ray_cluster(tmp_path):
    # Loopback only: Ray resolves 127.0.0.1 to the machine's outward IP unless told it is
    # not forming a multi-host cluster (this flag), for the head and the driver alike.
    # The head uses token authentication; a driver joining it must say so too.
    loopback = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    port = 6390 + os.getpid() % 50
    # --block keeps the head in the foreground, in a process group of its own: the test
    # stops exactly this cluster (`ray stop` would stop every Ray instance on the machine).
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **loopback})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, "ray start --head exited"
                time.sleep(0.5)
        study_path = write_study(tmp_path, search={"trials": 4})
        out = vitsearch("run", study_path, "--out", tmp_path / "run", "--address", f"127.0.0.1:{port}",
                        env=loopback)
        assert out.returncode == 0, out.stderr[-3000:]
        _, frame = load(tmp_path / "run")
        assert (frame.state == "COMPLETE").sum() == 4
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        # `ray start` records its address for later drivers; forget this dead test cluster.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and f":{port}" in current.read_text():
            current.unlink()


@pytest.mark.parametrize("args, match", [
    (["--trials", "0"], "--trials: must be a positive integer"),
    (["--workers", "-1"], "--workers: must be a positive integer"),
    (["--address", "127.0.0.1:1"], "no Ray head reachable"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "storage: no database server reachable"),
    (["--storage", "sqlite:///:memory:"], "in-memory database"),
    (["--resume", "."], "is not a vitsearch run dir"),
])
def test_bad_run_input(tmp_path, args, match):
    study_path = write_study(tmp_path)
    out = vitsearch("run", study_path, "--out", tmp_path / "run", *args, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert match in out.stderr and out.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_unknown_sampler_is_refused(tmp_path):
    study_path = write_study(tmp_path, search={"sampler": "cmaes"})
    out = vitsearch("run", study_path, "--out", tmp_path / "run", timeout=120)
    assert out.returncode == 2 and "search.sampler" in out.stderr
    assert not (tmp_path / "run").exists()
