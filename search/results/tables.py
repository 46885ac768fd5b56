"""Trial tables and the Pareto front, derived from the Optuna study of a run.

One row per Optuna trial: number, state, feasibility, whether its metrics were reused
from an earlier identical config, the config (JSON and one column per knob), every
metric with its source, durations, worker and error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vitsearch.search.results.rundir import write_atomic

#: user attributes the engine sets on every finished trial
ATTR_CONFIG = "config"
ATTR_EVAL = "evaluation"
ATTR_FEASIBLE = "feasible"
ATTR_INFEASIBLE = "infeasible_reason"
ATTR_REUSED = "reused_from"
ATTR_ERROR = "error"
ATTR_WORKER = "worker"
ATTR_CONSTRAINTS = "constraints"
ATTR_SECONDS = "eval_seconds"
ATTR_TIMING = "eval_timing"  # worker clock: started_at, finished_at (epoch s), cpu_seconds
ATTR_DRIVER = "driver"  # host:pid:start of the driver that asked the trial (owns it while RUNNING)
ATTR_NODE = "node"  # the Ray node that evaluated it: "IP node-id"

COLUMNS = ["number", "state", "feasible", "reused_from", "summary", "accuracy", "top5", "accuracy_source",
           "latency_ms", "latency_p10_ms", "latency_p90_ms", "latency_source", "latency_runs", "latency_device",
           "size_mb", "size_mb_sparse_storage", "macs", "recovery_steps", "eval_seconds", "duration_s",
           "worker", "node", "driver", "infeasible_reason", "error", "config"]


def trial_row(trial) -> dict[str, Any]:
    """One table row of an Optuna FrozenTrial."""
    from vitsearch.spaces import CompressionConfig

    attrs = trial.user_attrs
    ev = attrs.get(ATTR_EVAL) or {}
    lat = ev.get("latency") or {}
    config = attrs.get(ATTR_CONFIG)
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "feasible": attrs.get(ATTR_FEASIBLE),
        "reused_from": attrs.get(ATTR_REUSED),
        "summary": CompressionConfig.from_dict(json.loads(config)).summary() if config else None,
        "accuracy": ev.get("accuracy"),
        "top5": ev.get("top5"),
        "accuracy_source": ev.get("accuracy_source"),
        "latency_ms": lat.get("median_ms"),
        "latency_p10_ms": lat.get("p10_ms"),
        "latency_p90_ms": lat.get("p90_ms"),
        "latency_source": lat.get("source"),
        "latency_runs": lat.get("n_runs"),
        "latency_device": lat.get("device"),
        "size_mb": ev.get("size_mb"),
        "size_mb_sparse_storage": ev.get("size_mb_sparse_storage"),
        "macs": ev.get("macs"),
        "recovery_steps": ev.get("recovery_steps"),
        "eval_seconds": attrs.get(ATTR_SECONDS),
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
        "worker": attrs.get(ATTR_WORKER),
        "node": attrs.get(ATTR_NODE),
        "driver": attrs.get(ATTR_DRIVER),
        "infeasible_reason": attrs.get(ATTR_INFEASIBLE),
        "error": attrs.get(ATTR_ERROR),
        "config": config,
    }
    if config:
        for key, value in CompressionConfig.from_dict(json.loads(config)).knob_columns().items():
            row[f"knob_{key}"] = value
    return row


def trials_frame(study) -> pd.DataFrame:
    """All trials of ``study`` as a DataFrame (fixed leading columns, then knob columns)."""
    trials = study.get_trials(deepcopy=False)
    rows = [trial_row(t) for t in trials]
    _name_retries(trials, rows)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    knob_cols = sorted(c for c in frame.columns if c.startswith("knob_"))
    return frame[COLUMNS + knob_cols]


def _name_retries(trials, rows: list[dict[str, Any]]) -> None:
    """A trial failed because its driver died says which trial asked its parameters again.

    Optuna's retry callback records the link on the new trial only
    (``system_attrs["failed_trial"]`` / ``retry_history``); the failed one cannot be written
    any more once it is FAIL.
    """
    retried_as = {}
    for t in trials:
        history = t.system_attrs.get("retry_history") or []
        if history:
            retried_as[history[-1]] = t.number
    for row in rows:
        if row["state"] == "FAIL" and row["error"] is None and row["number"] in retried_as:
            row["error"] = f"its driver stopped while it ran; asked again as trial {retried_as[row['number']]}"


def write_tables(study, run_dir: Path) -> pd.DataFrame:
    """Write trials.parquet and trials.csv atomically; returns the frame."""
    frame = trials_frame(study)
    tmp = run_dir / ".trials.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    tmp.replace(run_dir / "trials.parquet")
    write_atomic(run_dir / "trials.csv", frame.to_csv(index=False))
    return frame


def pareto_mask(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """Non-dominated rows of ``values`` (n x k); ties (identical rows) are all kept."""
    signed = np.where(maximize, -values, values)  # minimise everything
    keep = np.ones(len(signed), dtype=bool)
    for i in range(len(signed)):
        dominated = np.all(signed <= signed[i], axis=1) & np.any(signed < signed[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def pareto_front(frame: pd.DataFrame, objectives: list[tuple[str, str]]) -> pd.DataFrame:
    """Feasible, completed, evaluated trials on the front; reused duplicates dropped."""
    ok = frame[(frame["state"] == "COMPLETE") & (frame["feasible"] == True) & frame["reused_from"].isna()]  # noqa: E712
    ok = ok.dropna(subset=[m for m, _ in objectives])
    if ok.empty:
        return ok
    values = ok[[m for m, _ in objectives]].to_numpy(dtype=float)
    front = ok[pareto_mask(values, [d == "maximize" for _, d in objectives])]
    return front.sort_values([objectives[1][0] if len(objectives) > 1 else objectives[0][0]])


def front_table(front: pd.DataFrame) -> str:
    """The front as a fixed-width text table (same columns as the Markdown summary)."""
    if front.empty:
        return "(no feasible completed trial yet)"
    head = f"{'trial':>5}  {'accuracy':>8}  {'latency ms':>10}  {'source':<9}  {'size MB':>7}  {'MMACs':>7}  config"
    lines = [head, "-" * len(head)]
    for _, r in front.iterrows():
        lines.append(f"{int(r['number']):>5}  {r['accuracy']:>8.2%}  {r['latency_ms']:>10.3f}  {str(r['latency_source']):<9}  "
                     f"{r['size_mb']:>7.3f}  {r['macs'] / 1e6:>7.2f}  {r['summary']}")
    return "\n".join(lines)
