"""Study files (``studies/*.yaml``): the pydantic schema and loading with one-line errors.

A study names the base model, the data, the target device, how latency is measured,
the objectives and hard constraints, the search space and the search settings. Unknown
fields are refused (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from vitsearch.search.fields import Bool, Float, Int, PathStr, Seed, Steps
from vitsearch.search.paths import resolve_written_paths
from vitsearch.search.studyfile import clip, read_study_document
from vitsearch.spaces import SpaceSpec
from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs.subspace import Section

METRICS = ("accuracy", "latency_ms", "size_mb", "macs")
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+|auto)$")
#: a study name is a folder name (runs/{name}, profiles/{name}) and an Optuna study name
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class _Strict(Section):
    model_config = ConfigDict(allow_inf_nan=False)  # and Section's: extra keys refused, frozen


class ModelSection(_Strict):
    """``builtin:vitsearch-tiny``, ``timm:<name>`` (+ ``pretrained``), optional ``checkpoint``; ``precision``.

    ``precision``: what the uncompressed model is deployed in, the reference of every
    speed-up, of the predictor and of ``pick`` (and what the rest of every candidate runs
    in): ``auto`` is bf16 on CUDA (what a GPU user deploys: fp32 there inflates every
    knob's speed-up) and fp32 on CPU.
    """

    name: str = "builtin:vitsearch-tiny"
    pretrained: Bool = True
    checkpoint: PathStr | None = None
    num_classes: Int | None = Field(default=None, gt=0)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"

    UNWRITTEN = ("precision",)

    @field_validator("name")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if not (v.startswith("builtin:") or v.startswith("timm:")) or v.endswith(":"):
            raise ValueError("must be builtin:vitsearch-tiny or timm:<timm model name>")
        return v


class DataSection(_Strict):
    """``mnist5k`` (built in) or ``imagefolder`` with ``path`` holding train/ and val/."""

    source: Literal["mnist5k", "imagefolder"] = "mnist5k"
    path: PathStr | None = None
    seed: Seed = 0
    calibration_size: Int = Field(default=256, gt=0)
    eval_batch_size: Int = Field(default=250, gt=0)
    #: imagefolder: leave out (and count) images that cannot be read, instead of refusing the data
    skip_unreadable: Bool = False

    @model_validator(mode="after")
    def _path_for_imagefolder(self) -> "DataSection":
        if self.source == "imagefolder" and not self.path:
            raise ValueError("data.path is required for source imagefolder (a folder with train/ and val/)")
        return self


class InterleaveSection(_Strict):
    """The interleaved protocol (evaluators/latency/interleaved.py): chunk size and stop rule."""

    chunk: Int = Field(default=4, ge=1, le=64)
    chunk_ms: Float = Field(default=0.0, ge=0.0, le=10_000.0)
    settle: Int = Field(default=0, ge=0, le=64)
    target_halfwidth: Float = Field(default=0.03, ge=1e-4, le=0.5)
    max_seconds: Float = Field(default=3.0, gt=0, le=3600)
    min_pairs: Int = Field(default=6, ge=3, le=10_000)
    max_pairs: Int = Field(default=400, ge=3, le=100_000)
    confidence: Float = Field(default=0.95, ge=0.5, le=0.999)

    @model_validator(mode="after")
    def _pairs(self) -> "InterleaveSection":
        if self.max_pairs < self.min_pairs:
            raise ValueError(f"max_pairs {self.max_pairs} is below min_pairs {self.min_pairs}")
        return self


class LatencySection(_Strict):
    """How latency is measured: batch, input size (default: the model's), CPU threads."""

    batch_size: Int = Field(default=1, gt=0)
    input_size: tuple[Int, Int, Int] | None = None
    threads: Int | None = Field(default=None, gt=0)
    warmup: Int = Field(default=10, ge=0)
    max_runs: Int = Field(default=200, gt=0)
    max_seconds: Float = Field(default=10.0, gt=0)
    #: "auto": use the study's fitted latency predictor (``vitsearch profile``) when its
    #: device fingerprint matches this machine, else measure; "off": always measure; or a
    #: path to a profile dir / predictor file (then it must exist and match).
    predictor: PathStr = "auto"
    #: with a predictor: time the uncompressed model once at the start of a run and scale
    #: every prediction by (its time now / its time when profiled), so predictions follow
    #: the device's current speed rather than its quietest profiled state.
    calibrate: Bool = False
    #: what latency is measured in (and accuracy, where the runtime quantises): eager
    #: PyTorch, torch.compile, ONNX Runtime or TensorRT (GPU); see README "Runtimes".
    runtime: Literal["eager", "compile", "onnxruntime", "tensorrt"] = "eager"

    @property
    def min_runs(self) -> int:
        """Timed passes before the stability check: measure_latency's 20, or all of a smaller max_runs."""
        return min(20, self.max_runs)
    #: every measured latency is timed interleaved with the uncompressed model
    interleave: InterleaveSection = InterleaveSection()


class Objective(_Strict):
    metric: Literal["accuracy", "latency_ms", "size_mb", "macs"]
    direction: Literal["maximize", "minimize"]


class Constraints(_Strict):
    """Hard limits; a candidate beyond one is infeasible. Accuracy drop is absolute (0..1)."""

    max_latency_ms: Float | None = Field(default=None, gt=0)
    max_size_mb: Float | None = Field(default=None, gt=0)
    max_accuracy_drop: Float | None = Field(default=None, ge=0, le=1)


class RecoverySection(_Strict):
    """Knowledge-distillation recovery of each candidate before its accuracy counts.

    ``steps``: one fixed number of distillation steps for every candidate (0 = off).
    ``rungs``: instead, increasing step counts (e.g. [10, 60, 200]): every candidate is
    scored at the first, and each rung promotes its best 1/``reduction`` (non-dominated
    sorting on the study's objectives) to the next, continuing from its weights.
    ``enabled: false`` turns recovery off whatever ``steps`` says (rungs are refused then).
    ``quantisation_aware``: a candidate's quantised linears are distilled through the
    quantisation of the study's runtime (fake quantisation, straight-through gradients);
    ``false``: the float model is distilled and quantised after (post-training).
    ``feature_weight``: weight of the block-feature loss beside the logits' (0 = logits only).
    ``augment``: how each distillation batch is altered for teacher and student alike
    (``none``, ``shift``, ``affine``, ``mixup``, ``shift+mixup``; ``vitsearch pick``'s polish has its own
    ``--polish-augment``). ``none`` when a study file does not say, so a run made before the
    setting existed rebuilds as it was made.
    ``finish_front``: with rungs, the end of the search promotes the front's candidates left
    below the top rung, one rung at a time (in the last part of a time budget, no new
    candidate then); ``false``: plain successive halving, a late front point keeps its rung.
    """

    steps: Steps = 0
    rungs: tuple[Steps, ...] | None = None
    reduction: Float = 3.0
    enabled: Bool = True
    lr: Float = Field(default=5e-4, gt=0)  # = evaluators.distill.DISTIL_LR (1e-4 until benchmarks/results/rung_lr16.json)
    batch_size: Int = Field(default=64, gt=0)
    temperature: Float = Field(default=2.0, gt=0)
    alpha: Float = Field(default=0.5, ge=0, le=1)
    seed: Seed = 0
    quantisation_aware: Bool = False  # off: no gain measured on the default study (benchmarks/results/qad.json)
    feature_weight: Float = Field(default=0.0, ge=0)
    augment: Literal["none", "shift", "affine", "mixup", "shift+mixup"] = "none"  # evaluators.augment.AUGMENTS (test_study)
    finish_front: Bool = True

    UNWRITTEN = ("augment",)

    @model_validator(mode="after")
    def _rungs(self) -> "RecoverySection":
        if not self.reduction > 1:
            raise ValueError(f"recovery.reduction {self.reduction!r} must be > 1 (each rung promotes its best "
                             "1/reduction; 3 is usual)")
        r = self.rungs
        if r is None:
            return self
        if not self.enabled:
            raise ValueError(f"recovery.rungs {list(r)} given with recovery disabled (recovery.enabled: false); "
                             "drop rungs or enable recovery")
        if self.steps:
            raise ValueError(f"recovery.rungs {list(r)} given with steps: {self.steps}; give either steps or "
                             "rungs, not both")
        if not r or any(s < 0 for s in r) or any(b <= a for a, b in zip(r, r[1:])):
            raise ValueError(f"recovery.rungs {list(r)} must be strictly increasing step counts >= 0, e.g. [10, 60, 200]")
        if r[-1] == 0:
            raise ValueError(f"recovery.rungs {list(r)} is recovery disabled; use steps: 0 or give a rung > 0")
        return self

    @property
    def ladder(self) -> tuple[int, ...]:
        """The rungs' step counts; one rung of ``steps`` without ``rungs`` (of 0 when disabled)."""
        if not self.enabled:
            return (0,)
        return self.rungs if self.rungs is not None else (self.steps,)


class SearchSection(_Strict):
    sampler: Literal["nsga2", "tpe", "gp", "random"] = "nsga2"
    trials: Int = Field(default=40, gt=0)
    #: stop handing out work this many minutes after the search starts (Ray up, model loaded);
    #: what is in flight then finishes and is recorded. None: no time limit (``trials`` decides).
    time_budget_minutes: Float | None = Field(default=None, gt=0)
    workers: Int = Field(default=2, gt=0, le=256)
    cpus: Int | None = Field(default=None, gt=0)
    seed: Seed = 0
    ray_address: str | None = None
    storage: PathStr | None = None
    population_size: Int | None = Field(default=None, gt=1)
    #: TPE / GP: random trials before the model is used (None: a fifth of ``trials``, at least 5;
    #: for TPE at most 10)
    startup_trials: Int | None = Field(default=None, gt=0)
    batch_size: Int | None = Field(default=None, gt=0)
    #: time each precision the space offers alone at run start and settle the candidates that use one
    #: slower than the uncompressed model (search/engine/gain.py); latency-only studies without a predictor
    screen: Bool = True

    UNWRITTEN = ("screen",)


class StudySpec(_Strict):
    """A whole study file."""

    name: str = "default"
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    device: str = "cpu"
    latency: LatencySection = LatencySection()
    objectives: tuple[Objective, ...] = (
        Objective(metric="accuracy", direction="maximize"),
        Objective(metric="latency_ms", direction="minimize"),
    )
    constraints: Constraints = Constraints()
    space: SpaceSpec = SpaceSpec()
    recovery: RecoverySection = RecoverySection()
    search: SearchSection = SearchSection()
    output_dir: PathStr = "runs/{name}"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v) or ".." in v:  # match would take a trailing newline
            raise ValueError("must be 1-100 characters of letters, digits, '.', '_' or '-', starting with a letter "
                             "or digit, without '..' (it names the run folder)")
        return v

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, v: str) -> str:
        try:
            v.format(name="x")
        except (KeyError, IndexError, ValueError):
            raise ValueError("may hold no {...} field but {name}, e.g. runs/{name}") from None
        if not v.strip():
            raise ValueError("must be a folder path, e.g. runs/{name}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.fullmatch(v):  # match would take a trailing newline
            raise ValueError("must be cpu, cuda, cuda:N or auto")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: tuple[Objective, ...]) -> tuple[Objective, ...]:
        metrics = [o.metric for o in v]
        if not v or len(set(metrics)) != len(metrics):
            raise ValueError(f"must list one or more distinct metrics of {', '.join(METRICS)}")
        return v

    def run_dir(self) -> Path:
        """Where a run of this study writes by default."""
        return Path(self.output_dir.format(name=self.name))


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown field {where!r}; remove it or check its spelling"
    shown = repr(first.get("input"))
    shown = shown if len(shown) <= 80 else f"{shown[:77]}... ({len(shown):,} characters)"
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"field {where!r}: {msg}; got {shown}{more}"


