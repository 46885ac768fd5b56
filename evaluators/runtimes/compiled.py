"""The ``compile`` runtime: ``torch.compile`` (inductor) of the finalized model, static shapes.

One program per candidate, compiled for the example's shape (``dynamic=False``), on CUDA
with CUDA graphs (``mode="reduce-overhead"``: every call marks a new step and copies its
output out of the graph's memory, :func:`.eager.graph_safe_call`). Compilation happens in the first call,
which :meth:`CompileRuntime.deploy` makes, so ``build_seconds`` holds the compile time
and no timed pass pays it. Dynamo's caches are reset before each candidate: every
candidate shares ``VisionTransformer.forward``'s code object, and after
``cache_size_limit`` recompilations of it dynamo would silently fall back to eager.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
from torch import nn

from vitsearch.evaluators.fakequant import FakeQuantScheme, scheme_for
from vitsearch.evaluators.latency.timing.context import torch_threads
from vitsearch.evaluators.runtimes.base import Deployed, Runtime, register
from vitsearch.evaluators.runtimes.eager import finalized, graph_safe_call, torch_deployed
from vitsearch.spaces.errors import DeviceError


@register
class CompileRuntime(Runtime):
    """torch.compile with the inductor backend."""

    name = "compile"
    #: reset dynamo before each candidate (a search holds one compiled candidate at a time); a caller
    #: that keeps several compiled programs alive (benchmarks/runtimes.py) turns it off and raises
    #: ``torch._dynamo.config.recompile_limit`` instead
    reset_caches: ClassVar[bool] = True

    def fake_quant_scheme(self, config: Any, batch: int) -> FakeQuantScheme | None:
        """torchao's scheme, as eager: the compiled program is of the finalized (torchao-quantised) model."""
        return scheme_for("torchao", config)

    def deploy(self, prepared: nn.Module, config: Any, example: torch.Tensor, threads: int | None) -> Deployed:
        """Finalize, compile for ``example``'s shape, and run once (the compile)."""
        start = time.perf_counter()
        model = finalized(prepared, config, example.device)
        if self.reset_caches:
            torch._dynamo.reset()  # see the module docstring
        mode = "reduce-overhead" if example.device.type == "cuda" else None
        program = torch.compile(model, backend="inductor", dynamic=False, mode=mode)
        try:
            with torch_threads(threads), torch.inference_mode():
                if mode is None:
                    program(example)
                else:
                    graph_safe_call(program, example)
        except Exception as exc:  # inductor's failures vary by op and version: say which and stop
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise DeviceError(f"latency.runtime: torch.compile failed for {config.summary()} "
                              f"({type(exc).__name__}: {first}); use runtime eager for it") from None
        return torch_deployed(self, program, model, config, example, start, static=True,
                              provider=f"inductor{'' if mode is None else ', ' + mode}", cuda_graphs=mode is not None)
