"""Faults a user meets (issue 25 section 4): each is refused in one line (exit 2, nothing written) or survived
with nothing lost.

Damaged and copied run dirs, damaged rung checkpoints, unreadable or one-class image
folders, SIGTERM/SIGINT on the driver, and the progress `pick` prints while it polishes.
The bad *input* cases are the tables in tests/search/cli/ (test_study_input.py, test_command_input.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from clitools import SMALL_STUDY, make_run, one_line_exit_2, snapshot, tiny_imagefolder, vitsearch
from tinystudy import write_study

#: a small run with two rungs (so rung checkpoints exist); size is an objective, so that the
#: front holds int8 variants smaller than the uncompressed model whatever the timings were
RUNG_STUDY = {**SMALL_STUDY, "constraints": {},
              "objectives": [{"metric": "accuracy", "direction": "maximize"},
                             {"metric": "size_mb", "direction": "minimize"}],
              "recovery": {"rungs": [2, 6], "reduction": 2, "batch_size": 16},
              "search": {**SMALL_STUDY["search"], "trials": 6, "batch_size": 1}}
#: `pick` of a compressed variant (the uncompressed model is 5.4 MB), judged on the recorded latencies
PICK = ["--latency-ms", "100000", "--max-size-mb", "5", "--no-remeasure"]


@pytest.fixture(scope="module")
def rung_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("rung_run"), RUNG_STUDY)


def _copy(run: Path, root: Path) -> Path:
    copy = root / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".driver.lock", "variants"))
    return copy


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- run dirs: resume works on the run dir it is given, or refuses in one line ---------------------
@pytest.mark.slow
def test_a_copied_run_dir_resumes_its_own_storage(rung_run, tmp_path, monkeypatch):
    from vitsearch.search.engine.plan import RunOptions, plan_run

    monkeypatch.chdir(tmp_path)
    copy = _copy(rung_run, tmp_path)
    assert json.loads((copy / "run.json").read_text())["storage"] == "sqlite:///optuna.db"  # relative to the run dir
    plan = plan_run(rung_run.parent / "study.yaml", RunOptions(resume=str(copy)))
    assert plan.storage_url == f"sqlite:///{(copy / 'optuna.db').resolve()}"
    # a run.json of an older vitsearch named the original's file by its absolute path: still the copy's own
    meta = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**meta, "storage": f"sqlite:///{(rung_run / 'optuna.db').resolve()}"}))
    assert plan_run(rung_run.parent / "study.yaml", RunOptions(resume=str(copy))).storage_url == plan.storage_url


@pytest.mark.slow
@pytest.mark.parametrize("damage, match", [
    (lambda db: db.write_bytes(db.read_bytes()[:len(db.read_bytes()) // 2]),
     "is damaged (database disk image is malformed)"),
    (lambda db: db.write_bytes(os.urandom(len(db.read_bytes()))), "is not an SQLite database"),
    (lambda db: db.write_bytes(b""), "is empty"),
    (lambda db: db.unlink(), "holds no optuna.db"),
    (lambda db: (db.parent / "run.json").write_text((db.parent / "run.json").read_text()[:30]),
     "run.json is damaged (not valid JSON at line"),
], ids=["truncated-db", "random-db", "empty-db", "no-db", "truncated-run.json"])
def test_a_damaged_run_dir_is_refused_on_resume(rung_run, tmp_path, monkeypatch, capsys, damage, match):
    monkeypatch.chdir(tmp_path)
    original = _digest(rung_run / "optuna.db")
    copy = _copy(rung_run, tmp_path)
    damage(copy / "optuna.db")
    one_line_exit_2(["run", rung_run.parent / "study.yaml", "--resume", copy], tmp_path, capsys, match)
    assert _digest(rung_run / "optuna.db") == original  # the original run is not touched either


# ---- rung checkpoints ------------------------------------------------------------------------------
class _Planted:
    """Unpickling this would create ``marker``: a weights-only load never does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pick_refused(run: Path, root: Path, capsys, match: str) -> None:
    """`pick` (which prints its choice first) stops at the checkpoint: one line on stderr, exit 2, nothing written."""
    from vitsearch.search.cli import main

    def files() -> set[str]:  # SQLite's -wal/-shm files come and go with any reader of the storage
        return {p for p in snapshot(root) if not p.endswith(("-wal", "-shm"))}

    before = files()
    capsys.readouterr()
    code = main([str(a) for a in ["pick", run, *PICK, "--out", root / "v"]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err, err
    assert files() == before, "something was written"


@pytest.mark.slow
def test_rung_checkpoint_faults(rung_run, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.chdir(tmp_path)
    copy = _copy(rung_run, tmp_path)
    rungs = sorted((copy / "rungs").glob("*.pt"))
    assert rungs, "the run kept no rung checkpoint"
    marker = tmp_path / "unpickled"
    for p in rungs:  # whichever variant wins, its checkpoint is a malicious pickle
        torch.save({"weights": _Planted(marker)}, p)
    _pick_refused(copy, tmp_path, capsys, "is not a weights-only checkpoint (UnpicklingError: Unsupported global")
    assert not marker.exists()
    for p in rungs:
        p.unlink()
        p.mkdir()
    _pick_refused(copy, tmp_path, capsys, "is a folder, not a weights file")
    for p in rungs:  # deleted weights: distilled again (seeded, the same weights), and said so
        p.rmdir()
    from vitsearch.search.cli import main

    assert main(["pick", str(copy), *PICK, "--polish-steps", "0", "--out", str(tmp_path / "v")]) == 0
    out, err = capsys.readouterr()
    assert "is missing: trial" in err and "is distilled again to rung" in err, err
    assert "accuracy at export" in out  # pick checked that the rebuilt weights score what the search recorded


@pytest.mark.slow
@pytest.mark.parametrize("select", [None, "top1"])
def test_pick_shows_progress_while_it_polishes(rung_run, tmp_path, monkeypatch, capsys, select):
    from vitsearch.search.cli import main

    monkeypatch.chdir(tmp_path)
    chosen = ["--polish-select", select] if select else []
    assert main(["pick", str(rung_run), *PICK, "--polish-steps", "3", *chosen, "--out", str(tmp_path / "v")]) == 0
    err = capsys.readouterr().err
    assert "polishing trial" in err and "step 1/3" in err and "step 3/3 (100%), ETA 0 s" in err, err
    polish = json.loads((tmp_path / "v" / "provenance.json").read_text())["accuracy"]["polish"]
    # the defaults: the built-in model's training warp, from a peak learning rate of its own
    assert polish["augment"] == "affine" and "batches altered by affine" in polish["schedule"]
    assert polish["lr"] == 5e-4 and "AdamW from lr 0.0005" in polish["schedule"]
    # both val figures at every checkpoint, whichever selects
    kls, top1s = polish["val_kl_at_checkpoints"], polish["val_at_checkpoints"]
    assert set(kls) == set(top1s) == {"0", "1", "2", "3"} and all(k > 0 for k in kls.values())
    if select is None:  # the default: selected by how closely it follows the teacher on val
        assert polish["select"] == "teacher" and "KL divergence from the teacher" in polish["schedule"]
        best = min(kls, key=lambda step: (kls[step], int(step)))
    else:  # by val top-1, the earliest of equals
        assert polish["select"] == "top1" and "the best by val top-1" in polish["schedule"]
        best = max(top1s, key=lambda step: (top1s[step], -int(step)))
    assert polish["best_step"] == int(best)
    if best != "0":  # the weights built for export score on val what their checkpoint scored
        assert polish["val_kl"] == pytest.approx(kls[best], rel=1e-5)
        assert polish["val_accuracy"] == top1s[best] and polish["unpolished_val_kl"] == kls["0"]
        # kept exactly when the deployed polished weights rank above the unpolished by the same rule
        better = (polish["val_kl"] < polish["unpolished_val_kl"] if select is None
                  else polish["val_accuracy"] > top1s["0"])
        assert polish["kept"] == better
    else:
        assert not polish["kept"] and "no checkpoint scored better than the unpolished weights" in polish["note"]


@pytest.mark.slow
def test_pick_by_the_teacher_scores_the_top_rungs_trials_too(rung_run, tmp_path, monkeypatch, capsys):
    """The front and every other feasible trial of the top rung within what was asked are rebuilt and scored
    against the teacher; the winner is the closest of them."""
    from vitsearch.search.cli import main
    from vitsearch.search.results.runview import load_run, top_rung_pool

    monkeypatch.chdir(tmp_path)
    view = load_run(rung_run)
    f = view.frame
    top = f[(f["state"] == "COMPLETE") & (f["feasible"] == True)  # noqa: E712
            & f["reused_from"].isna() & (f["rung"] == 1)]
    pool = top_rung_pool(view)
    assert set(top["number"]) - set(view.front["number"]), "the run has no top-rung trial off the front to rank"
    assert set(pool["number"]) == set(top["number"]) | set(view.front["number"])
    within = pool[pool["size_mb"] <= 5]
    assert main(["pick", str(rung_run), *PICK, "--polish-steps", "0", "--out", str(tmp_path / "v")]) == 0
    out, err = capsys.readouterr()
    assert out.count("follows the teacher on val at KL") == len(within), out
    kls = {int(n): float(kl) for n, kl in re.findall(r"trial (\d+) \(\d+/\d+\) follows the teacher on val at KL "
                                                      r"([0-9.]+)", out)}
    assert set(kls) == set(within["number"])
    prov = json.loads((tmp_path / "v" / "provenance.json").read_text())
    assert kls[prov["trial"]] == min(kls.values())  # as printed, to 4 decimals
    assert prov["accuracy"]["val_kl_at_choice"] == pytest.approx(kls[prov["trial"]], abs=5e-5)
    assert f"of {len(within)} top-rung or Pareto variant(s)" in out


# ---- image folders ---------------------------------------------------------------------------------
def _folder_study(cwd: Path, **data) -> Path:
    return write_study(cwd / "study.yaml",
                       data={"source": "imagefolder", "path": "data", "calibration_size": 4, **data})


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_imagefolder(tmp_path / "data")
    return tmp_path


@pytest.mark.slow
def test_an_unreadable_image_is_named_or_skipped(images, capsys):
    from vitsearch.search.cli import main

    bad = images / "data" / "val" / "c3" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))  # a PNG signature, then garbage
    one_line_exit_2(["run", _folder_study(images), "--out", images / "run"], images, capsys,
                     f"image '{bad}' cannot be read")
    assert main(["baseline", str(_folder_study(images, skip_unreadable=True))]) == 0
    out, err = capsys.readouterr()
    assert "1 unreadable image(s) skipped" in out, out
    assert "data.skip_unreadable: 1 unreadable image(s) left out" in err, err


@pytest.mark.slow
def test_an_image_folder_of_one_class_is_refused(images, capsys):
    for split in ("train", "val"):
        for folder in (images / "data" / split).iterdir():
            if folder.name != "c0":
                shutil.rmtree(folder)
    one_line_exit_2(["run", _folder_study(images), "--out", images / "run"], images, capsys,
                     "holds 1 class folder(s) ['c0']; a classifier needs at least 2 classes")


# ---- stop signals ----------------------------------------------------------------------------------
def _states(db: Path) -> dict[str, int]:
    """Trials per state in the run's storage, read-only (never creating the file); empty while there is none."""
    if not db.is_file():
        return {}
    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10) as con:
            return dict(con.execute("select state, count(*) from trials group by state").fetchall())
    except sqlite3.Error:
        return {}


