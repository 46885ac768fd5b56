"""Evaluating a candidate in the study's runtime (``latency.runtime`` other than eager).

The same staged order as :meth:`Session.evaluate_staged` (cheapest first: structure,
size, latency, the cost budgets, then recovery and accuracy), with the runtime in it:

* the candidate is prepared (structure, masks) in torch; the runtime builds the deployed
  program from it (export + ORT quantisation, or torch.compile); build time is recorded
  in the latency entry (``build_seconds``) and as phase ``build``, never as latency;
* every program built is checked once against the candidate's eager float outputs on
  the calibration images (a mismatch fails the trial with the figures);
* latency is measured on the program (or predicted by a predictor fitted for this
  runtime: the fingerprint names the runtime, so another runtime's predictor refuses);
* accuracy is measured in the runtime where it changes numerics (quantisation), else
  on the eager model (identical within the checked tolerance, and much cheaper).
"""

from __future__ import annotations

import contextlib
from typing import Any


def evaluate_in_runtime(session, config, steps: int, feasibility=None, predictor=None, phase=None):
    """(metrics, infeasible reason or None), like ``Session.evaluate_staged``, in ``session``'s runtime.

    ``phase(phases, name)``: the session's context manager timing one phase into ``phases``.
    """
    from vitsearch.evaluators import analytic_macs, model_size
    from vitsearch.evaluators.latency.lock import device_busy
    from vitsearch.evaluators.runtimes import get_runtime
    from vitsearch.evaluators.runtimes.onnxexport import prepare_structure
    from vitsearch.evaluators.runtimes.support import check_config

    name = session.spec.latency.runtime
    check_config(name, str(session.device), config)
    runtime = get_runtime(name)
    phases: dict[str, float] = {}
    timed = lambda name: phase(phases, name)  # noqa: E731
    with timed("compress"), device_busy(session.device):
        prepared = prepare_structure(session.base, config, session.data.calibration, str(session.device))
        sized = _eager_or_float(prepared, config, session.device)
    size = model_size(sized)
    built = None if predictor is not None else _build(session, prepared, config, timed)
    with timed("latency"):
        if built is None:
            latency, fingerprint = session._latency(None, config, predictor)
        else:
            latency, fingerprint = measure_deployed(session, *built)
    metrics = {"config": config.to_dict(), "accuracy": None, "top5": None, "accuracy_source": "not evaluated",
               "size_mb": size.size_mb, "size_mb_sparse_storage": size.size_mb_sparse_storage,
               "macs": analytic_macs(session.base, config), "latency": latency, "fingerprint": fingerprint,
               "recovery_steps": 0, "phase_seconds": phases}
    reason = feasibility.cost_violation(metrics) if feasibility is not None else None
    if reason is not None:
        return metrics, reason
    if steps > 0:
        prepared = _recovered(session, config, steps, timed)
        built = None  # new weights: a program built before recovery is stale
    with timed("accuracy"):
        acc = _accuracy(session, runtime, prepared, config, built, timed)
    metrics.update(accuracy=acc.top1, top5=acc.top5, accuracy_source=acc.source, recovery_steps=steps)
    return metrics, feasibility.accuracy_violation(metrics) if feasibility is not None else None


def score_prepared(session, prepared, config, timed=None, built=None):
    """Val accuracy of ``prepared`` (the float structure of ``config``) as the search scores it in the study's runtime.

    In the runtime where it changes numerics (``built``: (program, numerics) of these
    weights, else built here), else on the eager model; used by promotions and by pick,
    so every rung of a candidate and its export are scored alike. ``timed(name)``: a
    phase timer (None: untimed).
    """
    from vitsearch.evaluators.runtimes import get_runtime

    timed = timed or _untimed
    with timed("accuracy"):
        return _accuracy(session, get_runtime(session.spec.latency.runtime), prepared, config, built, timed)


