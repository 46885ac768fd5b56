"""`vitsearch doctor` logic on CPU: real kernels and runtimes, and the outcome rules."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import vitsearch

from vitsearch.evaluators.doctor import exit_code, render
from vitsearch.evaluators.doctor_checks import (FAIL, MISSING, PASS, UNAVAILABLE, Check, kernel_checks,
                                                run_check, runtime_checks)

CPU = torch.device("cpu")


def _boom():
    raise RuntimeError("kernel refused")


def _missing():
    raise ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt")


def test_outcomes_separate_broken_from_not_available_and_not_installed():
    assert run_check("k", "a", lambda: "ok").status == PASS
    broken = run_check("k", "b", _boom, expected=True)
    absent = run_check("k", "c", _boom, expected=False)
    missing = run_check("k", "d", _missing)
    assert (broken.status, absent.status, missing.status) == (FAIL, UNAVAILABLE, MISSING)
    assert "kernel refused" in broken.detail and "pip install tensorrt" in missing.detail
    assert exit_code([absent, missing, Check("k", "e", PASS, "")]) == 0
    assert exit_code([absent, broken]) == 1
    table = render({"device": "cpu", "cpu_model": "X", "kind": "cpu", "fingerprint_id": "f"}, [broken, absent])
    assert "1 fail, 1 not available on this device" in table and table.count("\n") == 5


def test_kernels_on_this_cpu_run_or_are_not_available_as_the_table_says():
    checks = {c.name: c for c in kernel_checks(CPU)}
    for name in ("fp16 (torch)", "bf16 (torch)", "int8 (torchao)", "int8-weight (torchao)",
                 "int8 (ONNX Runtime)", "int4-weight (ONNX Runtime)"):
        assert checks[name].status == PASS, checks[name]
    assert "MatMulInteger" in checks["int8 (ONNX Runtime)"].detail
    assert checks["2:4 semi-structured (torch.sparse)"].status == UNAVAILABLE  # torch.sparse refuses CPU tensors
    assert checks["int4-weight (torchao)"].status in (UNAVAILABLE, PASS)  # needs the mslk kernel package
    assert exit_code(list(checks.values())) == 0


def test_runtimes_are_built_and_timed_and_tensorrt_is_not_available_on_cpu():
    checks = {c.name: c for c in runtime_checks(CPU, quick=True)}
    assert checks["onnxruntime"].status == PASS and "CPUExecutionProvider" in checks["onnxruntime"].detail
    assert checks["eager"].status == PASS and checks["compile"].status == PASS  # quick: not compiled
    assert checks["tensorrt"].status == UNAVAILABLE and "CUDA GPUs only" in checks["tensorrt"].detail


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without a GPU")
def test_an_absent_device_is_one_line_and_exit_2():
    proc = vitsearch("doctor", "--device", "cuda", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not present" in proc.stderr


def test_versions_compare_installed_with_tested():
    from vitsearch.search import versions

    pins = versions.parse_constraints("# tested\nOptuna==5.1.0\nray[tune]==2.60.0  # bounded\n\ntorch==2.14.1\n")
    assert pins == {"optuna": "5.1.0", "ray": "2.60.0", "torch": "2.14.1"}
    installed = {"optuna": "5.1.0", "ray": "2.61.0", "torch": "2.14.1+cpu"}.get
    rows = {r.name: r.status for r in versions.compare(pins, ("optuna", "ray", "torch", "timm", "pandas"),
                                                        installed=lambda n: installed(n) or ("1.0" if n == "pandas" else None))}
    assert rows == {"optuna": versions.SAME, "ray": versions.DIFFERENT, "torch": versions.SAME,
                    "timm": versions.MISSING, "pandas": versions.UNPINNED}
    with pytest.raises(ValueError, match="not `name==version`"):
        versions.parse_constraints("optuna>=5\n")


def test_the_shipped_pins_cover_the_bounded_dependencies_and_match_pyproject_bounds():
    """Raising a bound is one commit: pyproject's upper bound and the shipped pin are the same version."""
    import re
    import tomllib
    from pathlib import Path

    from vitsearch.search import versions

    pins = versions.tested_versions()
    deps = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in versions.FAST_MOVING:
        spec = next(d for d in deps if versions.canonical(re.split(r"[\[<>=]", d)[0]) == name)
        assert f"<={pins[name]}" in spec, (name, spec, pins[name])
    rows = versions.compare(pins)
    assert [r.name for r in rows][:len(versions.FAST_MOVING)] == list(versions.FAST_MOVING)
    assert all(r.status != versions.MISSING for r in rows if r.name in versions.FAST_MOVING)


def test_doctor_json_lists_versions(monkeypatch, capsys):
    """The --json object carries the version table beside the checks (quick checks on this CPU)."""
    import argparse

    from vitsearch.search import versions
    from vitsearch.search.cli.doctor import cmd_doctor

    code = cmd_doctor(argparse.Namespace(device="cpu", quick=True, json=True))
    out = json.loads(capsys.readouterr().out)
    names = {r["name"]: r for r in out["versions"]}
    assert names["optuna"]["tested"] == versions.tested_versions()["optuna"] and names["optuna"]["installed"]
    assert out["exit_code"] == code
