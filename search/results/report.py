"""``vitsearch report``: one offline HTML file, PNGs, CSV/parquet tables, a Markdown summary.

Every number names how it was obtained: accuracy measured on the val split, latency
measured or predicted on which device (and whether it was re-measured here), size
counted from the stored tensors, MACs analytic.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from vitsearch.evaluators.latency.evaluate import wilson
from vitsearch.search.results.runview import Remeasure, RunView, front_latency, remeasure_front
from vitsearch.search.results.tables import interval_cell

#: the summary's front columns (``vitsearch list`` prints the same ones)
FRONT_COLUMNS = ("trial", "rung", "val acc", "test acc [95% CI]", "latency ms", "interval", "source", "size MB", "MMACs",
                 "config")


def knob_importances(view: RunView) -> tuple[dict[str, dict[str, float]], str]:
    """Optuna's parameter importances per objective, over trials with real (not placeholder) metrics.

    Returns ({objective: {param: importance}}, how they were computed or why not).
    """
    import optuna

    trials = [t for t in view.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if (t.user_attrs.get("evaluation") or {}).get("accuracy") is not None and t.params
              and not t.user_attrs.get("reused_from")]
    varying = {p for t in trials for p in t.params if len({str(u.params.get(p)) for u in trials}) > 1}
    if len(trials) < 4 or not varying:
        return {}, f"not computed: {len(trials)} evaluated trials with varying knobs (need at least 4)"
    out: dict[str, dict[str, float]] = {}
    try:
        evaluator, how = _evaluator()
        for i, (metric, _) in enumerate(view.objectives):
            out[metric] = optuna.importance.get_param_importances(
                _copy_study(trials, i, view.objectives), evaluator=evaluator, params=sorted(varying))
    except Exception as exc:  # importance is context, never worth failing the report over
        return {}, f"not computed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return out, f"{how}, over {len(trials)} completed, accuracy-evaluated, non-duplicate trials"


def _evaluator():
    import optuna

    try:
        import sklearn  # noqa: F401  (fANOVA's random forest)
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator(), "Optuna PED-ANOVA importance"
    return optuna.importance.FanovaImportanceEvaluator(seed=0), "Optuna fANOVA importance (seed 0)"


def _copy_study(trials: list, index: int, objectives: list[tuple[str, str]]):
    """An in-memory single-objective study of ``trials``, valued by their real metric ``index``."""
    import optuna

    metric, direction = objectives[index]
    study = optuna.create_study(direction=direction)
    for t in trials:
        ev = t.user_attrs["evaluation"]
        value = (ev.get("latency") or {}).get("median_ms") if metric == "latency_ms" else ev.get(metric)
        if value is not None:
            study.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
    return study


def nice_budgets(latencies: pd.Series) -> list[float]:
    """Round latency budgets (1-1.5-2-3-5-7 series) spanning the front, for "best under budget" rows."""
    lo, hi = float(latencies.min()), float(latencies.max())
    out = []
    for exp in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 2):
        for m in (1, 1.5, 2, 3, 5, 7):
            b = m * 10.0 ** exp
            if lo * 0.999 <= b <= hi * 1.5:
                out.append(round(b, 6))
    return out or [round(hi, 3)]


def best_under(front: pd.DataFrame, budget: float) -> pd.Series | None:
    """The most accurate front row within ``budget`` with high probability (as pick: interval high end; ties: faster)."""
    ok = front[front.get("budget_high_ms", front["budget_ms"]) <= budget]
    return None if ok.empty else ok.sort_values(["accuracy", "budget_ms"], ascending=[False, True]).iloc[0]


def front_rows(front: pd.DataFrame) -> list[list[str]]:
    """The front as text cells in :data:`FRONT_COLUMNS` order."""
    return [[str(int(r["number"])), _rung_cell(r), f"{r['accuracy']:.2%}", _test_cell(r), f"{r['latency_ms']:.3f}",
             interval_cell(r), str(r["latency_source"]), f"{r['size_mb']:.3f}", f"{r['macs'] / 1e6:.2f}", str(r["summary"])]
            for _, r in front.iterrows()]


def _rung_cell(r) -> str:
    return "-" if pd.isna(r.get("rung")) else f"{int(r['rung'])} ({int(r['recovery_steps'])} steps)"


def _test_cell(r) -> str:
    """Test accuracy with its 95 % Wilson interval, or "-" when not measured."""
    if pd.isna(r.get("test_accuracy", float("nan"))):
        return "-"
    return f"{r['test_accuracy']:.2%} [{r['test_lo']:.1%}, {r['test_hi']:.1%}]"


def markdown_table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    """A GitHub Markdown table (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])


