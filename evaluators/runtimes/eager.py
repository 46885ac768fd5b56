"""The eager runtime: the finalized PyTorch model as is (torchao for int8, torch casts for halves)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from vitsearch.evaluators.fakequant import FakeQuantScheme, scheme_for
from vitsearch.evaluators.runtimes.base import Deployed, Runtime, register
from vitsearch.evaluators.runtimes.support import PRECISION, describe_precision, precision_refusal


def finalized(prepared: nn.Module, config: Any, device: torch.device | str) -> nn.Module:
    """``vitsearch.spaces.finalize`` of ``prepared`` on ``device`` (a copy; eval mode)."""
    from vitsearch.spaces import finalize

    return finalize(prepared, config, device=str(device)).eval()


def eager_realises(config: Any, device: torch.device | str) -> bool:
    """Whether eager PyTorch realises every precision (every per-block entry) of ``config`` on ``device``.

    int4 on CPU does not.
    """
    return all(precision_refusal("eager", str(device), value) is None for _, value in config.precision.named_values())


def realised_precision(config: Any, table: dict[str, str]) -> dict[str, str]:
    """``{"precision.attn": how, ...}`` for the parts (and the base) that are not fp32 (per block where a list)."""
    return describe_precision(config, lambda v: None if v == "fp32" else table[v])


def graph_safe_call(program: Any, x: torch.Tensor) -> torch.Tensor:
    """fp32 logits of a CUDA-graph program (compile's reduce-overhead) that the caller may keep.

    Each replay writes its output into the same graph-owned memory: a new step is marked
    before the call (so the graphs replay instead of re-recording while an old output
    lives) and the output is copied out (one copy: the fp32 cast where it casts, else a clone).
    """
    torch.compiler.cudagraph_mark_step_begin()
    out = program(x)
    return out.clone() if out.dtype == torch.float32 else out.float()


def torch_deployed(runtime: Runtime, program: Any, model: nn.Module, config: Any, example: torch.Tensor,
                   start: float, static: bool, provider: str | None = None, cuda_graphs: bool = False) -> Deployed:
    """A :class:`Deployed` around a torch callable (the eager model or a compiled program of it).

    ``cuda_graphs``: the program replays CUDA graphs; its outputs go through :func:`graph_safe_call`.
    """
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return graph_safe_call(program, x) if cuda_graphs else program(x).float()

    table = PRECISION[(runtime.name, example.device.type)]
    return Deployed(runtime.name, runtime.version(), run, str(example.device),
                    int(example.shape[0]) if static else None, time.perf_counter() - start,
                    realised_precision(config, table), provider=provider, module=model,
                    direct=program is model and not cuda_graphs)


@register
class EagerRuntime(Runtime):
    """PyTorch eager: what vitsearch measured before runtimes existed."""

    name = "eager"
    times_components = True
    is_reference = True

    def structure(self, config: Any) -> Any:
        """The config itself: eager realises every knob in torch (precision at finalize)."""
        return config

    def fake_quant_scheme(self, config: Any, batch: int) -> FakeQuantScheme | None:
        """torchao's scheme (``finalize`` quantises with torchao); per token, so the batch does not matter."""
        return scheme_for("torchao", config)

    def identity_fields(self) -> dict[str, str]:
        """None added: an eager fingerprint is the device's own (profiles keep the ids they always had)."""
        return {}

    def deploy(self, prepared: nn.Module, config: Any, example: torch.Tensor, threads: int | None) -> Deployed:
        """The finalized model, called under ``torch.inference_mode``."""
        start = time.perf_counter()
        model = finalized(prepared, config, example.device)
        return torch_deployed(self, model, model, config, example, start, static=False)
