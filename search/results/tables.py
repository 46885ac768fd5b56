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
ATTR_SETTLED = "settled"  # why a candidate was settled without accuracy work: "cost budget", "no gain"
ATTR_DRIVER = "driver"  # host:pid:start of the driver that asked the trial (owns it while RUNNING)
ATTR_NODE = "node"  # the Ray node that evaluated it: "IP node-id"
ATTR_DETERMINISTIC = "config_determined_error"  # True on a FAIL whose error follows from its config: not asked again
ATTR_REPEATS = "repeats_failure_of"  # on a trial settled unevaluated as a repeat of such a failure: that trial's number

#: study user attributes of the rungs (a trial is told once, at its first rung; later rungs live here)
STUDY_RUNG = "rung"  # rung:N:K -> the record of trial N at rung K (evaluation, feasible, ...)
STUDY_PROMOTED = "promoted"  # promoted:N:K -> {"at": when, "driver": who} trial N was promoted to rung K
STUDY_RUNG_FAILED = "rung_failed"  # rung_failed:N:K -> the error of that promotion


def rung_attrs(study_attrs: dict) -> tuple[dict[int, dict[int, dict]], set[tuple[int, int]], dict[tuple[int, int], str]]:
    """(records by trial number and rung >= 1, promotions issued, failed promotions) from a study's user attrs."""
    records: dict[int, dict[int, dict]] = {}
    issued: set[tuple[int, int]] = set()
    failed: dict[tuple[int, int], str] = {}
    for key, value in study_attrs.items():
        kind, _, rest = key.partition(":")
        if kind not in (STUDY_RUNG, STUDY_PROMOTED, STUDY_RUNG_FAILED) or rest.count(":") != 1:
            continue
        number, rung = (int(x) for x in rest.split(":"))
        if kind == STUDY_RUNG:
            records.setdefault(number, {})[rung] = value
        elif kind == STUDY_PROMOTED:
            issued.add((number, rung))
        else:
            failed[(number, rung)] = value
    return records, issued, failed


def latency_records(study) -> list[dict[str, Any]]:
    """Every trial's recorded latency (``evaluation["latency"]`` at the highest rung it reached; {} if none)."""
    rungs = rung_attrs(study.user_attrs)[0]
    out = []
    for t in study.get_trials(deepcopy=False):
        later = rungs.get(t.number)
        ev = later[max(later)].get("evaluation") if later else t.user_attrs.get("evaluation")
        out.append((ev or {}).get("latency") or {})
    return out


COLUMNS = ["number", "state", "feasible", "reused_from", "settled", "rung", "summary", "accuracy", "top5",
           "accuracy_first_rung", "accuracy_source",
           "latency_ms", "latency_p10_ms", "latency_p90_ms", "latency_low_ms", "latency_high_ms",
           "latency_confidence", "latency_ratio", "latency_source", "latency_runs", "latency_device",
           "size_mb", "size_mb_sparse_storage", "macs", "recovery_steps", "recovery_threads", "eval_seconds", "duration_s",
           "worker", "node", "driver", "infeasible_reason", "error", "repeats_failure_of", "config"]