def provenance_lines(view: RunView, check: Remeasure) -> list[str]:
    """How every number in the report was obtained."""
    fp = view.study_fingerprint()
    lat = view.spec.latency
    sources = view.front["latency_source"].value_counts().to_dict() if not view.front.empty else {}
    ev = view.evaluation(int(view.front["number"].iloc[0])) if not view.front.empty else {}
    steps = sorted({int(s) for s in view.frame["recovery_steps"].dropna()})
    rc = view.spec.recovery
    rungs = (f"rungs {list(rc.ladder)} distillation steps, each rung promoting its best 1/{rc.reduction:g} by "
             "non-dominated sorting on its val accuracy and costs; every front point is at the highest rung its "
             "candidate reached (column rung)" if len(rc.ladder) > 1 else
             f"{', '.join(map(str, steps)) or '0'} distillation step(s) before scoring")
    test = view.meta_summary().get("test_split") or "the data's held-out test split"
    return [
        f"accuracy: selected on top-1 measured on {ev.get('accuracy_source', 'the val split')}; reported on "
        f"{test}, never seen by the search, with a 95 % Wilson interval; base model "
        f"{view.spec.model.name} at {_pct(view.base_accuracy)} on val (measured)",
        f"latency: {', '.join(f'{n} {s}' for s, n in sources.items()) or 'none'} on the front; batch {lat.batch_size}, "
        f"{fp.get('threads', '?')} thread(s); measured = timed interleaved with the uncompressed model (chunks of "
        f"{lat.interleave.chunk} passes alternating, until the 95 % bootstrap interval of the ratio is within "
        f"±{lat.interleave.target_halfwidth:.0%} or {lat.interleave.max_seconds:g} s), ms = ratio x the reference's "
        f"ms (basis recorded per trial), its interval widened by the device profile's sitting-to-sitting spread "
        f"of a ratio when the profile measured one; predicted = the profile's predicted ratio x its reference ms, 90 % "
        f"interval; device {fp.get('cpu_model') or fp.get('gpu_name') or '?'} "
        f"(fingerprint {fp.get('fingerprint_id', '?')})",
        f"re-measurement: {check.why}",
        "size: counted from the bytes of every stored tensor of the compressed model (MB = 1e6 bytes)",
        "MACs: analytic, from the config and the base model's dimensions",
        f"recovery: {rungs}",
        "Pareto front: completed, feasible, non-duplicate trials not dominated on "
        + ", ".join(f"{m} ({d})" for m, d in view.objectives),
    ]


def latency_check_summary(check: Remeasure) -> tuple[str, str]:
    """(label of the recorded numbers, one line with the hit rate or repeatability)."""
    t = check.table
    predicted = (t["recorded_source"] == "predicted").all()
    label = "predicted" if predicted else "recorded (measured during search)"
    hits = (t["rel_error"].abs() <= 0.10).mean()
    mape = t["rel_error"].abs().mean()
    what = ("predictor hit rate" if predicted else
            "repeatability (no predicted latencies in this run: search-time measurement vs re-measurement)")
    by = "ratios to the uncompressed model" if "compared" in t and (t["compared"] == "ratio").all() else "milliseconds"
    lo, hi = wilson(int((t["rel_error"].abs() <= 0.10).sum()), len(t))
    inside = ((t["recorded_low_ms"] <= t["remeasured_ms"]) & (t["remeasured_ms"] <= t["recorded_high_ms"])).mean() \
        if "recorded_low_ms" in t and t["recorded_low_ms"].notna().all() else None
    cover = "" if inside is None else f"; the re-measurement lies inside the recorded interval for {inside:.0%}"
    return label, (f"{what}: {hits:.0%} (95 % Wilson {lo:.0%}-{hi:.0%}) of {len(t)} front variants within ±10 % of "
                   f"the interleaved re-measurement (compared as {by}), mean absolute error {mape:.1%}{cover}")


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:.2%}"


