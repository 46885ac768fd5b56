"""The one measurement context: device lock, thread count, eval mode, inference mode, garbage collector.

Every protocol (burst, interleaved, round-robin) runs its passes inside
:class:`Measurement`, so they all measure under the same conditions:

- the device's inter-process lock (:mod:`..lock`), so no two measurements on one device
  overlap (re-entrant within a thread: a caller already holding it passes through);
- the torch CPU thread count fixed for the measurement (on a CPU) and restored after
  (:func:`torch_threads`, which other spans that fix it use too);
- every given module, and each of its submodules, in eval mode, its own mode restored;
- ``torch.inference_mode`` around the passes;
- inside :meth:`Measurement.timed` Python's garbage collector off, the young generations
  collected first (:func:`gc_paused`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from vitsearch.evaluators.latency.lock import device_lock


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Keep Python's garbage collector off inside (as ``timeit`` does), young garbage collected first; restore it after.

    The garbage what ran before left (an ONNX export, a distillation) would otherwise be
    collected during timed passes, pausing a Python-heavy eager model and not a runtime's
    single native call: it would not cancel in a ratio of the two. Only the young
    generations are collected before: a full collection in a process holding a search
    costs a sizeable part of a whole measurement, while the collector being off is what
    keeps the timed passes clean. A caller that had the collector off keeps it off.
    """
    was_enabled = gc.isenabled()
    gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run inside with torch's CPU thread count at ``threads`` (None: as it is); the count before restored after.

    Restored on error too; torch is left untouched where the count already is ``threads``
    (setting it can rebuild the thread pool). The count is process-wide: a span that
    fixes it must not overlap another thread's work that relies on its own count.
    """
    saved = torch.get_num_threads()
    if threads is not None and threads != saved:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


class Measurement:
    """``with Measurement(device, threads, modules):`` the conditions of a measurement (module docstring).

    ``threads``: CPU threads for the passes, or None to leave torch's setting (always left
    on a GPU). ``lock``: hold the device lock (``lock_timeout`` seconds, None waits).
    """

    def __init__(self, device: torch.device, threads: int | None, modules: Iterable[Any] = (), *,
                 lock: bool = True, lock_timeout: float | None = None) -> None:
        self.device = device
        self.threads = threads if device.type == "cpu" else None
        self.modules = [m for m in modules if isinstance(m, nn.Module)]
        self.lock, self.lock_timeout = lock, lock_timeout
        self.saved_threads = torch.get_num_threads()
        self._stack: contextlib.ExitStack | None = None

    @property
    def threads_now(self) -> int:
        """The thread count the passes run with (the fingerprint records it)."""
        return self.threads if self.threads is not None else self.saved_threads

    def __enter__(self) -> "Measurement":
        stack = contextlib.ExitStack()
        try:
            if self.lock:
                stack.enter_context(device_lock(self.device, timeout=self.lock_timeout))
            self.saved_threads = torch.get_num_threads()
            stack.enter_context(torch_threads(self.threads))
            stack.enter_context(_eval_modes(self.modules))
            stack.enter_context(torch.inference_mode())
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    @staticmethod
    def timed() -> contextlib.AbstractContextManager:
        """The timed passes' own context: the garbage collector paused (:func:`gc_paused`)."""
        return gc_paused()


@contextlib.contextmanager
def _eval_modes(modules: list[nn.Module]) -> Iterator[None]:
    modes = {sub: sub.training for m in modules for sub in m.modules()}
    try:
        for sub in modes:
            sub.training = False
        yield
    finally:
        for sub, mode in modes.items():
            sub.training = mode
