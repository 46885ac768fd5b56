"""``vitsearch pick``'s export of the variant it chose (:mod:`.pick` chooses).

The winner is rebuilt exactly as the search evaluated it (its checkpoint at the highest
rung it reached, or the same distillation replayed), re-evaluated on val, measured on the
held-out test split, polished (``--polish-steps`` more distillation steps, with progress
lines on stderr; both accuracies recorded), re-timed beside the uncompressed model in the
study's runtime and written with :func:`vitsearch.search.results.variant.write_variant`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from vitsearch.search.results.pick import Choice, within_probability
from vitsearch.search.results.variant import POLISH_SELECTS
from vitsearch.spaces.errors import ConfigError

#: accuracy is deterministic on CPU; on CUDA kernels may differ in the last bits of a
#: logit, which can flip an argmax near a tie: allow a few images of the val split.
ACCURACY_TOLERANCE = {"cpu": 0.0, "cuda": 0.005}
#: seconds between two progress lines of long work (the first comes after the first step)
PROGRESS_EVERY_S = 5.0
#: val checkpoints of the polish (its best is exported): enough to catch the peak of a cosine schedule
POLISH_CHECKPOINTS = 8
#: how the polish alters each batch (teacher and student see the same): rotated, scaled and moved as the built-in
#: model was trained (``affine``), the function matching of patient distillation (docs/results.md: the polish with
#: augmentation; ``affine`` with :data:`POLISH_LR` since the fifteenth session, ``shift`` before)
POLISH_AUGMENT = "affine"
#: the polish's peak learning rate (AdamW, decayed along a cosine to 0): its own, not the study's ``recovery.lr``,
#: which the rungs use constant over a few dozen steps; 5x that over 2,000 steps followed the teacher closer on val
#: for both variants measured and lost 15 test images fewer (docs/results.md: a faster polish)
POLISH_LR = 5e-4
#: the polish scores and keeps a moving average of the weights (Polyak averaging) whose time constant is this share of
#: its steps: decay 1 - 4 / steps per step (0.998 over 2,000 steps, as measured: docs/results.md), so the starting
#: weights keep e^-4 (2 %) of the average at the end whatever the steps
POLISH_EMA_SPAN = 0.25
#: what picks the polish's checkpoint and decides whether it is kept, both on the val images: ``top1``, their
#: top-1 against the labels; ``teacher``, how closely the student follows its fp32 teacher (the mean
#: KL(teacher || student) of their softmaxes at temperature 1, the direction of the distillation's KL term:
#: continuous where top-1 moves by whole images; it may keep a polish whose val top-1 fell); the choices:
#: :data:`~vitsearch.search.results.variant.POLISH_SELECTS`. ``teacher`` by default: over four front variants it
#: lost 9 test images net against ``top1``'s 10 (docs/results.md: a tie within noise; the rule fixed before the last
#: two were measured), and it keeps a polish that follows the teacher closer where top-1 is flat
POLISH_SELECT = "teacher"


@dataclass(frozen=True)
class PolishSettings:
    """How ``pick`` polishes the variant it exports: ``steps`` more distillation steps (None: the study's top rung;
    0: none) from the learning rate ``lr`` decayed along a cosine to 0, each batch altered as ``augment`` says,
    the weights averaged with decay ``ema`` per step (None: ``1 - 1 / (POLISH_EMA_SPAN x steps)``; 0: not
    averaged), its checkpoint chosen and kept by ``select`` (one of
    :data:`~vitsearch.search.results.variant.POLISH_SELECTS`). ConfigError (exit 2) for a value out of range."""

    steps: int | None = None
    augment: str = POLISH_AUGMENT
    ema: float | None = None
    select: str = POLISH_SELECT
    lr: float = POLISH_LR

    def __post_init__(self) -> None:
        from vitsearch.evaluators.augment import AUGMENTS

        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"--polish-steps: must be >= 0 (0: no polish), got {self.steps}")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"--polish-augment: {self.augment!r} is not one of {', '.join(AUGMENTS)}")
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"--polish-ema: must be in [0, 1) (0: the weights as trained), got {self.ema}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--polish-lr: must be a number above 0 (the peak learning rate), got {self.lr}")
        if self.select not in POLISH_SELECTS:
            raise ConfigError(f"--polish-select: {self.select!r} is not one of {', '.join(POLISH_SELECTS)}")

    def decay(self, steps: int) -> float:
        """The averaging's decay per step for a polish of ``steps`` steps."""
        return self.ema if self.ema is not None else max(0.0, 1.0 - 1.0 / (POLISH_EMA_SPAN * steps))


