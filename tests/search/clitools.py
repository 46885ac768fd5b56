"""Helpers shared by the CLI-level tests: run `vitsearch` in a fresh process, build a small run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

#: A small real study of the built-in model: 8 trials, one worker (timings do not overlap),
#: Ray capped at 2 CPUs, short latency measurements.
SMALL_STUDY = {
    "name": "t",
    "latency": {"batch_size": 1, "threads": 1, "warmup": 2, "max_runs": 30, "max_seconds": 0.5,
                "interleave": {"chunk": 2, "min_pairs": 3, "max_seconds": 0.3}},
    "data": {"eval_batch_size": 500},
    "constraints": {"max_accuracy_drop": 0.05},
    "search": {"trials": 8, "workers": 1, "cpus": 2, "seed": 0, "batch_size": 2},
}


def vitsearch(*args, timeout=600, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (a new process), capturing its output."""
    return subprocess.run([sys.executable, "-m", "vitsearch.search.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})


def make_run(root: Path, study: dict = SMALL_STUDY) -> Path:
    """`vitsearch run` of ``study`` into ``root/run``; fails the test if the run fails."""
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    proc = vitsearch("run", path, "--out", root / "run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "run"
