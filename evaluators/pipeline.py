"""One staged evaluation of a candidate, in whichever runtime the study deploys to.

Cheapest first, the same order in every runtime (eager is a runtime like the others):

1. **structure**: torch prepares the config the runtime asks for
   (:meth:`Runtime.structure`: the config itself in eager, its float structure where
   the runtime quantises itself), without distillation;
2. **build**: the runtime deploys it (finalize in eager, export + ORT quantisation,
   torch.compile) and checks it once against the candidate's eager outputs (eager is
   that reference, :attr:`Runtime.is_reference`, and is not checked). Build time is
   recorded as phase ``build`` and in the latency entry, never as latency;
3. **costs**: size, MACs and latency (measured on the deployed program by the study's
   protocol, or predicted); a cost budget or no gain over the uncompressed model stops
   the candidate here, before any training;
4. **recovery**: distillation of the prepared structure (its weights saved for a
   promotion to continue from);
5. **accuracy** on val: in the runtime where it changes numerics (its own quantisation),
   else on the eager model (identical within the checked tolerance, and cheaper).

A :class:`Pipeline` holds what these stages read (base model, data, device, the
runtime, the measurement protocol); the study's session builds one. It never imports
the search layer: the config goes down once and the metrics come back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitsearch.evaluators.data import DataSplits
from vitsearch.evaluators.latency.lock import device_busy
from vitsearch.evaluators.runtimes.base import Deployed, Runtime


@contextlib.contextmanager
def phase(phases: dict[str, float], name: str) -> Iterator[None]:
    """Time the block into ``phases[name]`` (seconds, 4 decimals), even when it raises."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = round(time.perf_counter() - start, 4)


@dataclass
class Built:
    """What the stages of one candidate share: its prepared structure, program and eager model."""

    prepared: nn.Module
    program: tuple[Deployed, dict | None] | None = None  # (deployed, numerics) of ``prepared``'s weights
    eager: nn.Module | None = None  # the finalized eager model of ``prepared``'s weights, once made


