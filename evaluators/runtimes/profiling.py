"""Profiling in a runtime: the program a search would deploy, for each config a profile times.

Built the way :class:`vitsearch.evaluators.pipeline.Pipeline` builds a candidate: the
runtime's structure prepared (:meth:`Runtime.structure`), then the runtime's ``deploy``
(finalize in eager, ONNX export + ORT's own quantisation per part, ``torch.compile``), after
:func:`.support.check_config` refuses a knob the runtime cannot realise (the profile's
space, :func:`.support.runtime_search_space`, leaves those out already). Built
data-free: latency depends on shapes and formats, not on which heads or blocks the
calibration picks. The numerics check a search makes once per program is not made
here: it decides whether a candidate is correct, not how fast it runs.

The fingerprint names the runtime and its version (:func:`.deploy.runtime_fingerprint`),
so the predictor fitted on these timings refuses a study in another runtime, or in
another version of this one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vitsearch.evaluators.latency.profile.programs import Built, Programs

#: Programs kept for a second measurement (predictor-eval measures each config twice):
#: artifact bytes at most, so a large model's eval rebuilds instead of filling memory.
CACHE_BYTES = 1 << 30


class RuntimePrograms(Programs):
    """A runtime's programs for a profile (``eager``, ``onnxruntime``, ``compile``; ``tensorrt`` on GPUs)."""

    def __init__(self, name: str) -> None:
        from vitsearch.evaluators.runtimes.base import get_runtime

        self.name = name
        self.times_components = get_runtime(name).times_components
        self._keep = False
        self._cache: dict[str, Built] = {}
        self._bytes = 0

    def fingerprint(self, device: Any, threads: int) -> dict:
        """The device's fingerprint with the runtime's identity fields (none for eager)."""
        from vitsearch.evaluators.runtimes.deploy import runtime_fingerprint

        return runtime_fingerprint(device, threads, self.name)

    def space(self, space_spec: Any, base: Any, device: Any, base_precision: str = "fp32") -> Any:
        """The study's space less the choices this runtime cannot realise (as the search's space)."""
        from vitsearch.evaluators.runtimes.base import get_runtime
        from vitsearch.evaluators.runtimes.support import runtime_search_space
        from vitsearch.evaluators.sensitivity import study_sensitivity

        # data-free, as the profile builds its models (latency depends on which blocks, not on their weights)
        sensitivity = study_sensitivity(space_spec, base, get_runtime(self.name), device)
        return runtime_search_space(space_spec, base, self.name, device, base_precision=base_precision,
                                    sensitivity=sensitivity)[0]

    def identity(self, device: Any) -> dict[str, str]:
        """The runtime's name and its package's version (torch's for ``compile``)."""
        from vitsearch.evaluators.runtimes.base import check_runtime

        return {"runtime": self.name, "runtime_version": check_runtime(self.name, device).version()}

    def keep_built(self) -> None:
        """Keep programs held as an artifact (ORT, TensorRT) for a second measurement, up to :data:`CACHE_BYTES`."""
        self._keep = True

    def build(self, session: Any, config: Any, threads: int | None) -> Built:
        """Export / compile ``config`` for ``session``'s device and input shape (or the kept program)."""
        key = config.to_json(sort_keys=True)
        if key in self._cache:
            return dataclasses.replace(self._cache[key], reused=True)
        deployed = build_program(self.name, session.base, config, session.input_shape, session.device, threads)
        built = Built(deployed.as_module(), deployed.build_seconds, deployed.extra.get("export_seconds"))
        size = len(deployed.artifact or b"")
        # a torch.compile program is not kept: it would recompile after the next candidate's dynamo reset
        if self._keep and deployed.artifact is not None and self._bytes + size <= CACHE_BYTES:
            self._cache[key], self._bytes = built, self._bytes + size
        return built


def build_program(runtime: str, base: Any, config: Any, input_shape: tuple[int, ...], device: Any,
                  threads: int | None) -> Any:
    """``config`` built for ``runtime`` from ``base`` (data-free), as a search deploys it: a Deployed."""
    import torch

    from vitsearch.evaluators.runtimes.base import check_runtime
    from vitsearch.evaluators.runtimes.deploy import build_checked
    from vitsearch.spaces import prepare

    dev = torch.device(device)
    prepared = prepare(base, check_runtime(runtime, dev).structure(config), calibration=None, device=str(dev))
    return build_checked(runtime, prepared, config, input_shape, dev, threads, calibration=None)[0]
