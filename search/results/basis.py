"""One millisecond basis for a whole report.

A latency is measured as a ratio to the uncompressed model, timed interleaved with it;
its milliseconds are that ratio times *some* time of the uncompressed model: the one in
the device profile, or the one timed beside the candidate in that very measurement
("reference now"), which moves with the machine's state. Two measurements of one variant,
minutes apart, then differ in ms by the reference's drift as well as by the ratio's.

A report therefore picks one reference time (:func:`report_basis`) and writes every ms
as ``ratio x that time`` (:func:`rebase`): the trial table, the front, the re-measurement.
Rows without a ratio (a plain burst measurement) keep their ms as timed. The speed-up (in
eager ``1 / ratio``) is the figure that compares across sittings.

In eager the interleaved reference *is* the uncompressed model as deployed. In another
runtime (ONNX Runtime, torch.compile) the reference is still the eager model, so a
candidate's ratio says how much faster it is than the uncompressed model *in eager*; its
speed-up over the uncompressed model in the study's own runtime is the uncompressed
program's ratio (timed there as a candidate, trial 0 where the space holds it, else at the
run's start) over the candidate's (:attr:`MsBasis.uncompressed_ratio`): ONNX Runtime runs the
uncompressed built-in model about twice as fast as eager does, so ``1 / ratio`` would claim
twice the speed-up.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from vitsearch.search.results.tables import latency_records

#: ms columns rebased with a row's ratio column: {ratio column: [ms column, ...]}; the first ms
#: column is the point estimate the ratio belongs to
RATIO_MS = {
    "latency_ratio": ["latency_ms", "latency_low_ms", "latency_high_ms", "latency_p10_ms", "latency_p90_ms"],
    "remeasured_ratio": ["remeasured_ms", "remeasured_low_ms", "remeasured_high_ms", "remeasured_p10_ms",
                         "remeasured_p90_ms"],
    "recorded_ratio": ["recorded_ms", "recorded_low_ms", "recorded_high_ms"],
}


@dataclass(frozen=True)
class MsBasis:
    """The uncompressed model's time every ms of a report is a multiple of (None: no ratios, ms as timed)."""

    reference_ms: float | None
    how: str  # where that time comes from
    #: the runtime the ratios' candidates ran in; in another than eager the reference is the eager model
    runtime: str = "eager"
    #: the uncompressed model's ratio in ``runtime`` (1 in eager) with its interval; None: not measured
    uncompressed_ratio: float | None = 1.0
    uncompressed_interval: tuple[float, float] | None = None
    uncompressed_how: str = "timed as trial 0"

    def text(self) -> str:
        """The sentence a report states once."""
        if self.reference_ms is None:
            return f"ms as timed ({self.how}); no speed-up can be given"
        if is_reference_runtime(self.runtime):
            return (f"every ms in this report = ratio to the uncompressed model x the uncompressed model's time of "
                    f"{self.reference_ms:.3f} ms ({self.how}); speed-up = 1 / ratio")
        timed = (f"every ms in this report = ratio to the uncompressed model in eager PyTorch (timed beside each "
                 f"candidate) x its time of {self.reference_ms:.3f} ms ({self.how})")
        if self.uncompressed_ratio is None:
            return (f"{timed}; no speed-up over the uncompressed model in {self.runtime} can be given (this run "
                    f"recorded no ratio of it there)")
        ratio = f"{self.uncompressed_ratio:.3f}"
        if self.uncompressed_interval:
            ratio += f" [{self.uncompressed_interval[0]:.3f}, {self.uncompressed_interval[1]:.3f}]"
        return (f"{timed}; speed-up over the uncompressed model in {self.runtime} = its ratio, {ratio} "
                f"({self.uncompressed_ratio * self.reference_ms:.3f} ms, {self.uncompressed_how}), / the variant's")

    def speedup(self, ratio):
        """Speed-up over the uncompressed model in the study's runtime of a variant at ``ratio`` (a number or a
        Series; NaN where not known)."""
        return (self.uncompressed_ratio if self.uncompressed_ratio is not None else float("nan")) / ratio


def report_basis(records: list[dict], uncompressed: list[dict] = (), run_start_ratio: float | None = None) -> MsBasis:
    """The basis for a run whose trials recorded the latency ``records`` (each trial's ``evaluation["latency"]``);
    ``uncompressed``: the records of its trials of the uncompressed model, else ``run_start_ratio``, its ratio
    timed at the run's start (where the runtime is not eager, what a speed-up in that runtime is over).

    The device profile's reference time when the run's latencies used one (the most common,
    should a profile have been refitted during the run); else the median of the reference
    times measured beside the candidates during the search.
    """
    with_ratio = [r for r in records if r and r.get("ratio") is not None]
    runtime = _runtime(with_ratio)
    profile = [float(r["reference_ms_profile"]) for r in with_ratio if r.get("reference_ms_profile")]
    now = [float(r["reference_ms_now"]) for r in with_ratio if r.get("reference_ms_now")]
    if profile:
        value, _ = Counter(profile).most_common(1)[0]
        basis = MsBasis(value, "its time in the device profile", runtime)
    elif now:
        basis = MsBasis(float(pd.Series(now).median()),
                        f"its median over the {len(now)} times it was measured beside a candidate during the search",
                        runtime)
    else:
        basis = MsBasis(None, "this run recorded no ratio to the uncompressed model", runtime)
    if is_reference_runtime(runtime):
        return basis
    timed = [r for r in uncompressed if r and r.get("ratio") is not None and r.get("ratio_low") is not None]
    if timed:
        first = timed[0]  # trial 0: one program, one measurement of it in the runtime
        return replace(basis, uncompressed_ratio=float(first["ratio"]), uncompressed_how=(
            "timed as trial 0" if first.get("source", "measured") == "measured" else f"{first['source']} as trial 0"),
            uncompressed_interval=(float(first["ratio_low"]), float(first["ratio_high"])))
    if run_start_ratio is not None and run_start_ratio == run_start_ratio:
        return replace(basis, uncompressed_ratio=float(run_start_ratio), uncompressed_how="timed at the run's start")
    return replace(basis, uncompressed_ratio=None)


