"""Outputs of a CUDA-graph program (compile's reduce-overhead) survive the next replay.

A CUDA graph writes every replay's output into the same memory; the stand-in program here
does the same with one CPU buffer, which is what the runtime must protect against."""

from __future__ import annotations

import time

import torch
from torch._inductor import cudagraph_trees

from vitsearch.evaluators.runtimes.eager import graph_safe_call, torch_deployed
from vitsearch.evaluators.runtimes.base import get_runtime
from vitsearch.spaces import CompressionConfig


class ReplayLike:
    """Returns its one output buffer, overwritten by every call (as a CUDA graph replay does)."""

    def __init__(self, dtype=torch.float32):
        self.out = torch.empty(0, dtype=dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.out.shape != (x.shape[0], 3):
            self.out = torch.empty(x.shape[0], 3, dtype=self.out.dtype)
        self.out.copy_(x[:, :3] * 2)
        return self.out


def test_kept_outputs_are_not_overwritten_and_each_call_marks_a_step():
    program = ReplayLike()
    before = cudagraph_trees.MarkStepBox.mark_step_counter
    first = graph_safe_call(program, torch.ones(2, 4))
    second = graph_safe_call(program, torch.full((2, 4), 5.0))
    assert torch.equal(first, torch.full((2, 3), 2.0)) and torch.equal(second, torch.full((2, 3), 10.0))
    assert cudagraph_trees.MarkStepBox.mark_step_counter == before - 2
    half = graph_safe_call(ReplayLike(torch.bfloat16), torch.ones(1, 4))
    assert half.dtype == torch.float32


def test_chunked_calls_of_a_static_graph_program_concatenate_distinct_outputs():
    x = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 4)
    deployed = torch_deployed(get_runtime("compile"), ReplayLike(), torch.nn.Identity(), CompressionConfig(), x[:2],
                              time.perf_counter(), static=True, cuda_graphs=True)
    assert deployed.batch == 2
    assert torch.equal(deployed(x), x[:, :3] * 2)  # chunks of 2, 2, 1 (padded): each kept, none overwritten