def _eager_or_float(prepared, config, device):
    """The eager model for size: finalized where eager can realise the precision, else the float model."""
    from vitsearch.evaluators.runtimes.eager import finalized
    from vitsearch.evaluators.runtimes.support import precision_refusal

    ok = all(precision_refusal("eager", device, getattr(config.precision, p)) is None for p in ("attn", "mlp"))
    return finalized(prepared, config, device) if ok else prepared


def _untimed(name):
    return contextlib.nullcontext()


def build_for_study(session, prepared, config):
    """(program, numerics) of ``prepared`` in the study's runtime, checked against eager once; untimed."""
    return _build(session, prepared, config, _untimed)


def _build(session, prepared, config, timed):
    from vitsearch.evaluators.latency.lock import device_busy
    from vitsearch.evaluators.latency.timing.prepare import default_threads
    from vitsearch.evaluators.runtimes.deploy import build_checked

    lat = session.spec.latency
    threads = (lat.threads or default_threads()) if session.device.type == "cpu" else None
    with timed("build"), device_busy(session.device):
        return build_checked(lat.runtime, prepared, config, session.input_shape, session.device, threads,
                             session.data.calibration)


def measure_deployed(session, deployed, numerics):
    """(latency entry, fingerprint) of a built program, by the study's measurement protocol."""
    from vitsearch.evaluators import latency_entry
    from vitsearch.evaluators.runtimes.deploy import latency_fields, measure

    lat = session.spec.latency
    # the study's measurement protocol where the session offers one (the interleaved one), else a burst
    kw = session.latency_kwargs() if hasattr(session, "latency_kwargs") else dict(
        threads=lat.threads, warmup=lat.warmup, max_runs=lat.max_runs, max_seconds=lat.max_seconds)
    result = measure(deployed, session.input_shape, session.device, **kw)
    return {**latency_entry(result), **latency_fields(deployed, numerics)}, result.fingerprint


def _recovered(session, config, steps, timed):
    from vitsearch.evaluators.distill import distilled
    from vitsearch.evaluators.latency.lock import device_busy
    from vitsearch.evaluators.runtimes.onnxexport import float_config

    with timed("recovery"), device_busy(session.device):
        return distilled(session.base, float_config(config, keep_half=True), session.data.train, steps=steps,
                         calibration=session.data.calibration, **session.distill_kwargs())


def _accuracy(session, runtime, prepared, config, built, timed) -> Any:
    from vitsearch.evaluators import evaluate_accuracy
    from vitsearch.evaluators.latency.lock import device_busy
    from vitsearch.evaluators.runtimes.eager import finalized
    from vitsearch.evaluators.runtimes.numerics import accuracy_in_runtime

    source = f"val split of {session.data.name}"
    batch = session.spec.data.eval_batch_size
    if runtime.changes_numerics(config):
        deployed = (built or _build(session, prepared, config, timed))[0]
        with device_busy(session.device):
            return accuracy_in_runtime(deployed, session.data.val, batch, source)
    with device_busy(session.device):
        model = finalized(prepared, config, session.device)
        return evaluate_accuracy(model, session.data.val, session.device, batch, source=source)


def check_study_runtime(spec, device) -> list[str]:
    """Validate ``latency.runtime`` for ``device`` before anything loads or is written.

    One line, exit 2, for a runtime whose package is missing (with the install hint),
    ``tensorrt`` without CUDA, or a precision the study's space names explicitly that the
    runtime cannot realise. Returns the notes on default choices left out of the space.
    """
    from vitsearch.evaluators.runtimes import check_runtime
    from vitsearch.evaluators.runtimes.support import runtime_space

    name = spec.latency.runtime
    check_runtime(name, device)
    return runtime_space(spec.space, name, str(device))[1]


def runtime_search_space(spec, base, device):
    """The study's SearchSpace in its runtime: refused default choices left out, with notes saying so."""
    from vitsearch.evaluators.runtimes.support import runtime_search_space as in_runtime

    return in_runtime(spec.space, base, spec.latency.runtime, device)