def build(view: RunView, out: Path, remeasure: bool = True, progress: bool = True) -> dict[str, Any]:
    """Write the whole report under ``out``; returns the paths written and the re-measure outcome."""
    from vitsearch.search.results import figures
    from vitsearch.search.results.rundir import write_atomic
    from vitsearch.search.results.runview import check_remeasure

    out.mkdir(parents=True, exist_ok=True)
    check = remeasure_front(view, progress=progress) if remeasure else check_remeasure(view)
    if not remeasure and check.done:
        check.done, check.why = False, "not re-measured (--no-remeasure); latencies are as recorded"
    front = _with_test(view, front_latency(view, check))
    view.front = _with_test(view, view.front)
    importances, imp_how = knob_importances(view)
    budgets = {"max_latency_ms": view.spec.constraints.max_latency_ms, "min_accuracy": view.min_accuracy}
    paths: dict[str, Path] = {}
    for name, df in (("trials", view.frame), ("front", front)):
        df.to_parquet(out / f"{name}.parquet", index=False)
        write_atomic(out / f"{name}.csv", df.to_csv(index=False))
        paths[f"{name}_csv"] = out / f"{name}.csv"
    paths["front_png"] = figures.pareto_png(view.frame, view.front, budgets, out / "front.png")
    figs = [("Pareto front", figures.pareto_plotly(view.frame, view.front, budgets))]
    if importances:
        paths["importance_png"] = figures.importance_png(importances, out / "importance.png")
        figs.append(("Knob effects", figures.importance_plotly(importances)))
    check_line = ""
    if check.table is not None and not check.table.empty:
        label, check_line = latency_check_summary(check)
        paths["latency_png"] = figures.latency_check_png(check.table, label, out / "latency_check.png")
        figs.append(("Latency check", figures.latency_check_plotly(check.table, label)))
    md = summary_markdown(view, front, check, check_line, imp_how)
    write_atomic(out / "summary.md", md)
    write_atomic(out / "report.html", render_html(view, front, check, check_line, importances, imp_how, figs))
    paths.update(summary=out / "summary.md", html=out / "report.html")
    return {"paths": paths, "remeasure": check, "front": front}


def summary_markdown(view: RunView, front: pd.DataFrame, check: Remeasure, check_line: str, imp_how: str) -> str:
    """The Markdown summary: front table, best under common budgets, provenance."""
    rows = []
    if not front.empty:
        for b in nice_budgets(front["budget_ms"]):
            r = best_under(front, b)
            rows.append([f"{b:g}", "-" if r is None else str(int(r["number"])),
                         "-" if r is None else f"{r['accuracy']:.2%}",
                         "-" if r is None else f"{r['budget_ms']:.3f} ({r['budget_source']})",
                         "-" if r is None else str(r["summary"])])
    parts = [f"# vitsearch report: study `{view.spec.name}`", "",
             f"Run dir `{view.path}`; {_counts(view)}; {len(view.front)} on the Pareto front.", "", "## Pareto front", "",
             markdown_table(FRONT_COLUMNS, front_rows(view.front)) if not view.front.empty else "(empty)", "",
             "## Best under common latency budgets", "",
             markdown_table(["budget ms", "trial", "accuracy", "latency ms", "config"], rows), "",
             "## How the numbers were obtained", ""]
    parts += [f"- {line}" for line in provenance_lines(view, check)]
    if check_line:
        parts.append(f"- latency check: {check_line}")
    parts.append(f"- knob effects: {imp_how}")
    return "\n".join(parts) + "\n"