def _stop_after(argv: list, db: Path, sig: int, completed: int) -> subprocess.CompletedProcess:
    """Run ``vitsearch ARGV``, send ``sig`` to the driver once ``completed`` trials are COMPLETE; its outcome."""
    proc = subprocess.Popen([sys.executable, "-m", "vitsearch.search.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline and _states(db).get("COMPLETE", 0) < completed:
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(sig)  # the driver only, as `kill PID`, systemd or a container runtime send it
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigterm_and_ctrl_c_stop_a_run_cleanly(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({**SMALL_STUDY, "constraints": {},
                                     "search": {**SMALL_STUDY["search"], "trials": 3, "batch_size": 1}}))
    run, db = tmp_path / "run", tmp_path / "run" / "optuna.db"
    for sig, code, argv in ((signal.SIGTERM, 143, ["--out", run]), (signal.SIGINT, 130, ["--resume", run])):
        done = _states(db).get("COMPLETE", 0)
        stopped = _stop_after(["run", study, *argv], db, sig, done + 1)
        name = signal.Signals(sig).name
        assert stopped.returncode == code, stopped.stderr[-3000:]
        assert f"interrupted by {name}" in stopped.stdout and f"--resume {run}" in stopped.stdout, stopped.stdout
        assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
        assert _states(db).get("RUNNING", 0) == 0  # in-flight trials were failed and enqueued again
    out = vitsearch("run", study, "--resume", run)
    assert out.returncode == 0, out.stderr[-3000:]
    frame = pd.read_parquet(run / "trials.parquet")
    done = frame[(frame.state == "COMPLETE") & frame.reused_from.isna()]
    # stopped at 1 and at 2 COMPLETE: the last resume has the third to do
    assert len(done) == 3 and done.config.is_unique  # nothing lost, nothing evaluated twice
