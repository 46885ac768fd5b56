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
    assert json.loads('{"ok": 1}')  # the --json flag parses (the command stopped at the device)