@dataclass
class Pipeline:
    """Everything the staged evaluation of one study's candidates reads, on one device.

    ``timing()``: the keyword arguments of the study's measurement protocol (read
    lazily: it may read a device profile). ``distill``: the distillation settings and
    device (:meth:`recovery_settings` turns them into a candidate's). ``ladder``:
    distillation steps per rung. ``reference_config``: the uncompressed model as the study
    deploys it (``model.precision``), what the no-gain check times a candidate against.
    """

    base: nn.Module
    data: DataSplits
    device: torch.device
    input_shape: tuple[int, ...]
    runtime: Runtime
    threads: int | None
    eval_batch: int
    ladder: tuple[int, ...]
    distill: dict[str, Any]
    timing: Callable[[], dict[str, Any]] = field(repr=False, default=dict)
    reference_config: Any = None  # the uncompressed model as deployed (None: the identity, fp32)
    _teacher_logits: dict[int, tuple[Any, torch.Tensor]] = field(default_factory=dict, init=False, repr=False,
                                                                  compare=False)

    @property
    def reference(self) -> Any:
        """The config of the uncompressed model as deployed (``model.precision``): what every ratio is against."""
        from vitsearch.spaces import CompressionConfig

        return self.reference_config if self.reference_config is not None else CompressionConfig()

    def is_uncompressed(self, config: Any) -> bool:
        """The uncompressed model: the identity (the fp32 teacher) or the reference (it in the base precision)."""
        return config.is_reference(self.reference.precision.base)

    # ---- the stages ------------------------------------------------------------------
    def evaluate(self, config: Any, steps: int | None = None, feasibility: Any = None, predictor: Any = None,
                 reference: Any = None, save_to: str | None = None) -> tuple[dict, str | None]:
        """(metrics, infeasible reason or None) of ``config`` after ``steps`` of recovery (default: the first rung).

        ``metrics`` is an Evaluation dict; stopped on cost it has ``accuracy`` None.
        ``predictor`` replaces the latency measurement; ``reference`` (the uncompressed
        model's costs) stops a candidate that cannot improve on it; ``save_to`` keeps the
        distilled weights (the first rung's checkpoint).
        """
        steps = self.ladder[0] if steps is None else steps
        if self.is_uncompressed(config):
            steps = 0  # the uncompressed model is the teacher: distilling it into itself is no recovery
        phases: dict[str, float] = {}
        built, metrics = self._costs(config, predictor, phases)
        reason = feasibility.cost_violation(metrics) if feasibility is not None else None
        if reason is None and reference is not None:
            reason = self._no_gain(reference, metrics, phases)
        if reason is not None:
            return metrics, reason
        if steps > 0 or save_to is not None:
            built = Built(self._recovered(config, steps, None, save_to, phases))
        return self._scored(built, config, metrics, steps, phases, feasibility)

    def promote(self, config: Any, first: dict, rung: int, load_from: str, save_to: str | None,
                feasibility: Any = None) -> tuple[dict, str | None]:
        """Rung ``rung`` of a promoted candidate: rung ``rung - 1``'s weights distilled further, re-scored.

        ``first``: its first-rung metrics (latency, size and MACs do not change with
        distillation). ``load_from``: the previous rung's checkpoint; when it is missing
        (another machine's run dir) the previous rungs are replayed exactly (seeded).
        """
        phases: dict[str, float] = {}
        prepared = self._recovered(config, self.ladder[rung] - self.ladder[rung - 1], (rung, load_from), save_to,
                                   phases)
        return self._scored(Built(prepared), config, {**first, "phase_seconds": phases}, self.ladder[rung], phases,
                            feasibility)

    def costs(self, config: Any, predictor: Any = None) -> dict:
        """Size, MACs and latency of ``config`` (predicted with ``predictor``): the metrics with ``accuracy`` None."""
        return self._costs(config, predictor, {})[1]

    def measure_config(self, config: Any):
        """``config`` built and timed as the search timed it: a LatencyResult (the study's protocol)."""
        from vitsearch.evaluators.runtimes.deploy import measure

        deployed, _ = self.build(self.prepare(config), config)
        return measure(deployed, self.input_shape, self.device, **self.timing())

    def recover(self, config: Any, steps: int) -> nn.Module:
        """The runtime's structure of ``config`` distilled ``steps`` steps from the base model (not saved)."""
        return self._recovered(config, steps, None, None, {})

    # ---- building blocks (also what report, pick and the test split use) -----------------
    def prepare(self, config: Any, calibrated: bool = True) -> nn.Module:
        """The structure torch prepares for this runtime (no distillation); data-free unless ``calibrated``."""
        from vitsearch.spaces import prepare

        calibration = self.data.calibration if calibrated else None
        return prepare(self.base, self.runtime.structure(config), calibration=calibration, device=str(self.device))

    def build(self, prepared: nn.Module, config: Any, timed: Callable = None,
              checked: bool = True) -> tuple[Deployed, dict | None]:
        """(program, numerics) of ``prepared`` in the runtime, checked against eager once unless not ``checked``."""
        from vitsearch.evaluators.runtimes.deploy import build_checked

        threads = self.threads if self.device.type == "cpu" else None
        if threads is None and self.device.type == "cpu":
            from vitsearch.evaluators.latency.timing.prepare import default_threads

            threads = default_threads()
        with (timed or _untimed)("build"), device_busy(self.device):
            return build_checked(self.runtime.name, prepared, config, self.input_shape, self.device, threads,
                                 self.data.calibration if checked else None)

    def measure_built(self, deployed: Deployed, numerics: dict | None) -> tuple[dict, dict]:
        """(latency entry, fingerprint) of a built program, by the study's measurement protocol."""
        from vitsearch.evaluators import latency_entry
        from vitsearch.evaluators.runtimes.deploy import latency_fields, measure

        result = measure(deployed, self.input_shape, self.device, **self.timing())
        entry = {**latency_entry(result), **latency_fields(deployed, numerics)}
        if self.reference.precision.base != "fp32":  # what the ratio is to (an fp32 reference says nothing)
            entry["reference_precision"] = self.reference.precision.base
        return entry, result.fingerprint

    def accuracy(self, prepared: nn.Module, config: Any, dataset: Any, source: str,
                 program: tuple[Deployed, dict | None] | None = None, eager: nn.Module | None = None,
                 reference: torch.Tensor | None = None):
        """Top-1/top-5 of ``prepared`` on ``dataset`` as the study deploys it; (AccuracyResult, run in the runtime).

        Run in the runtime where it changes the candidate's numerics (``program``: its
        checked program of these weights, else built here), else on the eager model
        (``eager``: the finalized model of these weights, else finalized here).
        ``reference``: logits to compare with (:meth:`teacher_logits`).
        """
        from vitsearch.evaluators import evaluate_accuracy
        from vitsearch.evaluators.runtimes.eager import finalized
        from vitsearch.evaluators.runtimes.numerics import accuracy_in_runtime

        if self.runtime.changes_numerics(config):
            deployed = (program or self.build(prepared, config))[0]
            with device_busy(self.device):
                return accuracy_in_runtime(deployed, dataset, self.eval_batch, source, reference), True
        with device_busy(self.device):
            model = eager if eager is not None else finalized(prepared, config, self.device)
            return evaluate_accuracy(model, dataset, self.device, self.eval_batch, source=source,
                                     reference=reference), False

    def score(self, prepared: nn.Module, config: Any, program: tuple[Deployed, dict | None] | None = None,
              against_teacher: bool = False):
        """Val accuracy of ``prepared`` as the search scores it (an AccuracyResult): every rung and pick alike;
        ``against_teacher``: with how closely it follows the teacher on the same images (``reference_kl``)."""
        reference = self.teacher_logits(self.data.val) if against_teacher else None
        return self.accuracy(prepared, config, self.data.val, f"val split of {self.data.name}", program,
                             reference=reference)[0]

    def teacher_logits(self, dataset: Any) -> torch.Tensor:
        """The teacher's (the base model's, fp32 eager) logits on ``dataset``, once per data set."""
        from vitsearch.evaluators.accuracy import logits_on

        held = self._teacher_logits.get(id(dataset))
        if held is None or held[0] is not dataset:  # (the data set is held with its logits: its id stays its own)
            with device_busy(self.device):
                held = (dataset, logits_on(self.base, dataset, self.device, self.eval_batch))
            self._teacher_logits[id(dataset)] = held
        return held[1]

    def recovery_settings(self, config: Any) -> dict[str, Any]:
        """The distillation keywords of ``config``'s recovery (every rung, rebuild and polish alike).

        :attr:`distill` with ``quantisation_aware`` replaced by ``fake_quant``: the
        runtime's quantisation of ``config`` for programs of this study's batch, or None.
        """
        settings = dict(self.distill)
        aware = settings.pop("quantisation_aware", False)
        settings["fake_quant"] = self.runtime.fake_quant_scheme(config, self.input_shape[0]) if aware else None
        return settings

    # ---- internals -------------------------------------------------------------------
    def _costs(self, config: Any, predictor: Any, phases: dict) -> tuple[Built, dict]:
        from vitsearch.evaluators import analytic_macs, model_size

        timed = lambda name: phase(phases, name)  # noqa: E731
        with timed("compress"), device_busy(self.device):
            built = Built(self.prepare(config))
        if predictor is None:
            built.program = self.build(built.prepared, config, timed)
        with timed("compress"), device_busy(self.device):
            sized = self._eager_model(built, config)
        size = model_size(sized)
        with timed("latency"):
            if built.program is None:
                latency, fingerprint = predicted_entry(predictor, config, self.device, self.input_shape[0])
            else:
                latency, fingerprint = self.measure_built(*built.program)
        return built, {"config": config.to_dict(), "accuracy": None, "top5": None,
                       "accuracy_source": "not evaluated", "size_mb": size.size_mb,
                       "size_mb_sparse_storage": size.size_mb_sparse_storage,
                       "macs": analytic_macs(self.base, config), "latency": latency, "fingerprint": fingerprint,
                       "recovery_steps": 0, "phase_seconds": phases}

    def _eager_model(self, built: Built, config: Any) -> nn.Module:
        """The model whose size is reported: the eager model where eager realises the precision, else the float one."""
        from vitsearch.evaluators.runtimes.eager import eager_realises, finalized

        program = built.program[0] if built.program is not None else None
        if program is not None and program.module is not None:  # a torch program keeps its finalized model
            built.eager = program.module
            return program.module
        if eager_realises(config, self.device):  # else the float structure: a runtime quantises it (int4 on CPU)
            built.eager = finalized(built.prepared, config, self.device)
            return built.eager
        return built.prepared

    def _no_gain(self, reference: Any, metrics: dict, phases: dict) -> str | None:
        """No gain over the uncompressed model? A measured verdict is confirmed against it timed now, here.

        On a shared machine the run-start timing of the reference can be far from now; a
        candidate is only settled when it is slower than the uncompressed model timed
        beside it. In eager its interleaved ratio is to that model itself (above 1:
        slower); in another runtime the ratio is to the eager model, so the uncompressed
        program is timed again now and the two ratios compared (paid only by candidates
        that look slower).
        """
        from dataclasses import replace

        latency, verdict = metrics["latency"], reference.no_gain(metrics)
        if verdict is None or latency.get("source") != "measured":
            return verdict
        if self.runtime.is_reference and latency.get("ratio") is not None and reference.latency_ratio is not None:
            return verdict  # judged on its ratio to the uncompressed model itself, timed beside it
        with phase(phases, "reference latency"):
            now = self.measure_config(self.reference)
        return replace(reference, latency_ms=now.median_ms, latency_ratio=self.uncompressed_ratio(now.ratio),
                       latency_source=f"timed just now beside it, {now.n_runs} passes").no_gain(metrics)

    def uncompressed_ratio(self, measured: float | None) -> float | None:
        """The uncompressed model's latency as a ratio to the interleaved reference (the eager model): 1 in eager,
        where it is that model (a ratio measured there is noise around 1), else ``measured``."""
        return 1.0 if self.runtime.is_reference else measured

    def _recovered(self, config: Any, steps: int, previous: tuple[int, str] | None, save_to: str | None,
                   phases: dict) -> nn.Module:
        """The prepared structure distilled ``steps`` more: from scratch, or from rung ``previous[0] - 1``."""
        from pathlib import Path

        from vitsearch.evaluators.distill import (distil_further, distilled, distilled_chain, load_prepared,
                                                  save_prepared)

        structure, settings = self.runtime.structure(config), self.recovery_settings(config)
        with phase(phases, "recovery"), device_busy(self.device):
            if previous is None:
                prepared = distilled(self.base, structure, self.data.train, steps=steps,
                                     calibration=self.data.calibration, **settings)
            else:
                rung, load_from = previous
                if Path(load_from).is_file():
                    prepared = load_prepared(self.base, structure, load_from, self.data.calibration, self.device)
                else:
                    prepared = distilled_chain(self.base, structure, self.data.train, rungs=self.ladder[:rung],
                                               calibration=self.data.calibration, **settings)
                distil_further(prepared, self.base, self.data.train, steps=steps, rung=rung, **settings)
            if save_to is not None:
                save_prepared(prepared, save_to)
        return prepared

    def _scored(self, built: Built, config: Any, metrics: dict, steps: int, phases: dict,
                feasibility: Any) -> tuple[dict, str | None]:
        """Val accuracy (never test) into ``metrics``; (metrics, accuracy-budget violation or None)."""
        with phase(phases, "accuracy"):
            acc, _ = self.accuracy(built.prepared, config, self.data.val, f"val split of {self.data.name}",
                                   built.program, built.eager)
        # torch's threads in this thread, which distilled it: a replay of the rungs is exact only at the same count
        metrics.update(accuracy=acc.top1, top5=acc.top5, accuracy_source=acc.source, recovery_steps=steps,
                       recovery_threads=torch.get_num_threads() if steps else None)
        return metrics, feasibility.accuracy_violation(metrics) if feasibility is not None else None


def predicted_entry(predictor: Any, config: Any, device: torch.device, batch: int) -> tuple[dict, dict]:
    """(latency entry, fingerprint) of ``config`` predicted by a fitted LatencyPredictor."""
    from vitsearch.evaluators import latency_entry

    pred = predictor.predict(config)
    entry = latency_entry(median_ms=pred.median_ms, device=str(device), fingerprint_id=predictor.fingerprint_id,
                          batch=batch, interval=pred.interval_entry())
    if predictor.scale != 1.0:  # latency.calibrate: the factor this attempt used
        entry["calibration_factor"] = round(predictor.scale, 4)
    if predictor.fingerprint.get("runtime"):  # predicted for a runtime's programs (its profile's runtime)
        entry.update(runtime=predictor.fingerprint["runtime"], runtime_version=predictor.fingerprint.get("runtime_version"))
    return entry, predictor.fingerprint


def _untimed(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()
