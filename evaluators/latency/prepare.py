"""What every latency protocol does before timing: threads, input shape, device, warm-up.

Shared by the single burst (:mod:`.measure`) and the interleaved protocol
(:mod:`.interleaved`), so neither imports the other's internals.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vitsearch.spaces.errors import ConfigError

from vitsearch.evaluators.latency.fingerprint import read_cpuinfo


def default_threads() -> int:
    """Physical cores, capped by the CPUs this process may run on (the CPU default)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    physical = read_cpuinfo().get("physical_cores") or available
    return max(1, min(physical, available))


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Validate an input shape ``(batch, channels, height, width)``; ConfigError if not."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 4 or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise ConfigError(
            f"input_shape: {input_shape!r} is not 4 integers; give (batch, channels, height, width), e.g. (1, 3, 224, 224)"
        )
    if shape[0] <= 0:
        raise ConfigError(f"batch size: {shape[0]} is not allowed; the batch size must be >= 1")
    if any(s <= 0 for s in shape[1:]):
        raise ConfigError(f"input_shape: {shape} has a non-positive size; channels, height and width must be >= 1")
    return shape


def check_threads(threads: Any) -> int:
    """A positive thread count, or a ConfigError naming it."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
        raise ConfigError(f"threads: {threads!r} is not a positive integer; give the number of CPU threads, e.g. 2")
    return threads


def on_device(model: nn.Module, dev: torch.device) -> nn.Module:
    """The model itself if it already lives on ``dev``, else a copy moved there."""
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    if first is None or _same_device(first.device, dev):
        return model
    return copy.deepcopy(model).to(dev)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.type == "cpu" or (a.index or 0) == (b.index or 0))


def warm_up(run_once: Callable[[], Any], n: int, shape: Any) -> None:
    """Warm-up passes; the first one turns a model/input mismatch into one clear line."""
    try:
        run_once()
    except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"input_shape: the model's first forward on inputs of shape {shape} failed ({first}); "
            "give the (batch, channels, height, width) the model was built for"
        ) from None
    for _ in range(n - 1):
        run_once()