def is_reference_runtime(name: str) -> bool:
    """Whether the runtime ``name`` deploys the eager model every ratio is timed against (its ratios are then to
    the uncompressed model as deployed); an unknown name is not."""
    from vitsearch.evaluators.runtimes import RUNTIMES

    return name in RUNTIMES and bool(RUNTIMES[name].is_reference)


def _runtime(records: list[dict]) -> str:
    """The runtime the candidates' ratios were timed in (eager where a record does not say)."""
    named = Counter(str(r.get("runtime") or "eager") for r in records)
    return named.most_common(1)[0][0] if named else "eager"


def study_basis(study, run_start_ratio: float | None = None) -> MsBasis:
    """The basis of a run's Optuna ``study``: :func:`report_basis` of every trial's recorded latency (what the
    closing table, its progress bar, ``list``, ``report`` and ``pick`` all state ms on); ``run_start_ratio``:
    the uncompressed model's ratio timed at the run's start (summary.json's ``reference.latency_ratio``)."""
    records = latency_records(study)
    if is_reference_runtime(_runtime([r for r in records if r and r.get("ratio") is not None])):
        return report_basis(records)
    return report_basis(records, uncompressed_records(study, records), run_start_ratio)


def uncompressed_records(study, records: list[dict]) -> list[dict]:
    """The latency records (``records``, one per trial of ``study``, in order) of its trials of the uncompressed
    model (in its base precision)."""
    return [record for trial, record in zip(study.get_trials(deepcopy=False), records)
            if record and is_uncompressed_config(trial.user_attrs.get("config"))]


def is_uncompressed_config(config: Any) -> bool:
    """Whether a trial's recorded config (JSON text or a dict) is the uncompressed model in its base precision
    (False for none, or one unreadable)."""
    from vitsearch.spaces import CompressionConfig

    if not config or not isinstance(config, (str, dict)):
        return False
    try:
        return CompressionConfig.from_dict(json.loads(config) if isinstance(config, str) else config).is_uncompressed()
    except (ValueError, TypeError):
        return False


def rebase(df: pd.DataFrame, basis: MsBasis) -> pd.DataFrame:
    """``df`` with every ms column of :data:`RATIO_MS` rewritten as ratio x ``basis`` (where the row has a
    ratio), the budget columns recomputed from them, and speed-up columns added.

    ``<ms column>_as_timed`` keeps each original point estimate. Adds ``speedup`` (from
    ``latency_ratio``: :meth:`MsBasis.speedup`) and, with a re-measurement, ``remeasured_speedup``; outside eager,
    ``speedup_low_factor`` / ``speedup_high_factor``, what the uncompressed model's own interval widens a
    speed-up's by.
    """
    out = df.copy()
    for ratio_col, ms_cols in RATIO_MS.items():
        if ratio_col not in out or ms_cols[0] not in out:
            continue
        ratio = pd.to_numeric(out[ratio_col], errors="coerce")
        if basis.reference_ms is not None:
            factor = (ratio * basis.reference_ms / pd.to_numeric(out[ms_cols[0]], errors="coerce")).fillna(1.0)
            out[f"{ms_cols[0]}_as_timed"] = out[ms_cols[0]]
            for col in ms_cols:
                if col in out:
                    out[col] = pd.to_numeric(out[col], errors="coerce") * factor
        speed = basis.speedup(ratio)
        if ratio_col == "latency_ratio":
            out["speedup"] = speed
        elif ratio_col == "remeasured_ratio":
            out["remeasured_speedup"] = speed
    if basis.uncompressed_interval and basis.uncompressed_ratio:  # a speed-up's interval carries the denominator's too
        out["speedup_low_factor"] = basis.uncompressed_interval[0] / basis.uncompressed_ratio
        out["speedup_high_factor"] = basis.uncompressed_interval[1] / basis.uncompressed_ratio
    if "budget_ms" in out:
        _budget(out)
    return out


def _budget(out: pd.DataFrame) -> None:
    """``budget_*``: the sitting a report decides with (the re-measurement where there is one), rebased."""
    prefix = "remeasured" if "remeasured_ms" in out else "latency"
    ms = out[f"{prefix}_ms"]
    out["budget_ms"] = ms
    out["budget_low_ms"] = out.get(f"{prefix}_low_ms", ms)
    out["budget_high_ms"] = out.get(f"{prefix}_high_ms", ms).fillna(ms)
    out["budget_speedup"] = out.get("remeasured_speedup" if prefix == "remeasured" else "speedup")


def in_basis_order(front: pd.DataFrame, basis: MsBasis) -> pd.DataFrame:
    """``front``'s rows, unchanged, ordered by their latency on ``basis`` (ratio x one uncompressed time, as every
    table states ms), fastest first: a table never lists a row after a slower one."""
    if front.empty or "latency_ms" not in front:
        return front
    return front.iloc[rebase(front, basis)["latency_ms"].to_numpy().argsort(kind="stable")]