def parse_study(data: Any, source: str = "<study>") -> StudySpec:
    """Validate a parsed study document; raises ConfigError with one line."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{clip(source)}: a study file must be a YAML mapping of fields, got {type(data).__name__}")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{clip(source)}: {_one_line(exc)}") from None


def default_study_path() -> Path:
    """The embedded default study shipped with the package."""
    return Path(str(resources.files("vitsearch.studies") / "default.yaml"))


def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study file (``default`` names the embedded default).

    Relative paths written in the file are anchored at the file's folder
    (:mod:`vitsearch.search.paths`); an empty, non-UTF-8 or duplicate-key file is
    refused (:mod:`vitsearch.search.studyfile`).
    """
    p = default_study_path() if str(path) == "default" else Path(path)
    return resolve_study_paths(parse_study(read_study_document(p), str(p)), p.parent.absolute())


def resolve_study_paths(spec: StudySpec, base: Path) -> StudySpec:
    """The study with every relative path it writes anchored at ``base`` (the study file's folder).

    The space is kept as parsed: which precision choices the file gave and which it left
    to the base precision is the space's own record (``model_fields_set``), and a dump
    validated again would say the file gave them all.
    """
    data = resolve_written_paths(spec.model_dump(mode="python"), "output_dir" in spec.model_fields_set, base)
    return type(spec).model_validate(data).model_copy(update={"space": spec.space})


def study_document(spec: StudySpec) -> dict[str, Any]:
    """The resolved study as a document: every default filled in, but the precision choices the study left to its
    base precision (they follow ``model.precision`` and the runtime, so a study parsed from it, or a run read back,
    resolves them as it was made)."""
    doc = spec.model_dump(mode="json")
    for part in spec.space.precision.defaulted():
        doc["space"]["precision"].pop(part, None)
    return doc


def study_to_yaml(spec: StudySpec) -> str:
    """:func:`study_document` as YAML (a run dir's ``study.yaml``)."""
    import yaml

    return yaml.safe_dump(study_document(spec), sort_keys=False)