def render_html(view, front, check, check_line, importances, imp_how, figs) -> str:
    """One self-contained page: plotly's JavaScript is embedded once, no network needed."""
    esc = html.escape
    body = [f"<h1>vitsearch report: study <code>{esc(view.spec.name)}</code></h1>",
            f"<p>Run dir <code>{esc(str(view.path))}</code>; {esc(_counts(view))}; "
            f"{(view.frame['feasible'] == False).sum()} infeasible; {len(view.front)} on the Pareto front."  # noqa: E712
            + (f" {n} infeasible trial(s) were settled on their predicted or measured latency / size alone, "
               "without accuracy work; the front figure shows them as triangles under the lowest accuracy "
               "shown." if (n := _skipped_count(view.frame)) else "") + "</p>"]
    for i, (title, fig) in enumerate(figs):
        body.append(f"<h2>{esc(title)}</h2>")
        if title == "Knob effects":
            body.append(f"<p>{esc(imp_how)}</p>")
        if title == "Latency check":
            body.append(f"<p>{esc(check_line)}</p>")
        body.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig{i}",
                                config={"displaylogo": False}))
    if not importances:
        body.append(f"<h2>Knob effects</h2><p>{esc(imp_how)}</p>")
    if check.table is None:
        body.append(f"<h2>Latency check</h2><p>{esc(check.why)}</p>")
    cols = ["number", "rung", "recovery_steps", "accuracy", "accuracy_source", "accuracy_first_rung", "test_accuracy",
            "test_lo", "test_hi", "test_n", "latency_ms", "latency_low_ms", "latency_high_ms", "latency_confidence",
            "latency_ratio", "latency_source", "latency_runs", "budget_ms", "budget_high_ms", "budget_source",
            "remeasured_runs", "size_mb", "macs", "summary"]
    body += ["<h2>Pareto front</h2>", front[[c for c in cols if c in front]].to_html(index=False, escape=True)]
    body += ["<h2>How the numbers were obtained</h2><ul>"]
    body += [f"<li>{esc(line)}</li>" for line in provenance_lines(view, check)] + ["</ul>"]
    body += ["<h2>Device fingerprint</h2>", _kv_table(view.study_fingerprint(), "study's device")]
    if check.here:
        body.append(_kv_table(check.here, "this machine"))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vitsearch report {esc(view.spec.name)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")


def _kv_table(d: dict[str, Any], caption: str) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v) if not isinstance(v, str) else v)}"
                   "</td></tr>" for k, v in d.items())
    return f"<table><caption>{html.escape(caption)}</caption>{rows}</table>"


def _counts(view: RunView) -> str:
    """Evaluated / settled / reused / failed / reached each rung, as one sentence."""
    from vitsearch.search.results.tables import counts_line, run_counts

    ladder = view.spec.recovery.ladder
    return counts_line(run_counts(view.frame, len(ladder)), ladder)


def _with_test(view: RunView, front: pd.DataFrame) -> pd.DataFrame:
    """``front`` with test accuracies: measured here when the study's data loads, else as cached by the run."""
    from vitsearch.search.results.testacc import front_test_accuracy, read_cache, with_cached
    from vitsearch.spaces.errors import VitsearchError

    if front.empty:
        return front
    try:
        from vitsearch.search.session import load_session

        return front_test_accuracy(load_session(view.spec), view.path, front)
    except VitsearchError:  # the data or model is not available here: what the run measured
        return with_cached(front, read_cache(view.path, view.spec.latency.runtime))


def _skipped_count(frame) -> int:
    """Trials settled on their cost (over a budget or no gain), never accuracy-evaluated (cheap first)."""
    return int((frame["settled"].notna() & frame["accuracy"].isna()).sum())