class StepProgress:
    """``progress(step, steps)`` callback: "WHAT: step k/N (p %), ETA s" lines on stderr.

    One line after the first step, then at most every ``every`` seconds, and one at the
    last step; lines, not a bar, so that a log file holds them too.
    """

    def __init__(self, what: str, every: float = PROGRESS_EVERY_S, stream=None):
        self.what, self.every, self.stream = what, every, stream
        self.started = self.last = None

    def __call__(self, step: int, steps: int) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started, self.last = now, now - self.every
        if step not in (1, steps) and now - self.last < self.every:
            return
        self.last = now
        eta = (now - self.started) / max(step - 1, 1) * (steps - step) if step > 1 else float("nan")
        eta_text = "?" if eta != eta else f"{eta:.0f} s"
        print(f"{self.what}: step {step}/{steps} ({step / steps:.0%}), ETA {eta_text}",
              file=self.stream or sys.stderr, flush=True)


def polish_settings(steps: int | None, augment: str | None, ema: float | None,
                    select: str | None = None, lr: float | None = None) -> PolishSettings:
    """The polish's options from the command line (None: the default)."""
    return PolishSettings(steps, POLISH_AUGMENT if augment is None else augment, ema,
                          POLISH_SELECT if select is None else select, POLISH_LR if lr is None else lr)


def export(view, choice: Choice, session, out: Path, remeasure_why: str,
           polish: PolishSettings = PolishSettings()) -> dict[str, Any]:
    """Rebuild (at the rung it reached), re-check, polish, measure on test and write the winner to ``out``.

    In the study's runtime throughout (:class:`vitsearch.evaluators.pipeline.Pipeline`):
    the program is built from the weights, scored on val as the search scored it, and
    re-measured by the study's protocol. ``polish``: its steps more distillation steps
    before export, the learning rate decayed along a cosine, the best of
    :data:`POLISH_CHECKPOINTS` val checkpoints kept, and only when it beats the unpolished
    weights on val by its ``select`` (val top-1, or val KL divergence from the teacher: val
    selects, test reports), each batch altered as its ``augment`` says for teacher and
    student alike, the weights averaged as its ``ema`` says. Returns the provenance, with
    both accuracies.
    """
    import copy

    from vitsearch.search.results.sitting import run_sitting_sd
    from vitsearch.search.results.testacc import measure_test_deployed, rebuild_prepared
    from vitsearch.search.results.variant import write_variant
    from vitsearch.spaces import CompressionConfig

    # intervals on the run's footing: a device profile's sitting spread, else the one the run measured
    session.adopt_sitting_sd(run_sitting_sd(view.meta_summary()))
    row = choice.winner
    number, rung = int(row["number"]), int(row["rung"])
    ev = view.evaluation(number)
    config = CompressionConfig.from_dict(json.loads(row["config"]))
    pipe = session.pipeline
    prepared = rebuild_prepared(session, config, rung, view.path, number, ev.get("recovery_threads"))
    info = copy.deepcopy(getattr(prepared, "vitsearch_info", {}))
    program = pipe.build(prepared, config)
    acc = pipe.score(prepared, config, program)
    tol = ACCURACY_TOLERANCE[session.device.type]
    if abs(acc.top1 - ev["accuracy"]) > tol:
        raise ConfigError(f"pick: trial {number} re-evaluates to {acc.top1:.4f} in {pipe.runtime.name}, not its "
                          f"recorded {ev['accuracy']:.4f} (tolerance {tol}); was the run made with other code or data?")
    test = measure_test_deployed(session, prepared, config, program)
    polish, polished = _polish(view, session, pipe, config, prepared, number, polish)
    if polished is not None:
        prepared, program = polished
    entry, _ = pipe.measure_built(*program)
    entry["note"] = f"re-measured in {pipe.runtime.name} at export"
    base_entry, base_program = _base_latency(pipe)
    provenance = _provenance(view, row, ev, config, acc, tol, info, remeasure_why)
    provenance["asked"] = dict(choice.asked)
    if "val_kl" in row:  # chosen by how closely it follows the teacher on val (pick --choose-by teacher; finite)
        provenance["accuracy"]["val_kl_at_choice"] = float(row["val_kl"])
    provenance["latency"].update(in_runtime=entry, uncompressed_in_runtime=base_entry,
                                 speedup=side_by_side(pipe, program[0], base_program, pipe.timing().get("sitting_sd")))
    exported_test = polish if polish["kept"] else test
    provenance["accuracy"].update(test=_without_bits(test), polish=_without_bits(polish), rung=rung,
                                  recovery_steps_before_polish=ev.get("recovery_steps"),
                                  paired=_paired(view, session, exported_test))
    write_variant(out, prepared, config, view.path / "study.yaml", provenance,
                  program_of=_program_writer(program[0], session))
    return provenance