def trial_row(trial, rungs: dict[int, dict] | None = None) -> dict[str, Any]:
    """One table row of an Optuna FrozenTrial, at the highest rung it reached (``rungs``: its records of rung >= 1)."""
    from vitsearch.spaces import CompressionConfig

    attrs = dict(trial.user_attrs)
    first = attrs.get(ATTR_EVAL) or {}
    rung = 0 if trial.state.name == "COMPLETE" else None
    if rungs:  # a later rung's record replaces the first rung's evaluation and feasibility
        rung = max(rungs)
        attrs.update({k: v for k, v in rungs[rung].items() if k in (ATTR_EVAL, ATTR_FEASIBLE, ATTR_INFEASIBLE)})
    ev = attrs.get(ATTR_EVAL) or {}
    lat = ev.get("latency") or {}
    config = attrs.get(ATTR_CONFIG)
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "feasible": attrs.get(ATTR_FEASIBLE),
        "reused_from": attrs.get(ATTR_REUSED),
        "settled": attrs.get(ATTR_SETTLED),
        "rung": rung,
        "summary": CompressionConfig.from_dict(json.loads(config)).summary() if config else None,
        "accuracy": ev.get("accuracy"),
        "top5": ev.get("top5"),
        "accuracy_first_rung": first.get("accuracy"),
        "accuracy_source": ev.get("accuracy_source"),
        "latency_ms": lat.get("median_ms"),
        "latency_p10_ms": lat.get("p10_ms"),
        "latency_p90_ms": lat.get("p90_ms"),
        "latency_low_ms": lat.get("low_ms"),
        "latency_high_ms": lat.get("high_ms"),
        "latency_confidence": lat.get("confidence"),
        "latency_ratio": lat.get("ratio"),
        "latency_source": lat.get("source"),
        "latency_runs": lat.get("n_runs"),
        "latency_device": lat.get("device"),
        "size_mb": ev.get("size_mb"),
        "size_mb_sparse_storage": ev.get("size_mb_sparse_storage"),
        "macs": ev.get("macs"),
        "recovery_steps": ev.get("recovery_steps"),
        "recovery_threads": ev.get("recovery_threads"),  # None before they were recorded (2026-12-07)
        "eval_seconds": attrs.get(ATTR_SECONDS),
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
        "worker": attrs.get(ATTR_WORKER),
        "node": attrs.get(ATTR_NODE),
        "driver": attrs.get(ATTR_DRIVER),
        "infeasible_reason": attrs.get(ATTR_INFEASIBLE),
        "error": attrs.get(ATTR_ERROR),
        "repeats_failure_of": attrs.get(ATTR_REPEATS),
        "config": config,
    }
    if config:
        for key, value in CompressionConfig.from_dict(json.loads(config)).knob_columns().items():
            row[f"knob_{key}"] = value
    return row


def trials_frame(study) -> pd.DataFrame:
    """All trials of ``study`` as a DataFrame (fixed leading columns, then knob columns)."""
    trials = study.get_trials(deepcopy=False)
    records = rung_attrs(study.user_attrs)[0]
    rows = [trial_row(t, records.get(t.number)) for t in trials]
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


def eligible(frame: pd.DataFrame, objectives: list[tuple[str, str]]) -> pd.DataFrame:
    """Feasible, completed trials with every objective measured; reused duplicates dropped: what may be on a front."""
    ok = frame[(frame["state"] == "COMPLETE") & (frame["feasible"] == True) & frame["reused_from"].isna()]  # noqa: E712
    return ok.dropna(subset=[m for m, _ in objectives])


def pareto_front(frame: pd.DataFrame, objectives: list[tuple[str, str]]) -> pd.DataFrame:
    """The :func:`eligible` trials on the front, judged on the values as timed (as the search judged them: its
    rungs finish that front to the top rung), by latency; :func:`~vitsearch.search.results.basis.in_basis_order`
    orders them on a run's ms basis."""
    ok = eligible(frame, objectives)
    if ok.empty:
        return ok
    values = ok[[m for m, _ in objectives]].to_numpy(dtype=float)
    front = ok[pareto_mask(values, [d == "maximize" for _, d in objectives])]
    return front.sort_values([objectives[1][0] if len(objectives) > 1 else objectives[0][0]])


