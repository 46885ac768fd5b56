"""What a profile times for one config, per runtime: the :class:`Programs` contract.

A profile (:mod:`.run`) asks its ``Programs`` for five things: the fingerprint its
rows carry (the runtime is part of it, so another runtime's predictor is refused), the
search space it samples (what the runtime realises), the runtime's name and version for
the profile's meta, whether timings of torch components predict the runtime
(:attr:`Programs.times_components`), and the program of each config. Every runtime,
eager included, implements the contract in :mod:`vitsearch.evaluators.runtimes.profiling`
(the program a search would deploy, built data-free: shapes only); the study's session
says which (``Session.profile_programs()``). Whatever the runtime, the program is timed
interleaved with the uncompressed eager model, as a search measures it.

Build time (export, quantisation, compile) is recorded per model apart from latency,
and the profile's time budget counts it (:func:`stop_before`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any



@dataclass
class Built:
    """One timed program: the module to time, its build seconds (None for eager), export seconds, whether kept."""

    module: Any
    build_seconds: float | None = None
    export_seconds: float | None = None
    reused: bool = False  # built for an earlier measurement and kept (no build paid now)


class Programs(ABC):
    """How a profile fingerprints, samples and builds in one runtime. Side-effect free apart from caches."""

    name: str = "eager"
    #: whether the profile times torch components (phase 1) and fits the component predictor
    times_components: bool = True

    @abstractmethod
    def fingerprint(self, device: Any, threads: int) -> dict:
        """The fingerprint the profile's rows and predictor carry."""

    @abstractmethod
    def space(self, space_spec: Any, base: Any, device: Any, base_precision: str = "fp32") -> Any:
        """The SearchSpace the profile samples (the knobs this runtime realises, relative to ``base_precision``)."""

    @abstractmethod
    def identity(self, device: Any) -> dict[str, str]:
        """``{"runtime", "runtime_version"}``."""

    @abstractmethod
    def build(self, session: Any, config: Any, threads: int | None) -> Built:
        """The program of ``config`` for ``session``'s base model, device and input shape."""

    def keep_built(self) -> None:
        """Keep built programs for a second measurement where the runtime can (predictor-eval)."""


def stop_before(deadline: float, spent: list[float]) -> bool:
    """Whether another model would overrun ``deadline``: the mean wall time of one so far (build included) is left."""
    per = sum(spent) / len(spent) if spent else 0.0
    return time.monotonic() + per >= deadline


def run_stats(ctx: Any) -> dict:
    """The runtime, and the build seconds apart from the timing seconds of the models measured in this run."""
    import numpy as np

    st, meta = ctx.stats, ctx.meta_runtime()
    build = st["build_s"]
    return {"runtime": meta["runtime"], "runtime_version": meta["runtime_version"], "models_built": len(build),
            "build_seconds_total": round(float(sum(build)), 2) if build else None,
            "build_seconds_median": round(float(np.median(build)), 2) if build else None,
            "model_seconds_total": round(float(sum(st["model_s"])), 2), "build_failed": list(st["failed"])}
