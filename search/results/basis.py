"""One millisecond basis for a whole report.

A latency is measured as a ratio to the uncompressed model, timed interleaved with it;
its milliseconds are that ratio times *some* time of the uncompressed model: the one in
the device profile, or the one timed beside the candidate in that very measurement
("reference now"), which moves with the machine's state. Two measurements of one variant,
minutes apart, then differ in ms by the reference's drift as well as by the ratio's.

A report therefore picks one reference time (:func:`report_basis`) and writes every ms
as ``ratio x that time`` (:func:`rebase`): the trial table, the front, the re-measurement.
Rows without a ratio (a plain burst measurement) keep their ms as timed. The speed-up,
``1 / ratio``, is the figure that compares across sittings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

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

    def text(self) -> str:
        """The sentence a report states once."""
        if self.reference_ms is None:
            return f"ms as timed ({self.how}); no speed-up can be given"
        return (f"every ms in this report = ratio to the uncompressed model x the uncompressed model's time of "
                f"{self.reference_ms:.3f} ms ({self.how}); speed-up = 1 / ratio")


def report_basis(records: list[dict]) -> MsBasis:
    """The basis for a run whose trials recorded the latency ``records`` (each trial's ``evaluation["latency"]``).

    The device profile's reference time when the run's latencies used one (the most common,
    should a profile have been refitted during the run); else the median of the reference
    times measured beside the candidates during the search.
    """
    with_ratio = [r for r in records if r and r.get("ratio") is not None]
    profile = [float(r["reference_ms_profile"]) for r in with_ratio if r.get("reference_ms_profile")]
    if profile:
        value, _ = Counter(profile).most_common(1)[0]
        return MsBasis(value, "its time in the device profile")
    now = [float(r["reference_ms_now"]) for r in with_ratio if r.get("reference_ms_now")]
    if now:
        return MsBasis(float(pd.Series(now).median()),
                       f"its median over the {len(now)} times it was measured beside a candidate during the search")
    return MsBasis(None, "this run recorded no ratio to the uncompressed model")


def study_basis(study) -> MsBasis:
    """The basis of a run's Optuna ``study``: :func:`report_basis` of every trial's recorded latency (what the
    closing table, its progress bar, ``list``, ``report`` and ``pick`` all state ms on)."""
    return report_basis(latency_records(study))


def rebase(df: pd.DataFrame, basis: MsBasis) -> pd.DataFrame:
    """``df`` with every ms column of :data:`RATIO_MS` rewritten as ratio x ``basis`` (where the row has a
    ratio), the budget columns recomputed from them, and speed-up columns added.

    ``<ms column>_as_timed`` keeps each original point estimate. Adds ``speedup`` (from
    ``latency_ratio``) and, with a re-measurement, ``remeasured_speedup``.
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
        speed = 1.0 / ratio
        if ratio_col == "latency_ratio":
            out["speedup"] = speed
        elif ratio_col == "remeasured_ratio":
            out["remeasured_speedup"] = speed
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
