"""A candidate through a runtime: build it, check it against eager, time it, fingerprint it.

The fingerprint of a non-eager measurement carries ``runtime`` and ``runtime_version``
as identity fields, so its id differs from the eager id of the same machine: a
predictor fitted on eager timings refuses an ONNX Runtime study, and the other way
round. Eager fingerprints are left exactly as they were (no runtime field), so
existing profiles keep their ids.

Timing goes through :func:`vitsearch.evaluators.latency.measure.measure_latency` on
:meth:`Deployed.as_module`: the runtime is just a callable there, so any protocol that
times callables (the interleaved one included) can take it unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from vitsearch.evaluators.runtimes.base import Deployed, check_runtime
from vitsearch.evaluators.runtimes.numerics import calibration_images, check_numerics, reference_model
from vitsearch.evaluators.runtimes.support import check_config


def with_runtime(fp: dict[str, Any], runtime: str, version: str) -> dict[str, Any]:
    """``fp`` with the runtime as identity (new ``fingerprint_id``); eager leaves it unchanged."""
    from vitsearch.evaluators.latency.fingerprint import fingerprint_id

    if runtime == "eager":
        return fp
    out = dict(fp, runtime=runtime, runtime_version=version)
    out["fingerprint_id"] = fingerprint_id(out)
    return out


def runtime_fingerprint(device: Any, threads: int | None, runtime: str) -> dict[str, Any]:
    """This machine's fingerprint for measurements in ``runtime`` (what a predictor must match)."""
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint, resolve_device

    dev = resolve_device(device)
    rt = check_runtime(runtime, dev)
    return with_runtime(device_fingerprint(dev, threads), runtime, rt.version())


def build_checked(runtime: str, prepared: torch.nn.Module, config: Any, input_shape: tuple[int, ...],
                  device: torch.device, threads: int | None, calibration: Any) -> tuple[Deployed, dict[str, Any]]:
    """Deploy ``prepared`` in ``runtime`` and check it once against eager; (Deployed, numerics figures).

    Raises ConfigError for a knob the runtime cannot realise, DeviceError when the
    build fails, NumericsMismatch when the outputs differ beyond the tolerance.
    """
    rt = check_runtime(runtime, device)
    check_config(runtime, device, config)
    example = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    deployed = rt.deploy(prepared, config, example, threads)
    reference = reference_model(prepared, config, device)
    numerics = check_numerics(deployed, reference, calibration_images(calibration), config)
    return deployed, numerics


def measure(deployed: Deployed, input_shape: tuple[int, ...], device: Any, **kw: Any):
    """``measure_latency`` of the deployed callable; the result's fingerprint names the runtime."""
    from vitsearch.evaluators.latency.measure import measure_latency

    result = measure_latency(deployed.as_module(), input_shape, device, **kw)
    return dataclasses.replace(result, fingerprint=with_runtime(result.fingerprint, deployed.runtime,
                                                                deployed.version))


def latency_fields(deployed: Deployed, numerics: dict[str, Any] | None) -> dict[str, Any]:
    """What a latency entry records about the runtime (build time apart from latency, numerics check)."""
    out = {"runtime": deployed.runtime, "runtime_version": deployed.version, "provider": deployed.provider,
           "build_seconds": round(deployed.build_seconds, 3), "realised": dict(deployed.realised)}
    if numerics is not None:
        out["numerics"] = numerics
    return out
