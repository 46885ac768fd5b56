"""Bad command lines and output folders: one line, exit 2, nothing written, in-process and in a real process."""

from __future__ import annotations

import os

import pytest
import yaml
from clitools import one_line_exit_2, snapshot, study_file, vitsearch

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
    (["pick", "nowhere", "--latency-ms", "2", "--polish-augment", "rotate"],
     "--polish-augment: 'rotate' is not one of none, shift, affine, mixup, shift+mixup"),
    (["pick", "nowhere", "--latency-ms", "2", "--polish-lr", "0"], "--polish-lr: must be a number above 0"),
    (["pick", "nowhere", "--latency-ms", "2", "--polish-lr", "nan"], "--polish-lr: must be a number above 0"),
    (["pick", "nowhere", "--latency-ms", "2", "--polish-ema", "1"], "--polish-ema: must be in [0, 1)"),
    (["pick", "nowhere", "--latency-ms", "2", "--polish-select", "test"], "--polish-select: 'test' is not one of top1, teacher"),
    (["pick", "nowhere", "--latency-ms", "2", "--choose-by", "test"], "--choose-by: 'test' is not one of top1, teacher"),
    (["pick", "nowhere", "--latency-ms", "2", "--min-accuracy", "2"], "--min-accuracy"),
    (["pick", "nowhere", "--latency-ms", "2", "--max-size-mb", "inf"], "--max-size-mb: must be > 0"),
    (["pick", "nowhere", "--latency-ms", "2", "--out", "{file}"], "is an existing file, not a folder"),
    (["pick", "nowhere"], "pick: give --latency-ms X"),
    (["pick", "nowhere", "--max-drop", "-1"], "--max-drop: must be accuracy points in [0, 100]"),
    (["pick", "nowhere", "--max-drop", "nan"], "--max-drop: must be accuracy points in [0, 100]"),
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
    (["bench-search", "{study}", "--first-seed", "1"], "--first-seed: only with --baselines, got 1"),
    (["bench-search", "{study}", "--baselines", "--first-seed", "-1"], "--first-seed: must be an integer >= 0"),
    (["bench-search", "{study}", "--recipes", "depth"], "--recipes: only with --baselines, got 'depth'"),
    (["bench-search", "{study}", "--baselines", "--recipes", "depth,warp"], "--recipes: unknown recipe 'warp'"),
    (["bench-search", "{study}", "--baselines", "--recipes", ","], "--recipes: unknown recipe ','"),
    (["bench-search", "{study}", "--fidelity", "zero-shot", "--out", "{file}"], "is an existing file"),
    (["train-builtin", "--epochs", "0"], "--epochs"),
    (["train-builtin", "--out", "{file}/w.pt"], "is a file"),
    (["profile", "{study}", "--budget-minutes", "0"], "--budget-minutes"),
    (["profile", "{study}", "--out", "{file}"], "is an existing file, not a folder"),
]


@pytest.mark.parametrize("argv, match", BAD_COMMANDS, ids=[" ".join(a[:1] + a[2:])[:40] for a, _ in BAD_COMMANDS])
def test_bad_command_lines(cwd, capsys, argv, match):
    (cwd / "full").mkdir()
    (cwd / "full" / "keep.txt").write_text("not a run")
    (cwd / "link").symlink_to(cwd / "full")
    paths = {"study": study_file(cwd, {}), "file": cwd / "a_file", "full": cwd / "full", "link": cwd / "link",
             "resnet": study_file(cwd, {"model": {"name": "timm:resnet50"}}, "resnet.yaml"),
             "builtin_other": study_file(cwd, {"model": {"name": "builtin:other"}}, "other.yaml")}
    paths["file"].write_text("x")
    for key, value in paths.items():
        argv = [a.replace("{%s}" % key, str(value)) for a in argv]
    one_line_exit_2(argv, cwd, capsys, match)


def test_bad_input_through_a_real_process(tmp_path):
    """The installed CLI (a fresh process) answers like main(): one line, exit 2, nothing written; also once torch
    and timm are loaded (a warning they print would reach the user's terminal, where pytest keeps it in-process)."""
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "resnet.yaml").write_text(yaml.safe_dump({"model": {"name": "timm:resnet18", "pretrained": False}}))
    for argv, match in ((["run", "empty.yaml"], "is empty"),
                        (["pick", "nowhere", "--latency-ms", "inf"], "--latency-ms"),
                        (["baseline", "resnet.yaml"], "not a supported ViT")):
        before = snapshot(tmp_path)
        proc = vitsearch(*argv, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and match in proc.stderr, proc.stderr
        assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only-permission folder")
@pytest.mark.parametrize("argv", [["pick", "nowhere", "--latency-ms", "2", "--out", "ro/v"],
                                  ["report", "nowhere", "--out", "ro/r"], ["run", "{study}", "--out", "ro/run"]])
def test_unwritable_out_folders(cwd, capsys, argv):
    study = study_file(cwd, {})
    (cwd / "ro").mkdir(mode=0o555)
    one_line_exit_2([a.replace("{study}", str(study)) for a in argv], cwd, capsys, "is not writable")


@pytest.mark.parametrize("argv", [["pick", "nowhere", "--latency-ms", "2", "--out", "f/v"],
                                  ["report", "nowhere", "--out", "f/r"], ["run", "{study}", "--out", "f/run"]])
def test_out_folders_under_a_file(cwd, capsys, argv):
    """What no permission bit decides, so root fails it too: a file where a folder of the path should be."""
    study = study_file(cwd, {})
    (cwd / "f").write_text("a file, not a folder")
    one_line_exit_2([a.replace("{study}", str(study)) for a in argv], cwd, capsys, "is a file")
