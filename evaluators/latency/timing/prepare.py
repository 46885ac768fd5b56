"""What every latency protocol checks before timing: threads, input shape, device, the first forward.

Shared by the burst (:mod:`.burst`), the interleaved protocol (:mod:`.interleaved`) and
the round-robin (:mod:`.roundrobin`), so none imports another's internals.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vitsearch.spaces.errors import ConfigError, DeviceError

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


def resolve_threads(dev: torch.device, threads: Any) -> int | None:
    """The CPU thread count a measurement on ``dev`` runs with (default: :func:`default_threads`); None on a GPU."""
    if dev.type != "cpu":
        return None
    return default_threads() if threads is None else check_threads(threads)


#: Message parts of a device failure (CUDA and its libraries), by what they mean for the user.
_OUT_OF_MEMORY = ("out of memory",)
_NO_KERNEL = ("no kernel image", "not implemented for", "no available kernel", "not supported", "not compiled for",
              "cusparselt")
_DEVICE = ("cuda error", "cublas", "cudnn", "cuda driver", "device-side assert", "nccl")
#: Exceptions a first forward raises when the input does not fit the model.
SHAPE_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError)


def first_forward_error(exc: BaseException, shape: Any, device: Any) -> Exception:
    """What a failed first forward pass means, as one line naming the cause.

    Out of memory, a kernel the device lacks for this precision or shape, or another
    device (CUDA) failure is a :class:`DeviceError` saying so; an exception of
    :data:`SHAPE_ERRORS` that is none of these is a :class:`ConfigError` about the input
    shape; anything else is returned as it is (a bug, not a user error).
    """
    text = str(exc).strip()
    first = text.splitlines()[0][:200] if text else type(exc).__name__
    low = f"{type(exc).__name__}: {text}".lower()
    oom = getattr(torch, "OutOfMemoryError", None)
    if (oom is not None and isinstance(exc, oom)) or any(k in low for k in _OUT_OF_MEMORY):
        return DeviceError(f"device: {device} ran out of memory in the model's first forward on inputs of shape "
                           f"{shape} ({first}); lower the batch size or free the device")
    if isinstance(exc, NotImplementedError) or any(k in low for k in _NO_KERNEL):
        return DeviceError(f"device: {device} has no kernel for this model's precision or shape (first forward on "
                           f"inputs of shape {shape}: {first}); leave that precision / sparsity out for this device")
    if any(k in low for k in _DEVICE):
        return DeviceError(f"device: {device} failed in the model's first forward on inputs of shape {shape} "
                           f"({first}); check the device with `vitsearch doctor --device {device}`")
    if isinstance(exc, SHAPE_ERRORS):
        return ConfigError(f"input_shape: the model's first forward on inputs of shape {shape} failed ({first}); "
                           "give the (batch, channels, height, width) the model was built for")
    return exc
