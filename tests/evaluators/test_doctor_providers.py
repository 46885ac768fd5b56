"""doctor on a GPU whose onnxruntime is a CPU-only build: "not available on this device", not "fail".

The development machine's onnxruntime is such a build, so asking for the CUDA device's ONNX
Runtime checks here is the GPU machine's situation (no CUDA needed to reach them)."""

from __future__ import annotations

import pytest
import torch

from vitsearch.evaluators.doctor import exit_code
from vitsearch.evaluators.doctor_checks import UNAVAILABLE, _ort_missing_provider, kernel_checks, runtime_checks

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                                reason="this onnxruntime has a CUDA provider")
CUDA = torch.device("cuda")


def test_ort_without_cuda_provider_is_not_available_with_the_reason():
    why = _ort_missing_provider(CUDA)
    assert "no CUDA execution provider" in why and "onnxruntime-gpu" in why
    assert _ort_missing_provider(torch.device("cpu")) is None


def test_kernel_and_runtime_rows_say_not_available_and_do_not_fail_the_exit_code():
    ort_kernels = [c for c in kernel_checks(CUDA) if "ONNX Runtime" in c.name]
    assert [c.status for c in ort_kernels] == [UNAVAILABLE, UNAVAILABLE]
    # int8: refused on CUDA by the support table anyway; int4: the device could, this build cannot
    assert "no CUDA execution provider" in ort_kernels[1].detail
    (row,) = [c for c in runtime_checks(CUDA, quick=True) if c.name == "onnxruntime"]
    assert row.status == UNAVAILABLE and "CUDA execution provider" in row.detail
    assert exit_code(ort_kernels + [row]) == 0