def _polish(view, session, pipe, config, prepared, number: int, settings: PolishSettings):
    """(what the polish did, (polished weights, their program) when kept else None)."""
    import copy

    from vitsearch.evaluators.distill import polished as distil_polished
    from vitsearch.search.results.testacc import measure_test_deployed

    rc = view.spec.recovery
    steps = rc.ladder[-1] if settings.steps is None else settings.steps
    polish: dict[str, Any] = {"steps": steps, "kept": False}
    if steps > 0 and pipe.is_uncompressed(config):
        polish["note"] = "the uncompressed model is the teacher: nothing to polish"
    if steps <= 0 or pipe.is_uncompressed(config):
        return polish, None
    every, augment, ema = -(-steps // POLISH_CHECKPOINTS), settings.augment, settings.decay(steps)
    seen_val: list[tuple[float, float]] = []

    def rank(val) -> float:  # the select rule, said once: higher is better
        return val.top1 if settings.select == "top1" else -val.reference_kl

    def score(model) -> float:  # both val figures recorded whichever selects
        val = pipe.score(model, config, against_teacher=True)
        seen_val.append((val.top1, val.reference_kl))
        return rank(val)

    polished, seen = distil_polished(copy.deepcopy(prepared), session.base, session.data.train, steps=steps,
                                     rung=len(rc.ladder), score=score, every=every,
                                     progress=StepProgress(f"pick: polishing trial {number}"), ema=ema,
                                     **{**pipe.recovery_settings(config), "augment": augment, "lr": settings.lr})
    batches = "batches as drawn" if augment == "none" else f"batches altered by {augment}"
    weights = f"weights averaged (decay {ema:.4g} per step)" if ema else "weights as trained"
    by = POLISH_SELECTS[settings.select]
    polish.update(schedule=f"AdamW from lr {settings.lr:g}, cosine to 0, {batches}, {weights}, checkpoints every "
                           f"{every} steps, the best by {by}",
                  augment=augment, ema=ema, select=settings.select, lr=settings.lr, best_step=seen["best_step"],
                  val_at_checkpoints={str(k): top1 for k, (top1, _) in zip(seen["scores"], seen_val)},
                  val_kl_at_checkpoints={str(k): kl for k, (_, kl) in zip(seen["scores"], seen_val)})
    if seen["best_step"] == 0:
        polish["note"] = f"no checkpoint scored better than the unpolished weights by {by}"
        return polish, None
    program = pipe.build(polished, config)
    pval = pipe.score(polished, config, program, against_teacher=True)
    # kept when the rebuilt program still ranks above step 0 (the unpolished weights, deployed as they are)
    polish.update(val_accuracy=pval.top1, val_kl=pval.reference_kl, unpolished_val_kl=seen_val[0][1],
                  **measure_test_deployed(session, polished, config, program), kept=rank(pval) > seen["scores"][0])
    return polish, ((polished, program) if polish["kept"] else None)


def _base_latency(pipe) -> tuple[dict[str, Any], Any]:
    """The uncompressed model as deployed (``model.precision``), built and timed in the study's runtime now:
    (its latency entry, its deployed program)."""
    reference = pipe.reference
    built = pipe.build(pipe.prepare(reference), reference)
    entry = pipe.measure_built(*built)[0]
    entry["precision"] = reference.precision.base
    entry["note"] = (f"the uncompressed model in {reference.precision.base}, timed in {pipe.runtime.name} at export "
                     "beside the variant's measurement")
    return entry, built[0]


def side_by_side(pipe, variant, base, sitting_sd: float | None = None) -> dict[str, Any]:
    """Speed-up of the deployed ``variant`` over the deployed uncompressed ``base``: the two timed interleaved with
    each other in the study's runtime, in one sitting, by the study's protocol (1 / their ratio, with its interval).

    Two separate timings, each against the eager reference, divide two sittings, and a
    runtime's timing drifts between sittings in ways the eager reference does not share
    (10-20 % between two timings minutes apart in ONNX Runtime on a 2-core VM). ``low`` /
    ``high``: where a re-timing in another sitting falls (:func:`~vitsearch.evaluators.latency.stats.predictive`
    with ``sitting_sd``, the spread between sittings); ``sitting_low`` / ``sitting_high``: this sitting's own.
    """
    from vitsearch.evaluators.latency.stats import predictive
    from vitsearch.evaluators.runtimes.deploy import measure

    r = measure(variant, pipe.input_shape, pipe.device, **{**pipe.timing(), "reference": base.as_module(),
                                                          "reference_ms_profile": None, "sitting_sd": None})
    speedup, low, high = 1.0 / r.ratio, 1.0 / r.ratio_high, 1.0 / r.ratio_low
    wide_low, wide_high = predictive(speedup, low, high, sitting_sd, r.confidence) if sitting_sd else (low, high)
    spread = (f"; the interval is where a re-timing in another sitting falls (with the sitting-to-sitting spread "
              f"{100 * sitting_sd:.1f} %)" if sitting_sd else
              "; the interval is this sitting's alone (no sitting-to-sitting spread measured)")
    return {"speedup": speedup, "low": wide_low, "high": wide_high, "sitting_low": low, "sitting_high": high,
            "sitting_sd": sitting_sd, "confidence": r.confidence, "passes": r.n_runs,
            "how": f"the variant timed interleaved with the uncompressed model in {variant.runtime}, one sitting"
                   + spread}


def _paired(view, session, test: dict[str, Any]) -> dict[str, Any]:
    """The exported weights' test drop against the uncompressed model on the same images (fractions)."""
    from vitsearch.search.results.testacc import base_test, paired_vs_base, read_cache

    base, _ = base_test(session, read_cache(view.path, view.spec.latency.runtime, session.data.test_source))
    d = paired_vs_base(test, base)
    if d is None:
        from vitsearch.spaces.errors import DataError

        raise DataError(f"pick: the test results of the variant ({test.get('test_n')} images) and of the "
                        f"uncompressed model ({base.get('test_n')}) cannot be paired")
    return {**d.to_dict(), "base_test_accuracy": base["test_accuracy"], "text": d.text()}


def _without_bits(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "test_correct"}


def _program_writer(deployed, session):
    """``program_of(path) -> note`` for ``write_variant``: the runtime's own file, else a torch.export program."""
    import torch

    from vitsearch.search.results.runtime_export import FILES, write_runtime_file
    from vitsearch.search.results.variant import export_program

    example = torch.randn(*session.input_shape, generator=torch.Generator().manual_seed(1)).to(session.device)
    if deployed.runtime in FILES:  # a program file of the runtime's own format (ONNX, AOTInductor, engine)
        return lambda path: write_runtime_file(deployed, example, Path(path).parent)
    return lambda path: export_program(deployed.module, example, path)


def _provenance(view, row, ev, config, acc, tol, info, remeasure_why) -> dict[str, Any]:
    remeasured = None if pd.isna(row.get("remeasured_ms", float("nan"))) else {
        "median_ms": row["remeasured_ms"], "p10_ms": row["remeasured_p10_ms"], "p90_ms": row["remeasured_p90_ms"],
        "n_runs": int(row["remeasured_runs"]), "source": "measured (re-measured at pick)",
        "low_ms": row.get("remeasured_low_ms"), "high_ms": row.get("remeasured_high_ms"),
        "confidence": row.get("remeasured_confidence"), "protocol": "interleaved with the uncompressed model",
        "median_ms_as_timed": row.get("remeasured_ms_as_timed", row["remeasured_ms"]),
        "basis": "ms = its ratio x the uncompressed model's time of the latency basis (asked.latency_basis)"
        if "remeasured_ms_as_timed" in row else "ms as timed"}
    return {
        "study": view.spec.name, "run_dir": str(view.path.resolve()), "trial": int(row["number"]),
        "base_model": view.spec.model.name, "config": config.to_dict(), "config_summary": config.summary(),
        "accuracy": {"recorded": ev["accuracy"], "top5": ev.get("top5"), "source": ev.get("accuracy_source"),
                     "at_export": acc.top1, "tolerance": tol, "base_accuracy": view.base_accuracy},
        "latency": {"recorded": ev.get("latency"), "remeasured": remeasured, "used_ms": float(row["budget_ms"]),
                    "used_high_ms": _num(row.get("budget_high_ms")), "used_confidence": _num(row.get("budget_confidence")),
                    "used_within": within_probability(row.get("budget_confidence")),
                    "used_source": row["budget_source"], "note": remeasure_why},
        "device_fingerprint": ev.get("fingerprint"), "size_mb": ev.get("size_mb"),
        "size_mb_sparse_storage": ev.get("size_mb_sparse_storage"), "macs": ev.get("macs"),
        "recovery_steps": ev.get("recovery_steps"), "compression": _jsonable(info),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _num(x: Any) -> float | None:
    return None if x is None or x != x else float(x)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
