"""The CLI as a user meets it: real processes, exit codes, one-line errors.

Bad input is refused in this process (``main``, as the tables in test_study_input.py and
test_command_input.py do; test_command_input.py runs a refusal through a real process).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from clitools import one_line_exit_2, vitsearch


def study(tmp_path, doc: dict):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_help_is_fast_and_lists_commands():
    out = vitsearch("--help")
    assert out.returncode == 0
    for cmd in ("run", "baseline", "eval", "train-builtin"):
        assert cmd in out.stdout
    # fast = no heavy import at CLI import time (what decides it; a wall-clock bound would follow the load)
    probe = subprocess.run([sys.executable, "-c", "import sys, vitsearch.search.cli; "
                            "print(any(m in sys.modules for m in ('torch', 'ray', 'optuna', 'timm')))"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False"


@pytest.mark.slow
def test_baseline_json_on_default_study(tmp_path):
    out = vitsearch("baseline", "default", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["accuracy"] >= 0.97
    assert data["latency_ms"] > 0 and data["latency_source"] == "measured" and data["latency_runs"] >= 5
    assert data["device"] == "cpu" and 4.0 < data["size_mb"] < 7.0
    assert data["record"]["fingerprint"]["threads"] == 1


def test_eval_prints_every_number_with_its_source(tmp_path):
    out = vitsearch("eval", "default", "--config", '{"depth": {"keep": 4}}', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "depth 4" in text and "measured on val split of mnist5k, 500 images" in text
    assert "measured = ratio" in text and "timed interleaved" in text and "analytic" in text


def _ckpt(tmp_path):

    path = tmp_path / "deit.pt"
    import timm

    torch.save(timm.create_model("deit_tiny_patch16_224", pretrained=False).state_dict(), path)
    return path


@pytest.mark.parametrize("doc, match", [
    ({"nope": 1}, "unknown field 'nope'"),
    ({"search": {"trials": "x"}}, "field 'search.trials'"),
    ({"model": {"name": "timm:nonexistent_vit"}}, "unknown timm model"),
    ({"model": {"name": "timm:resnet18", "pretrained": False}}, "not a supported ViT"),
    ({"data": {"source": "imagefolder", "path": "/does/not/exist"}}, "does not exist"),
    ({"device": "cuda"} if not torch.cuda.is_available() else {"device": "cuda:99"}, "cuda"),
    ({"latency": {"batch_size": 0}}, "latency.batch_size"),
])
def test_bad_input_one_line_exit_2(tmp_path, monkeypatch, capsys, doc, match):
    monkeypatch.chdir(tmp_path)
    one_line_exit_2(["baseline", study(tmp_path, doc)], tmp_path, capsys, match)  # and nothing written


def test_bad_checkpoint_and_empty_data_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ckpt = _ckpt(tmp_path)
    one_line_exit_2(["baseline", study(tmp_path, {"model": {"checkpoint": str(ckpt)}})], tmp_path, capsys,
                    "does not match the architecture")
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir()
    path = study(tmp_path, {"data": {"source": "imagefolder", "path": str(tmp_path / "data")}})
    one_line_exit_2(["baseline", path], tmp_path, capsys, "no images")


def test_bad_config_argument(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    one_line_exit_2(["eval", "default", "--config", "{not json"], tmp_path, capsys, "--config: not valid JSON")
    one_line_exit_2(["eval", "default", "--config", '{"depth": {"keep": 0}}'], tmp_path, capsys, "depth")