def front_table(front: pd.DataFrame) -> str:
    """The front as a fixed-width text table: accuracy on val (which selected it) and, where measured, on test."""
    if front.empty:
        return "(no feasible completed trial yet)"
    test = "test_accuracy" in front
    head = (f"{'trial':>5}  {'rung':>4}  {'val acc':>7}  " + (f"{'test acc [95% CI]':<24}  " if test else "")
            + f"{'latency ms':>10}  {'interval':<20}  {'source':<9}  {'size MB':>7}  {'MMACs':>7}  config")
    lines = [head, "-" * len(head)]
    for _, r in front.iterrows():
        cell = ""
        if test:
            cell = (f"{r['test_accuracy']:.2%} [{r['test_lo']:.1%}, {r['test_hi']:.1%}]"
                    if pd.notna(r.get("test_accuracy")) else "-")
            cell = f"{cell:<24}  "
        lines.append(f"{int(r['number']):>5}  {_rung(r):>4}  {r['accuracy']:>7.2%}  {cell}{r['latency_ms']:>10.3f}  "
                     f"{interval_cell(r):<20}  {str(r['latency_source']):<9}  {r['size_mb']:>7.3f}  {r['macs'] / 1e6:>7.2f}  {r['summary']}")
    return "\n".join(lines)


def interval_cell(row: Any) -> str:
    """``"[1.351, 1.432] 95%"``: a table row's latency interval, or "no interval" (burst / older runs)."""
    lo, hi, conf = (row.get(k) for k in ("latency_low_ms", "latency_high_ms", "latency_confidence"))
    if lo is None or hi is None or lo != lo or hi != hi:
        return "no interval"
    return f"[{lo:.3f}, {hi:.3f}]" + (f" {round(100 * conf)}%" if conf == conf and conf else "")


def fastest_text(front: pd.DataFrame) -> str:
    """The front's fastest latency with its interval and source, for the progress line."""
    if front.empty or "latency_ms" not in front or front["latency_ms"].isna().all():
        return "fastest n/a"
    r = front.loc[front["latency_ms"].idxmin()]
    return f"fastest {r['latency_ms']:.3f} ms {interval_cell(r)} {r['latency_source']}"


def _rung(r) -> str:
    return "-" if pd.isna(r.get("rung")) else str(int(r["rung"]))


def run_counts(frame: pd.DataFrame, rungs: int = 1) -> dict[str, Any]:
    """What happened to the candidates: evaluated, settled on cost (predicted / measured / no gain), reused, ..."""
    fresh = frame["reused_from"].isna()
    settled = frame["settled"].notna() & fresh
    done = frame[(frame["state"] == "COMPLETE") & fresh]
    repeats = frame["repeats_failure_of"].notna() if "repeats_failure_of" in frame else pd.Series(False, frame.index)
    return {
        "evaluated": len(done),
        "settled_on_predicted_cost": int((settled & (frame["latency_source"] == "predicted")).sum()),
        "settled_on_measured_cost": int((settled & ~frame["latency_source"].isin(["predicted", "screened"])).sum()),
        "settled_screened": int((settled & (frame["latency_source"] == "screened")).sum()),
        "settled_no_gain": int((settled & (frame["settled"] == "no gain")).sum()),
        "reused": int((~fresh).sum()),
        "failed": int((frame["state"] == "FAIL").sum()),
        "repeated_failures": int(repeats.sum()),
        "duplicates_in_flight": int(((frame["state"] == "PRUNED") & frame["settled"].isna() & fresh & ~repeats).sum()),
        "infeasible": int((frame["feasible"] == False).sum()),  # noqa: E712
        "reached_rung": [int((done["rung"] >= k).sum()) for k in range(rungs)],
    }


def counts_line(c: dict[str, Any], steps: tuple[int, ...] | list[int]) -> str:
    """The counts as one sentence (end of run, report)."""
    reached = ", ".join(f"{n} at rung {k} ({s} steps)" for k, (n, s) in enumerate(zip(c["reached_rung"], steps)))
    screened = (f", {c['settled_screened']} by the run-start screen" if c.get("settled_screened")
                else "")
    return (f"{c['evaluated']} evaluated ({reached}); settled without accuracy work: "
            f"{c['settled_on_predicted_cost']} on predicted cost, {c['settled_on_measured_cost']} on measured cost"
            f"{screened} ({c['settled_no_gain']} of them no gain over the uncompressed model); {c['reused']} reused "
            "duplicates, "
            f"{c['failed']} failed" + (f" ({c['repeated_failures']} repeats of a config that failed for good, "
                                       "not evaluated again)" if c.get("repeated_failures") else ""))
