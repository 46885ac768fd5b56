"""A loaded study: validated spec, resolved device, base model and data, loaded once.

The CLI commands and the Ray workers of a search all evaluate candidates through a
:class:`Session`; a worker receives one (it pickles: model and tensors) and reuses it
for every trial it runs.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vitsearch.evaluators.data import DataSplits
from vitsearch.search.study import StudySpec, load_study
from vitsearch.spaces.errors import ConfigError


def read_config_arg(text: str):
    """A CompressionConfig from JSON text or from a path to a JSON file (a JSON object either way)."""
    from vitsearch.spaces import CompressionConfig

    source = text
    if not text.lstrip().startswith(("{", "[", '"')) and not _json_scalar(text):
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"--config: {text[:80]!r} is neither JSON text nor an existing JSON file; "
                              "e.g. '{\"depth\": {\"keep\": 6}}'")
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--config: {text!r} could not be read as UTF-8 text ({type(exc).__name__})") from None
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config: not valid JSON ({exc.msg} at char {exc.pos}); e.g. '{{\"depth\": {{\"keep\": 6}}}}'") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: must be a JSON object of knobs, got a JSON {_JSON_TYPES.get(type(data), 'value')} "
                          f"({json.dumps(data)[:60]}); e.g. '{{\"depth\": {{\"keep\": 6}}}}', or '{{}}' for none")
    return CompressionConfig.from_dict(data)


_JSON_TYPES = {list: "array", int: "number", float: "number", str: "string", bool: "boolean", type(None): "null"}


def _json_scalar(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


@dataclass
class Session:
    """Everything needed to evaluate candidates of one study on one device."""

    spec: StudySpec
    device: torch.device
    base: nn.Module
    data: DataSplits

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(batch, C, H, W) used for latency."""
        size = self.spec.latency.input_size or self.data.input_size
        return (self.spec.latency.batch_size, *size)

    def for_search(self) -> "Session":
        """This session without the test split: what the search's workers receive.

        The split that selects candidates must not report them; a worker that has no
        test split cannot select on it by accident.
        """
        from dataclasses import replace

        return replace(self, data=self.data.without_test())

    def evaluate_baseline(self):
        """The uncompressed base model's Evaluation."""
        from vitsearch.spaces import CompressionConfig

        return self.evaluate(CompressionConfig(), recovery_steps=0)

    def evaluate(self, config, recovery_steps: int | None = None):
        """Compress, (recover,) and measure one candidate; returns an Evaluation record."""
        from vitsearch.evaluators import Evaluation

        metrics, _ = self.evaluate_staged(config, recovery_steps)
        return Evaluation.from_dict(metrics)

    def cost_metrics(self, config, predictor=None) -> dict:
        """Compress, then size, MACs and latency (predicted with ``predictor``): the metrics with ``accuracy`` None."""
        return self._costs(config, predictor, {})[1]

    def _costs(self, config, predictor, phases: dict):
        from vitsearch.evaluators import analytic_macs, model_size
        from vitsearch.evaluators.latency.lock import device_busy
        from vitsearch.spaces import compress

        with _phase(phases, "compress"), device_busy(self.device):
            model = compress(self.base, config, calibration=self.data.calibration, device=str(self.device))
        size = model_size(model)
        with _phase(phases, "latency"):
            latency, fingerprint = self._latency(model, config, predictor)
        return model, {"config": config.to_dict(), "accuracy": None, "top5": None,
                       "accuracy_source": "not evaluated", "size_mb": size.size_mb,
                       "size_mb_sparse_storage": size.size_mb_sparse_storage,
                       "macs": analytic_macs(self.base, config), "latency": latency, "fingerprint": fingerprint,
                       "recovery_steps": 0, "phase_seconds": phases}

    def evaluate_staged(self, config, recovery_steps: int | None = None, feasibility=None, predictor=None,
                        reference=None, save_to: str | None = None):
        """Cheapest first: compress, size, latency; stop if a cost budget is exceeded; then accuracy.

        Returns (metrics, infeasible reason or None). ``metrics`` is an Evaluation dict, or,
        when stopped on cost, the same keys with ``accuracy`` None. ``predictor`` (a fitted
        LatencyPredictor) replaces the latency measurement. ``reference`` (the uncompressed
        model's costs, :class:`vitsearch.search.engine.gain.Reference`) stops a candidate
        that cannot improve on it. ``save_to``: write the distilled float weights there
        (the first rung's checkpoint, which a promotion continues from).
        """
        from vitsearch.evaluators.distill import distilled, save_prepared
        from vitsearch.evaluators.latency.lock import device_busy
        from vitsearch.spaces import finalize

        steps = self.spec.recovery.ladder[0] if recovery_steps is None else recovery_steps
        if config.is_identity():
            steps = 0  # the uncompressed model is the teacher: distilling it into itself is no recovery
        if self.spec.latency.runtime != "eager":  # built, checked and timed in the deployed runtime
            from vitsearch.search.runtime_eval import evaluate_in_runtime

            return evaluate_in_runtime(self, config, steps, feasibility, predictor, phase=_phase)
        phases: dict[str, float] = {}
        model, metrics = self._costs(config, predictor, phases)
        reason = feasibility.cost_violation(metrics) if feasibility is not None else None
        if reason is None and reference is not None:
            reason = self._no_gain(reference, metrics, phases)
        if reason is not None:
            return metrics, reason
        if steps == 0 and save_to is None:  # zero-shot: the compressed model is the one to score
            return self._scored(model, metrics, steps, phases, feasibility)
        with _phase(phases, "recovery"), device_busy(self.device):
            prepared = distilled(self.base, config, self.data.train, steps=steps, calibration=self.data.calibration,
                                 **self.distill_kwargs())
            if save_to is not None:
                save_prepared(prepared, save_to)
            model = finalize(prepared, config, device=str(self.device))
        return self._scored(model, metrics, steps, phases, feasibility)

    def distill_kwargs(self) -> dict:
        """The study's distillation settings (recovery.*) and device, as every distillation call takes them."""
        rc = self.spec.recovery
        return dict(device=self.device, lr=rc.lr, batch_size=rc.batch_size, temperature=rc.temperature,
                    alpha=rc.alpha, seed=rc.seed)

    def evaluate_promotion(self, config, first: dict, rung: int, load_from: str, save_to: str | None,
                           feasibility=None):
        """Rung ``rung`` of a promoted candidate: its weights at rung ``rung - 1`` distilled further, re-scored.

        ``first``: its first-rung metrics (latency, size and MACs do not change with
        distillation and are kept). ``load_from``: the previous rung's checkpoint; when it
        is missing (another machine's run dir) the previous rungs are replayed exactly.
        """
        from vitsearch.evaluators.distill import distil_further, distilled_chain, load_prepared, save_prepared
        from vitsearch.evaluators.latency.lock import device_busy
        from vitsearch.spaces import finalize

        ladder = self.spec.recovery.ladder
        kw = self.distill_kwargs()
        phases: dict[str, float] = {}
        eager = self.spec.latency.runtime == "eager"
        if not eager:  # as the first rung in a runtime: distil the float structure, the runtime quantises
            from vitsearch.evaluators.runtimes.onnxexport import float_config

            structure = float_config(config, keep_half=True)
        with _phase(phases, "recovery"), device_busy(self.device):
            built_from = config if eager else structure
            if Path(load_from).is_file():
                prepared = load_prepared(self.base, built_from, load_from, self.data.calibration, self.device)
            else:
                prepared = distilled_chain(self.base, built_from, self.data.train, rungs=ladder[:rung],
                                           calibration=self.data.calibration, **kw)
            distil_further(prepared, self.base, self.data.train, steps=ladder[rung] - ladder[rung - 1], rung=rung,
                           **kw)
            if save_to is not None:
                save_prepared(prepared, save_to)
            model = finalize(prepared, config, device=str(self.device)) if eager else None
        metrics = {**first, "phase_seconds": phases}
        if not eager:  # scored where it is deployed when the runtime changes numerics, as the first rung was
            from vitsearch.search.runtime_eval import score_prepared

            acc = score_prepared(self, prepared, config, lambda name: _phase(phases, name))
            metrics.update(accuracy=acc.top1, top5=acc.top5, accuracy_source=acc.source, recovery_steps=ladder[rung])
            return metrics, feasibility.accuracy_violation(metrics) if feasibility is not None else None
        return self._scored(model, metrics, ladder[rung], phases, feasibility)

    def _no_gain(self, reference, metrics: dict, phases: dict) -> str | None:
        """No gain over the uncompressed model? A measured verdict is confirmed against it timed now, here.

        On a shared machine the run-start timing of the reference can be far from now; a
        candidate is only settled when it is slower than the uncompressed model timed
        beside it (the extra timing is paid only by candidates that look slower).
        """
        from dataclasses import replace

        from vitsearch.spaces import CompressionConfig

        if reference.no_gain(metrics) is None or metrics["latency"].get("source") != "measured":
            return reference.no_gain(metrics)
        with _phase(phases, "reference latency"):
            now, _ = self._latency(self.base, CompressionConfig(), None)
        return replace(reference, latency_ms=now["median_ms"],
                       latency_source=f"timed just now beside it, {now['n_runs']} passes").no_gain(metrics)

    def _scored(self, model, metrics: dict, steps: int, phases: dict, feasibility):
        """Accuracy on val (never test) into ``metrics``; (metrics, accuracy-budget violation or None)."""
        from vitsearch.evaluators import evaluate_accuracy
        from vitsearch.evaluators.latency.lock import device_busy

        with _phase(phases, "accuracy"), device_busy(self.device):
            acc = evaluate_accuracy(model, self.data.val, self.device, self.spec.data.eval_batch_size,
                                    source=f"val split of {self.data.name}")
        metrics.update(accuracy=acc.top1, top5=acc.top5, accuracy_source=acc.source, recovery_steps=steps)
        return metrics, feasibility.accuracy_violation(metrics) if feasibility is not None else None

    def _latency(self, model, config, predictor):
        from vitsearch.evaluators import latency_entry, measure_latency

        if predictor is not None:
            pred = predictor.predict(config)
            entry = latency_entry(median_ms=pred.median_ms, device=str(self.device),
                                  fingerprint_id=predictor.fingerprint_id, batch=self.input_shape[0],
                                  interval=pred.interval_entry())
            if predictor.scale != 1.0:  # latency.calibrate: the factor this attempt used
                entry["calibration_factor"] = round(predictor.scale, 4)
            if predictor.fingerprint.get("runtime"):  # predicted for a runtime program (its profile's runtime)
                entry.update(runtime=predictor.fingerprint["runtime"],
                             runtime_version=predictor.fingerprint.get("runtime_version"))
            return entry, predictor.fingerprint
        result = measure_latency(model, self.input_shape, self.device, **self.latency_kwargs())
        return latency_entry(result), result.fingerprint

    def measure_config(self, config):
        """``config`` built and timed as the search timed it: a LatencyResult (the study's protocol).

        Compressed in eager; in another runtime built from its float structure by that
        runtime (which quantises), checked, and timed as the deployed program.
        """
        from vitsearch.evaluators import measure_latency
        from vitsearch.spaces import compress

        if self.spec.latency.runtime != "eager":  # a runtime's program, built as runtime_eval builds it
            from vitsearch.evaluators.runtimes.deploy import measure
            from vitsearch.evaluators.runtimes.onnxexport import prepare_structure
            from vitsearch.search.runtime_eval import build_for_study

            prepared = prepare_structure(self.base, config, self.data.calibration, str(self.device))
            deployed, _ = build_for_study(self, prepared, config)
            return measure(deployed, self.input_shape, self.device, **self.latency_kwargs())
        model = compress(self.base, config, calibration=self.data.calibration, device=str(self.device))
        return measure_latency(model, self.input_shape, self.device, **self.latency_kwargs())

    def profile_programs(self):
        """What a profile of this study times: eager models, or programs of ``latency.runtime`` (with its fingerprint)."""
        if self.spec.latency.runtime == "eager":
            from vitsearch.evaluators.latency.profile.programs import EagerPrograms

            return EagerPrograms()
        from vitsearch.evaluators.runtimes.profiling import RuntimePrograms

        return RuntimePrograms(self.spec.latency.runtime)

    def adopt_sitting_sd(self, sitting_sd: float | None) -> None:
        """Widen this session's measured intervals by a run's own sitting spread where no profile gives one.

        What report and pick of a run without a device profile do, so that their
        re-measurements state intervals on the same footing as the run's.
        """
        self.latency_kwargs()  # reads the profile's basis once
        if sitting_sd is not None and self._profile_basis["sitting_sd"] is None:
            self._profile_basis = {**self._profile_basis, "sitting_sd": sitting_sd}

    def latency_kwargs(self) -> dict:
        """How this study measures a latency: interleaved with the base model (see measure_latency)."""
        from vitsearch.evaluators.latency.predict.study import profile_basis

        lat = self.spec.latency
        if not hasattr(self, "_profile_basis"):  # read once: the profile does not change during a session
            self._profile_basis = profile_basis(self.spec, self.device, lat.threads,
                                                self.profile_programs().fingerprint)
        return {"threads": lat.threads, "warmup": lat.warmup, "reference": self.base,
                "interleave": lat.interleave.model_dump(),
                "reference_ms_profile": self._profile_basis["reference_ms"],
                "sitting_sd": self._profile_basis["sitting_sd"]}


