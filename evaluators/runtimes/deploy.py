"""A candidate through a runtime: build it, check it against eager, time it, fingerprint it.

The fingerprint of a measurement carries the runtime's :meth:`~.base.Runtime.identity_fields`
(name and version; none for eager, whose ids are the device's own), so a predictor
fitted in one runtime refuses a study in another.

Timing goes through :func:`vitsearch.evaluators.latency.measure.measure_latency` on
:meth:`Deployed.as_module`: the runtime is just a callable there, so any protocol that
times callables (the interleaved one included) can take it unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from vitsearch.evaluators.runtimes.base import Deployed, check_runtime, get_runtime
from vitsearch.evaluators.runtimes.numerics import calibration_images, check_numerics, reference_model
from vitsearch.evaluators.runtimes.support import check_config


def with_runtime(fp: dict[str, Any], runtime: str) -> dict[str, Any]:
    """``fp`` with ``runtime``'s identity fields (a new ``fingerprint_id`` where it adds any)."""
    from vitsearch.evaluators.latency.fingerprint import fingerprint_id

    fields = get_runtime(runtime).identity_fields()
    if not fields:
        return fp
    out = {**fp, **fields}
    out["fingerprint_id"] = fingerprint_id(out)
    return out


def runtime_fingerprint(device: Any, threads: int | None, runtime: str) -> dict[str, Any]:
    """This machine's fingerprint for measurements in ``runtime`` (what a predictor must match)."""
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint, resolve_device

    dev = resolve_device(device)
    check_runtime(runtime, dev)
    return with_runtime(device_fingerprint(dev, threads), runtime)


def build_checked(runtime: str, prepared: torch.nn.Module, config: Any, input_shape: tuple[int, ...],
                  device: torch.device, threads: int | None, calibration: Any) -> tuple[Deployed, dict[str, Any] | None]:
    """Deploy ``prepared`` in ``runtime`` and check it once against eager; (Deployed, numerics figures or None).

    ``calibration``: the images the check runs (None: no check, for timing-only builds
    such as a profile's). Raises ConfigError for a knob the runtime cannot realise,
    DeviceError when the build fails, NumericsMismatch when the outputs differ beyond
    the tolerance. A runtime that is the reference itself (eager) is not checked: None.
    """
    rt = check_runtime(runtime, device)
    check_config(runtime, device, config)
    example = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    deployed = rt.deploy(prepared, config, example, threads)
    if calibration is None or rt.is_reference:
        return deployed, None
    reference = reference_model(prepared, config, device)
    return deployed, check_numerics(deployed, reference, calibration_images(calibration), config)


def measure(deployed: Deployed, input_shape: tuple[int, ...], device: Any, **kw: Any):
    """``measure_latency`` of the deployed callable; the result's fingerprint names the runtime."""
    from vitsearch.evaluators.latency.measure import measure_latency

    result = measure_latency(deployed.as_module(), input_shape, device, **kw)
    return dataclasses.replace(result, fingerprint=with_runtime(result.fingerprint, deployed.runtime))


def latency_fields(deployed: Deployed, numerics: dict[str, Any] | None) -> dict[str, Any]:
    """What a latency entry records about the runtime (build time apart from latency, numerics check)."""
    out = {"runtime": deployed.runtime, "runtime_version": deployed.version, "provider": deployed.provider,
           "build_seconds": round(deployed.build_seconds, 3), "realised": dict(deployed.realised)}
    if numerics is not None:
        out["numerics"] = numerics
    return out
