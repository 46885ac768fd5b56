"""Bad study files and field values: one line, exit 2, nothing written, judged before Ray or a model loads.

The tables run the CLI in-process (``main([...])``), so each case takes milliseconds. Paths a
study file writes are anchored at the file, whatever the working directory.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from clitools import SMALL_STUDY, one_line_exit_2, study_file, tiny_imagefolder, vitsearch
from tinystudy import write_study

from vitsearch.evaluators.models import ModelSpec, load_base_model
from vitsearch.search.study import StudySpec, load_study


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
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    elsewhere.mkdir()
    tiny_imagefolder(proj / "data")
    (proj / "w").mkdir()
    torch.save(load_base_model(ModelSpec()).state_dict(), proj / "w" / "ckpt.pt")
    write_study(proj / "study.yaml", name="rel", output_dir="out/{name}",
                data={"source": "imagefolder", "path": "data", "calibration_size": 8, "eval_batch_size": None},
                model={"name": "builtin:vitsearch-tiny", "checkpoint": "w/ckpt.pt"},
                latency={"interleave": SMALL_STUDY["latency"]["interleave"]},  # short timings: paths are the point
                search={"trials": 3, "workers": 1, "cpus": 2, "batch_size": 1})
    out = vitsearch("run", "../proj/study.yaml", cwd=elsewhere)
    assert out.returncode == 0, out.stderr[-3000:]
    frame = pd.read_parquet(proj / "out" / "rel" / "trials.parquet")
    assert (frame.state == "COMPLETE").sum() == 3 and (frame.state == "FAIL").sum() == 0
    assert list(elsewhere.iterdir()) == []  # nothing written in the working directory


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

@pytest.mark.parametrize("doc, match", BAD_STUDIES, ids=[f"study{i}" for i in range(len(BAD_STUDIES))])
def test_bad_study_fields(cwd, capsys, doc, match):
    path = study_file(cwd, doc)
    one_line_exit_2(["run", path, "--out", cwd / "run"], cwd, capsys, match)


@pytest.mark.parametrize("name, data, match", BAD_STUDY_FILES, ids=[f[0] for f in BAD_STUDY_FILES])
def test_bad_study_files(cwd, capsys, name, data, match):
    (cwd / name).write_bytes(data)
    one_line_exit_2(["run", name], cwd, capsys, match)


def test_every_section_of_the_study_schema_has_a_bad_value_row():
    """A section added to the schema without a row here fails: bad input there is otherwise untried."""
    assert set(StudySpec.model_fields) <= {key for doc, _ in BAD_STUDIES for key in doc}
