"""One driver per run dir, a failed start leaves nothing, and what a killed driver's Ray left is reaped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from clitools import one_line_exit_2, study_file

from vitsearch.search.engine.raylocal import reap, session_processes
from vitsearch.search.results.rundir import RunDir
from vitsearch.spaces.errors import ConfigError


# ---- one driver per run dir -----------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from vitsearch.search.results.rundir import RunDir
from vitsearch.search.study import load_study
run = RunDir(Path(sys.argv[1]))
with run.locked(new=True):
    if sys.argv[2] == "create":  # what a driver does once its model and data are loaded
        run.create(load_study(sys.argv[3]), {"trials": 2})
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(run: Path, study: Path, create: bool) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run), "create" if create else "-", str(study)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_dir_belongs_to_one_driver(cwd, capsys):
    study, run = study_file(cwd, {}), cwd / "run"
    holder = _hold(run, study, create=False)  # a driver still loading its model: no study.yaml yet
    try:
        one_line_exit_2(["run", study, "--out", run], cwd, capsys,
                         f"is in use by another vitsearch run (driver pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    with RunDir(run).locked(new=True):  # the kernel dropped the killed holder's lock
        pass
    holder = _hold(run, study, create=True)  # a running driver
    try:
        one_line_exit_2(["run", study, "--resume", run], cwd, capsys, "is in use by another vitsearch run")
        one_line_exit_2(["run", study, "--out", run], cwd, capsys, "already holds a run")
    finally:
        holder.kill()
        holder.wait()
    with RunDir(run).locked(new=False):
        pass


def test_a_failed_start_leaves_no_folder(cwd):
    """The lock's folder (and parents it made) go again when the run never got its study file."""
    with pytest.raises(ConfigError, match="model failed"):
        with RunDir(cwd / "a" / "b" / "run").locked(new=True):
            raise ConfigError("model failed")
    assert list(cwd.iterdir()) == []



def test_resume_names_a_default_that_changed(tmp_path):
    """A run started when a default was another value is refused with the line to write, not only the difference."""
    from vitsearch.search.study import load_study, parse_study

    run = RunDir(tmp_path / "run")
    run.create(parse_study({"recovery": {"lr": 1e-4}}), {"trials": 2})  # as an older vitsearch wrote its study
    with pytest.raises(ConfigError, match=r"recovery\.lr is 0\.0005 here, this vitsearch's default, and the run was "
                                          r"started with 0\.0001 .*: set `lr: 0\.0001` under `recovery:` in the study "
                                          r"file to resume \(the run's own copy: .*study\.yaml'\), or start a new run"):
        run.check_resumable(parse_study({}))
    for other in ({"recovery": {"lr": 2e-3}},  # a value the file wrote: no talk of defaults
                  {"recovery": {"seed": 3}}):  # the default's difference and another: the one line would not do
        with pytest.raises(ConfigError) as refused:
            run.check_resumable(parse_study(other))
        assert "this vitsearch's default" not in str(refused.value)
        assert "resume with the same study file" in str(refused.value)
    assert run.check_resumable(parse_study({"recovery": {"lr": 1e-4}})).recovery.lr == 1e-4
    assert run.check_resumable(load_study(run.study_file)).recovery.lr == 1e-4  # the run's own copy resumes it
    # a second driver joining a shared study that an older vitsearch started: told the same
    import optuna

    from vitsearch.search.engine.sharing import STUDY_ATTR, check_same_study, study_fingerprint

    storage = optuna.storages.InMemoryStorage()
    older = study_fingerprint(parse_study({"recovery": {"lr": 1e-4}}))
    optuna.create_study(storage=storage, study_name="default").set_user_attr(STUDY_ATTR, older)
    with pytest.raises(ConfigError, match=r"the storage's study was run with 0\.0001 .*: set `lr: 0\.0001` under "
                                          r"`recovery:` in the study file to join it; give every driver"):
        check_same_study(storage, parse_study({}))

# ---- Ray stays local ----------------------------------------------------------------------------
def test_reap_kills_only_what_writes_into_the_dead_session(tmp_path):
    """What a killed driver's Ray left (processes with files open in its session folder) is killed; nothing else."""
    session, other = tmp_path / "session_x", tmp_path / "session_y"
    (session / "logs").mkdir(parents=True)
    (other / "logs").mkdir(parents=True)
    hold = "import sys, time\nf = open(sys.argv[1], 'w')\nprint('ok', flush=True)\ntime.sleep(600)"
    procs = [subprocess.Popen([sys.executable, "-c", hold, str(folder / "logs" / "worker.out")],
                              stdout=subprocess.PIPE, text=True, start_new_session=True) for folder in (session, other)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ok"
        assert session_processes(str(session)) == [procs[0].pid]
        assert reap(str(session)) == 1
        assert procs[0].wait(timeout=30) == -9
        assert procs[1].poll() is None  # another session's process is left alone
        assert reap(str(tmp_path / "gone")) == 0 and reap(None) == 0
    finally:
        for p in procs:
            p.kill()
            p.wait()

