"""A study's predictor on disk: where its profile lives, loading it for the study, and the basis it gives measurements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitsearch.evaluators.latency.fingerprint import device_fingerprint
from vitsearch.evaluators.latency.predict.base import FORMAT_VERSION, PREDICTOR_FILE, LatencyPredictor
from vitsearch.evaluators.latency.timing.prepare import default_threads


def default_profile_dir(spec: Any) -> Path:
    """Where ``vitsearch profile`` writes for a study: ``profiles/<study name>`` (relative to cwd).

    ``profiles/<study name>-<runtime>`` for a runtime other than eager, so one study's
    profiles in two runtimes sit side by side. The predictor inside is tied to the
    study's batch and input size; ``load_for_study`` refuses one fitted for another shape.
    """
    runtime = spec.latency.runtime
    # by name, not by Runtime.identity_fields: this layer must not import the runtimes (they time through it);
    # eager profiles keep the path they had before runtimes existed
    return Path("profiles") / (str(spec.name) if runtime == "eager" else f"{spec.name}-{runtime}")


def load_for_study(spec: Any, input_shape: tuple[int, ...], path: str | Path | None = None,
                   base_precision: str = "fp32") -> LatencyPredictor:
    """The study's fitted predictor (``default_profile_dir`` unless ``path``), checked against the shape and
    the precision of the uncompressed model its ratios are against (``model.precision``, resolved)."""
    pred = LatencyPredictor.load(path or default_profile_dir(spec))
    pred.check_input_shape(tuple(input_shape))
    pred.check_base_precision(base_precision)
    return pred


def profile_basis(spec: Any, device: Any, threads: int | None, fingerprint_of: Any = None,
                  base_precision: str = "fp32") -> dict:
    """``{"reference_ms", "sitting_sd"}`` of the study's profile if one matches this device (else both None).

    Measured latencies use ``reference_ms`` (the uncompressed model's time in the profile)
    as their ms basis (ratio x this), so they compare with each other and with predictions
    whenever they were taken; without a matching profile they use the reference timed in
    the measurement itself. ``sitting_sd``: the ratio's sitting-to-sitting spread the
    profile measured on this machine, which their intervals include
    (:func:`..stats.widen`). ``fingerprint_of(device, threads)``: the fingerprint the
    profile must carry (default: the device's, i.e. eager). ``base_precision``: the
    precision of the uncompressed model the study's ratios are against (a profile taken
    against another is not this study's basis).
    """
    state = _matching_state(spec, device, threads, fingerprint_of, base_precision)
    if state is None:
        return {"reference_ms": None, "sitting_sd": None}
    sd = state.get("sitting_sd")
    return {"reference_ms": float(state["reference_ms"]), "sitting_sd": None if sd is None else float(sd)}


def _matching_state(spec: Any, device: Any, threads: int | None, fingerprint_of: Any,
                    base_precision: str = "fp32") -> dict | None:
    mode = spec.latency.predictor
    p = default_profile_dir(spec) if mode in ("auto", "off") else Path(mode)
    p = p / PREDICTOR_FILE if p.is_dir() else p
    try:
        state = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION or not state.get("reference_ms"):
        return None
    if list(state.get("input_shape") or []) != [spec.latency.batch_size, *(state.get("input_shape") or [0])[1:]]:
        return None
    if (state.get("base_precision") or "fp32") != base_precision:
        return None
    fp = (fingerprint_of or device_fingerprint)(device, (threads or default_threads())
                                                if str(device).startswith("cpu") else 1)
    if fp["fingerprint_id"] != (state.get("fingerprint") or {}).get("fingerprint_id"):
        return None
    return state
