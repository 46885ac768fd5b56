"""benchmarks/gpu/: the GPU check runs end to end on CPU with tiny sizes (--smoke), so a broken
script is caught here rather than on the GPU; the wheel repacking and the step bounds too."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "benchmarks" / "gpu"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _check(tmp_path: Path, part: int, minutes: float) -> tuple[subprocess.CompletedProcess, Path]:
    out, wheels = tmp_path / "out", tmp_path / "wheels"
    wheels.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "VITSEARCH_LOCK_DIR": str(tmp_path / "locks"),
           "VITSEARCH_GPU_SCRATCH": str(tmp_path / "scratch")}
    r = subprocess.run(["bash", str(GPU / "check.sh"), str(wheels), str(out), "--part", str(part), "--device", "cpu",
                        "--smoke", "--minutes", str(minutes)], capture_output=True, text=True, env=env, timeout=900)
    return r, out


def _steps(out: Path, part: int) -> dict[str, dict]:
    doc = json.loads((out / f"part{part}.json").read_text())
    assert doc["part"] == part and doc["smoke"] and doc["within_minutes"]
    return {s["name"]: s for s in doc["steps"]}


@pytest.mark.slow
def test_part1_environment_and_doctor(tmp_path):
    r, out = _check(tmp_path, 1, 4)
    steps = _steps(out, 1)
    assert [s["status"] for s in steps.values()] == ["ok", "ok"], r.stderr[-2000:]
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] and env["packages"]["optuna"] and env["fingerprint"]["fingerprint_id"]
    doctor = json.loads((out / "doctor.json").read_text())
    assert doctor["exit_code"] == 0 and {c["group"] for c in doctor["checks"]} >= {"timing", "kernel", "runtime"}
    assert len(list(out.iterdir())) <= 8


@pytest.mark.slow
def test_part2_knob_table_rows_with_intervals_and_kernels(tmp_path):
    r, out = _check(tmp_path, 2, 4)
    assert _steps(out, 2)["knobs builtin"]["status"] == "ok", r.stderr[-2000:]
    rows = {row["row"].split(" (")[0]: row for row in json.loads((out / "knobs_builtin.json").read_text())["rows"]}
    assert "aten::linear" in rows["reference: dense fp32"]["kernels"]["aten"]
    int8 = rows["int8 dynamic"]
    assert int8["status"] == "ok" and int8["kernels_ran"] == {"int8": True}  # torchao's _int_mm on CPU too
    lo, hi = int8["speedup_ci"]
    assert lo <= int8["speedup"] <= hi and int8["ratio"] > 0
    assert rows["2:4 mlp"]["kernels_ran"] == {"2:4": False}  # masked dense on CPU: said, not hidden
    # a row that cannot run is recorded with its reason, and the rows after it still ran
    assert rows["int4 weight-only"]["status"] == "error" and "int4" in rows["int4 weight-only"]["error"]
    assert next(v for k, v in rows.items() if k.startswith("joint: depth"))["status"] == "ok"


@pytest.mark.slow
def test_part3_profile_predictor_eval_and_macs_baseline(tmp_path):
    r, out = _check(tmp_path, 3, 6)
    steps = _steps(out, 3)
    assert {k: s["status"] for k, s in steps.items()} == dict.fromkeys(
        ("study", "profile", "predictor-eval", "macs-baseline"), "ok"), r.stderr[-3000:]
    assert json.loads((out / "profile.json").read_text())["models_total"] > 0
    assert len(json.loads((out / "predictor_eval.json").read_text())["rows"]) == 3
    groups = json.loads((out / "macs_baseline.json").read_text())["groups"]
    assert set(groups["all"]) == {"n", "vitsearch", "macs_only"} and groups["all"]["n"] == 3


@pytest.mark.slow
def test_part4_search_with_real_accuracy(tmp_path):
    r, out = _check(tmp_path, 4, 4)
    assert _steps(out, 4)["bench-search"]["status"] == "ok", r.stderr[-2000:]
    search = json.loads((out / "search.json").read_text())
    assert search["trials"] == 3 and search["base"]["accuracy"] > 0.5 and "tpe" in search["hypervolume"]


def test_a_step_past_the_time_left_is_stopped_and_the_next_skipped(tmp_path):
    check = _module("check")
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    with open(tmp_path / "log", "w") as log:
        started = time.monotonic()
        first = check.run_step(check.Step("slow", sleep, 0.1, 60), tmp_path, log, time.monotonic() + 2)
        assert first["status"] == "timeout" and time.monotonic() - started < 20
        second = check.run_step(check.Step("next", sleep, 5, 60), tmp_path, log, time.monotonic() + 1)
    assert second["status"] == "skipped" and "out of time" in second["error"]


def test_a_failing_step_is_recorded_with_its_error(tmp_path):
    check = _module("check")
    boom = [sys.executable, "-c", "raise SystemExit('ValueError: no such model')"]
    with open(tmp_path / "log", "w") as log:
        rec = check.run_step(check.Step("boom", boom, 0.1, 30), tmp_path, log, time.monotonic() + 30)
    assert rec["status"] == "error" and "no such model" in rec["error"]


def test_slimwheel_drops_folders_and_their_record_lines(tmp_path):
    whl = tmp_path / "pkg-1.0-py3-none-any.whl"
    files = {"pkg/__init__.py": "x = 1\n", "pkg/jars/big.jar": "j" * 1000, "pkg/keep/a.py": "",
             "pkg-1.0.dist-info/RECORD": "pkg/__init__.py,,\npkg/jars/big.jar,,\npkg/keep/a.py,,\n"}
    with zipfile.ZipFile(whl, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    _module("slimwheel").slim(whl, ("pkg/jars/",))
    with zipfile.ZipFile(whl) as z:
        assert sorted(z.namelist()) == ["pkg-1.0.dist-info/RECORD", "pkg/__init__.py", "pkg/keep/a.py"]
        assert "jars" not in z.read("pkg-1.0.dist-info/RECORD").decode()
