"""A loaded study: validated spec, resolved device, base model and data, loaded once.

The CLI commands and the Ray workers of a search all evaluate candidates through a
:class:`Session`; a worker receives one (it pickles: model and tensors) and reuses it
for every trial it runs.
"""

from __future__ import annotations

import json
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

    @property
    def base_precision(self) -> str:
        """``model.precision`` resolved for this device: what the uncompressed model is deployed in."""
        from vitsearch.search.preflight import study_base_precision

        return study_base_precision(self.spec, self.device)

    @property
    def reference_config(self):
        """The uncompressed model as deployed: every ratio, the predictor and ``pick`` measure against it."""
        from vitsearch.spaces import CompressionConfig

        return CompressionConfig.reference(self.base_precision)

    @property
    def reference(self) -> nn.Module:
        """The uncompressed model as deployed, the other side of every interleaved measurement.

        The base model itself on an fp32 base; else its copy in the base precision (made once).
        """
        if self.base_precision == "fp32":
            return self.base
        if getattr(self, "_reference", None) is None:
            from vitsearch.spaces import compress

            self._reference = compress(self.base, self.reference_config, device=str(self.device))
        return self._reference

    def base_val_accuracy(self) -> float:
        """Top-1 of the uncompressed model as deployed (in ``model.precision``) on the val split.

        What a study's ``max_accuracy_drop`` and ``pick --max-drop`` measure a drop from.
        """
        from vitsearch.evaluators import evaluate_accuracy

        return evaluate_accuracy(self.reference, self.data.val, self.device, self.spec.data.eval_batch_size).top1

    def for_search(self) -> "Session":
        """This session without the test split, its model on the CPU: what the search's workers receive.

        The split that selects candidates must not report them; a worker that has no
        test split cannot select on it by accident. A worker puts the model on its own
        device (:meth:`placed`): a trial's GPU is ``cuda:0`` there, whatever the driver's index.
        """
        import copy
        from dataclasses import replace

        base = self.base if self.device.type == "cpu" else copy.deepcopy(self.base).cpu()
        return replace(self, data=self.data.without_test(), base=base)

    def placed(self, device: str) -> "Session":
        """This session on ``device`` (its model moved there): a worker's copy on the GPU Ray gave it."""
        from dataclasses import replace

        dev = torch.device(device)
        if dev == self.device and next(self.base.parameters()).device == dev:
            return self
        return replace(self, device=dev, base=self.base.to(dev))

    @property
    def pipeline(self):
        """The staged evaluation of this study's candidates (:class:`vitsearch.evaluators.pipeline.Pipeline`)."""
        from vitsearch.evaluators.pipeline import Pipeline
        from vitsearch.evaluators.runtimes import get_runtime

        rc = self.spec.recovery
        return Pipeline(self.base, self.data, self.device, self.input_shape, get_runtime(self.spec.latency.runtime),
                        self.spec.latency.threads, self.spec.data.eval_batch_size, tuple(rc.ladder),
                        self.distill_kwargs(), self.latency_kwargs, self.reference_config)

    def evaluate(self, config, recovery_steps: int | None = None):
        """Compress, recover (``recovery_steps``, default the first rung) and measure one candidate: an Evaluation."""
        from vitsearch.evaluators import Evaluation

        return Evaluation.from_dict(self.pipeline.evaluate(config, recovery_steps)[0])

    def distill_kwargs(self) -> dict:
        """The study's distillation settings (recovery.*) and device: ``Pipeline.recovery_settings`` per candidate."""
        rc = self.spec.recovery
        return dict(device=self.device, lr=rc.lr, batch_size=rc.batch_size, temperature=rc.temperature,
                    alpha=rc.alpha, seed=rc.seed, feature_weight=rc.feature_weight,
                    quantisation_aware=rc.quantisation_aware, augment=rc.augment)

    def profile_programs(self):
        """What a profile of this study times: the programs of ``latency.runtime`` (with its fingerprint)."""
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
                                                self.profile_programs().fingerprint, self.base_precision)
        return {"threads": lat.threads, "warmup": lat.warmup, "reference": self.reference,
                "interleave": lat.interleave.model_dump(),
                "reference_ms_profile": self._profile_basis["reference_ms"],
                "sitting_sd": self._profile_basis["sitting_sd"]}


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
        predictor = load_for_study(spec, session.input_shape, path, session.base_precision)
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
    from vitsearch.search.preflight import check_latency_batch, check_study_runtime

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