@contextmanager
def _phase(phases: dict[str, float], name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = round(time.perf_counter() - start, 4)


def study_predictor(session: Session):
    """The study's fitted latency predictor for this device and shape, or None (then latency is measured).

    ``latency.predictor``: "auto" uses ``profiles/<study name>`` when it exists and its
    fingerprint matches this machine; "off" never; a path must exist and match.
    """
    import logging

    from vitsearch.evaluators.runtimes.deploy import runtime_fingerprint
    from vitsearch.spaces.errors import DeviceError

    log = logging.getLogger("vitsearch.run")
    spec = session.spec
    mode = spec.latency.predictor
    if mode == "off":
        return None
    from vitsearch.evaluators.latency.predict.study import default_profile_dir, load_for_study

    path = default_profile_dir(spec) if mode == "auto" else Path(mode)
    if not path.exists():
        if mode == "auto":
            log.info("no latency profile at %s: latency is measured for every candidate "
                     "(run `vitsearch profile` to search with predicted latency)", path)
            return None
        from vitsearch.search.preflight import check_predictor_path

        check_predictor_path(spec)  # raises: the path does not exist
    try:
        predictor = load_for_study(spec, session.input_shape, path)
        predictor.check_device(runtime_fingerprint(session.device, spec.latency.threads, spec.latency.runtime))
        if spec.latency.calibrate:
            predictor = _calibrated(session, predictor, path if path.is_dir() else path.parent)
    except (DeviceError, ConfigError) as exc:
        if mode != "auto":
            raise
        log.info("latency profile at %s not used: %s", path, exc)
        return None
    return predictor


def _calibrated(session: Session, predictor, profile_dir: Path):
    """``latency.calibrate``: the predictor rescaled by the uncompressed model timed now."""
    import logging

    from vitsearch.evaluators.latency.profile.run import time_reference

    ref = time_reference(session, profile_dir)
    out = predictor.calibrated(ref["median_ms"], f"uncompressed model timed at run start, {ref['n_runs']} passes, "
                                                 "median")
    logging.getLogger("vitsearch.run").info(
        "latency predictor calibrated: x%.3f (reference %.3f ms now vs %.3f ms profiled)", out.scale,
        ref["median_ms"], predictor.state["reference_ms"])
    return out


def load_session(study: str | Path | StudySpec) -> Session:
    """Validate the study, then resolve the device, load the model and the data (in that order)."""
    from vitsearch.evaluators.accuracy import check_compatible
    from vitsearch.evaluators.data import load_imagefolder, load_mnist5k
    from vitsearch.evaluators.latency.fingerprint import resolve_device
    from vitsearch.evaluators.models import ModelSpec, load_base_model
    from vitsearch.search.runtime_eval import check_study_runtime

    from vitsearch.search.preflight import check_latency_batch

    spec = study if isinstance(study, StudySpec) else load_study(study)
    check_latency_batch(spec)  # before loading a model
    device = resolve_device(spec.device)
    check_study_runtime(spec, device)
    m = spec.model
    base = load_base_model(ModelSpec(m.name, m.pretrained, m.checkpoint, m.num_classes)).to(device)
    if spec.data.source == "mnist5k":
        data = load_mnist5k(seed=spec.data.seed, calibration_size=spec.data.calibration_size)
    else:
        data = load_imagefolder(spec.data.path, base, spec.data.calibration_size, spec.data.seed,
                                spec.data.skip_unreadable)
    check_compatible(base, data.input_size, data.num_classes)
    if spec.latency.input_size is not None:
        check_compatible(base, spec.latency.input_size, data.num_classes)
    return Session(spec, device, base, data)
