"""``vitsearch report``: one offline HTML file, PNGs, CSV/parquet tables, a Markdown summary.

Every number names how it was obtained: accuracy measured on the val split, latency
measured or predicted on which device (and whether it was re-measured here), size
counted from the stored tensors, MACs analytic.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from vitsearch.evaluators.accuracy import wilson_interval
from vitsearch.search.results import checkplot, figures
from vitsearch.search.results.basis import MsBasis, rebase
from vitsearch.search.results.importance import knob_importances
from vitsearch.search.results.page import (as_decided, front_section, html_table, kv_table, paired_cell, render_html,
                                           speedup_cell)
from vitsearch.search.results.rundir import write_atomic
from vitsearch.search.results.runview import Remeasure, RunView, check_remeasure, front_latency, remeasure_front
from vitsearch.search.results.sitting import spread_source
from vitsearch.search.results.tables import counts_line, interval_cell, run_counts

#: the summary's front columns (``vitsearch list`` prints the same ones)
FRONT_COLUMNS = ("trial", "rung", "val acc", "test acc [95% CI]", "test drop, paired [95% CI]", "latency ms",
                 "interval", "speed-up", "source", "size MB", "MMACs", "config")


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


#: what the "Best under common latency budgets" table shows, said under its heading
BUDGET_NOTE = ("The most accurate front variant on val top-1 within each budget, its latency interval's high end "
               "within it (as `pick --choose-by top1`; `pick` by default ranks the variants within its budget "
               "by how closely they follow the teacher on val, and may choose another).")


def best_under(front: pd.DataFrame, budget: float) -> pd.Series | None:
    """The most accurate front row on val top-1 within ``budget`` with high probability (as ``pick --choose-by top1``:
    interval high end; ties: faster)."""
    ok = front[front.get("budget_high_ms", front["budget_ms"]) <= budget]
    return None if ok.empty else ok.sort_values(["accuracy", "budget_ms"], ascending=[False, True]).iloc[0]


def front_rows(front: pd.DataFrame) -> list[list[str]]:
    """The front as text cells in :data:`FRONT_COLUMNS` order (a rebased front: its ``speedup`` column,
    :func:`vitsearch.search.results.basis.rebase`; "-" without one)."""
    return [[str(int(r["number"])), _rung_cell(r), f"{r['accuracy']:.2%}", _test_cell(r), paired_cell(r),
             f"{r['latency_ms']:.3f}",
             interval_cell(r), speedup_cell(r), _source_cell(r), f"{r['size_mb']:.3f}",
             f"{r['macs'] / 1e6:.2f}", str(r["summary"])]
            for _, r in front.iterrows()]


def _source_cell(r) -> str:
    """How the latency was obtained, with the timed passes where it was measured ("measured, 304 passes")."""
    runs = r.get("latency_runs")
    return str(r["latency_source"]) + (f", {int(runs)} passes" if isinstance(runs, (int, float)) and runs == runs
                                       and runs > 0 else "")


def device_text(fp: dict) -> str:
    """The device a fingerprint names: "AMD EPYC (AVX512), 1 thread(s)", or the GPU's name."""
    if fp.get("gpu_name"):
        return str(fp["gpu_name"])
    cap = f" ({fp['cpu_capability']})" if fp.get("cpu_capability") else ""
    return f"{fp.get('cpu_model') or fp.get('device') or '?'}{cap}, {fp.get('threads', '?')} thread(s)"


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
    """How every number in the report was obtained (the ms basis itself is stated once, elsewhere)."""
    fp = view.study_fingerprint()
    lat = view.spec.latency
    sources = view.front["latency_source"].value_counts().to_dict() if not view.front.empty else {}
    ev = view.evaluation(int(view.front["number"].iloc[0])) if not view.front.empty else {}
    steps = sorted({int(s) for s in view.frame["recovery_steps"].dropna()})
    rc = view.spec.recovery
    base_precision = view.meta.get("base_precision") or "fp32"  # runs before model.precision existed: fp32
    rungs = (f"rungs {list(rc.ladder)} distillation steps, each rung promoting its best 1/{rc.reduction:g} by "
             "non-dominated sorting on its val accuracy and costs; every front point is at the highest rung its "
             "candidate reached (column rung)" if len(rc.ladder) > 1 else
             f"{', '.join(map(str, steps)) or '0'} distillation step(s) before scoring")
    test = view.meta_summary().get("test_split") or "the data's held-out test split"
    return [
        f"accuracy: selected on top-1 measured on {ev.get('accuracy_source', 'the val split')}; reported on "
        f"{test}, never seen by the search, with a 95 % Wilson interval; base model "
        f"{view.spec.model.name} in {base_precision} at {_pct(view.base_accuracy)} on val (measured)",
        f"latency: {', '.join(f'{n} {s}' for s, n in sources.items()) or 'none'} on the front; batch {lat.batch_size}, "
        f"{fp.get('threads', '?')} thread(s); measured = timed interleaved with the uncompressed model in "
        f"{base_precision} (chunks of "
        f"{lat.interleave.chunk} passes alternating, until the 95 % bootstrap interval of the ratio is within "
        f"±{lat.interleave.target_halfwidth:.0%} or {lat.interleave.max_seconds:g} s), its interval widened by the "
        f"sitting-to-sitting spread of a ratio ({spread_source(view.meta_summary())}); predicted = the "
        f"profile's predicted ratio, 90 % interval; ms as stated at the top (latency basis); device "
        f"{fp.get('cpu_model') or fp.get('gpu_name') or '?'} (fingerprint {fp.get('fingerprint_id', '?')})",
        f"re-measurement: {check.why}",
        "size: counted from the bytes of every stored tensor of the compressed model (MB = 1e6 bytes)",
        "MACs: analytic, from the config and the base model's dimensions",
        f"recovery: {rungs}" + ("" if rc.augment == "none" or rc.ladder[-1] == 0 else
                                 f"; each distillation batch altered by {rc.augment} for teacher and student alike"),
        "Pareto front: completed, feasible, non-duplicate trials not dominated on "
        + ", ".join(f"{m} ({d})" for m, d in view.objectives),
    ]


def latency_check_summary(check: Remeasure) -> tuple[str, str]:
    """(label of the recorded numbers, one line with the hit rate or repeatability).

    ``check.table`` on one ms basis (:func:`.basis.rebase`), so the interval check below
    compares what ratios compare.
    """
    t = check.table
    predicted = (t["recorded_source"] == "predicted").all()
    label = "predicted" if predicted else "recorded (measured during search)"
    hits = (t["rel_error"].abs() <= 0.10).mean()
    mape = t["rel_error"].abs().mean()
    what = ("predictor hit rate" if predicted else
            "repeatability (no predicted latencies in this run: search-time measurement vs re-measurement)")
    by = "ratios to the uncompressed model" if "compared" in t and (t["compared"] == "ratio").all() else "milliseconds"
    lo, hi = wilson_interval(float((t["rel_error"].abs() <= 0.10).mean()), len(t))
    return label, (f"{what}: {hits:.0%} (95 % Wilson {lo:.0%}-{hi:.0%}) of {len(t)} front variants within ±10 % of "
                   f"the interleaved re-measurement (compared as {by}), mean absolute error {mape:.1%}"
                   f"{coverage_text(t)}")


def coverage_text(t) -> str:
    """"; interval coverage: ... k of n (x %; stated 95 %)": recorded intervals holding the re-measurement."""
    if "recorded_low_ms" not in t or t["recorded_low_ms"].isna().all():
        return ""
    known = t[t["recorded_low_ms"].notna()]
    k = int(((known["recorded_low_ms"] <= known["remeasured_ms"]) & (known["remeasured_ms"] <= known["recorded_high_ms"])).sum())
    stated = known["recorded_confidence"].dropna() if "recorded_confidence" in known else []
    level = f"stated {stated.iloc[0]:.0%}" if len(stated) else "stated level not recorded"
    return (f"; interval coverage: the re-measurement lies inside the recorded interval for {k} of {len(known)} "
            f"({k / len(known):.0%}; {level})")


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:.2%}"


def build(view: RunView, out: Path, remeasure: bool = True, progress: bool = True) -> dict[str, Any]:
    """Write the whole report under ``out``, every ms on one basis (:mod:`.basis`); returns the paths
    written, the re-measure outcome, the front as the report shows it and the basis."""
    out.mkdir(parents=True, exist_ok=True)
    check = remeasure_front(view, progress=progress) if remeasure else check_remeasure(view)
    if not remeasure and check.done:
        check.done, check.why = False, "not re-measured (--no-remeasure); latencies are as recorded"
    basis = view.basis
    if check.table is not None:
        check.table = rebase(check.table, basis)
    front = rebase(_with_test(view, front_latency(view, check)), basis)
    view.front = rebase(_with_test(view, view.front), basis)
    view.frame = rebase(view.frame, basis)
    importances, imp_how = knob_importances(view)
    budgets = {"max_latency_ms": view.spec.constraints.max_latency_ms, "min_accuracy": view.min_accuracy}
    paths: dict[str, Path] = {}
    for name, df in (("trials", view.frame), ("front", front)):
        df.to_parquet(out / f"{name}.parquet", index=False)
        write_atomic(out / f"{name}.csv", df.to_csv(index=False))
        paths[f"{name}_csv"] = out / f"{name}.csv"
    paths["front_png"] = figures.pareto_png(view.frame, front, budgets, out / "front.png")
    figs = [("Pareto front", figures.pareto_plotly(view.frame, front, budgets),
             "Latencies as the search recorded them, in the report's ms (a front point's hover adds its "
             "re-measurement); trials beyond the latency axis are drawn as triangles on its edge (hover for "
             "their latency).")]
    if importances:
        paths["importance_png"] = figures.importance_png(importances, out / "importance.png")
        figs.append(("Knob effects", figures.importance_plotly(importances), imp_how))
    check_line = ""
    if check.table is not None and not check.table.empty:
        label, check_line = latency_check_summary(check)
        paths["latency_png"] = checkplot.latency_check_png(check.table, label, out / "latency_check.png")
        figs.append(("Latency check", checkplot.latency_check_plotly(check.table, label), check_line))
    write_atomic(out / "summary.md", summary_markdown(view, front, check, check_line, imp_how, basis))
    write_atomic(out / "report.html", _html(view, front, check, importances, imp_how, figs, basis))
    paths.update(summary=out / "summary.md", html=out / "report.html")
    return {"paths": paths, "remeasure": check, "front": front, "basis": basis}


def budget_rows(front: pd.DataFrame) -> list[list[str]]:
    """"Best under common latency budgets" (the sitting the report decides with) as text cells."""
    rows, decided = [], as_decided(front)
    for b in nice_budgets(front["budget_ms"].dropna()) if front["budget_ms"].notna().any() else []:
        r = best_under(decided, b)
        cells = ["-"] * 5 if r is None else [
            str(int(r["number"])), f"{r['accuracy']:.2%}", speedup_cell(r),
            f"{r['budget_ms']:.3f} (high end {r['budget_high_ms']:.3f})", str(r["summary"])]
        rows.append([f"{b:g}", *cells])
    return rows


def summary_markdown(view: RunView, front: pd.DataFrame, check: Remeasure, check_line: str, imp_how: str,
                     basis: MsBasis) -> str:
    """The Markdown summary: the ms basis, front table, best under common budgets, provenance."""
    sitting = str(front["budget_source"].iloc[0]) if not front.empty else "-"
    parts = [f"# vitsearch report: study `{view.spec.name}`", "",
             f"Run dir `{view.path}`; {_counts(view)}; {len(view.front)} on the Pareto front.", "",
             f"Latency basis: {basis.text()}. Front latencies: {sitting}.", "", "## Pareto front", "",
             markdown_table(FRONT_COLUMNS, front_rows(as_decided(front))) if not front.empty else "(empty)", "",
             "## Best under common latency budgets", "", BUDGET_NOTE, "",
             markdown_table(["budget ms", "trial", "val acc", "speed-up", "latency ms", "config"],
                            budget_rows(front)) if not front.empty else "(empty)", "",
             "## How the numbers were obtained", ""]
    parts += [f"- {line}" for line in provenance_lines(view, check)]
    if check_line:
        parts.append(f"- latency check: {check_line}")
    parts.append(f"- knob effects: {imp_how}")
    return "\n".join(parts) + "\n"


def _html(view, front, check, importances, imp_how, figs, basis: MsBasis) -> str:
    """The page: counts and the ms basis, the figures, the front, provenance, fingerprints."""
    infeasible = int((view.frame["feasible"] == False).sum())  # noqa: E712
    intro = [f"Run dir {view.path}; {_counts(view)}; {infeasible} infeasible; {len(view.front)} on the Pareto front."
             + (f" {n} infeasible trial(s) were settled on their predicted or measured latency / size alone, "
                "without accuracy work; the front figure shows them as triangles under the lowest accuracy "
                "shown (on the latency axis' edge when far)." if (n := _skipped_count(view.frame)) else "")
             + (f" {m} trial(s) used a value the run-start screen found no faster on its part (a slower "
                "precision, or a sparsity without sparse kernels on this device) and were settled without being "
                "built (not timed, not plotted)."
                if (m := _screened_count(view.frame)) else ""),
             f"Latency basis: {basis.text()}."]
    esc = html.escape
    sections = [] if importances else [f"<h2>Knob effects</h2><p>{esc(imp_how)}</p>"]
    if check.table is None:
        sections.append(f"<h2>Latency check</h2><p>{esc(check.why)}</p>")
    sections += front_section(front, view.base_accuracy, view.spec.model.name)
    if not front.empty:
        sections += ["<h2>Best under common latency budgets</h2>",
                     f"<p>{esc(BUDGET_NOTE)}</p>",
                     html_table(["budget ms", "trial", "val acc", "speed-up", "latency ms", "config"],
                                budget_rows(front))]
    sections += ["<h2>How the numbers were obtained</h2><ul>"]
    sections += [f"<li>{esc(line)}</li>" for line in provenance_lines(view, check)] + ["</ul>"]
    sections += ["<h2>Device fingerprint</h2>", kv_table(view.study_fingerprint(), "study's device")]
    if check.here:
        sections.append(kv_table(check.here, "this machine"))
    return render_html(f"vitsearch report: study {view.spec.name}", intro, figs, sections)


def _counts(view: RunView) -> str:
    """Evaluated / settled / reused / failed / reached each rung, as one sentence."""
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
    return int((frame["settled"].notna() & frame["accuracy"].isna() & (frame["latency_source"] != "screened")).sum())


def _screened_count(frame) -> int:
    """Trials settled by the run-start screen (no latency of their own); a reuse of one is counted as reused."""
    fresh = frame["reused_from"].isna() if "reused_from" in frame else True
    return int((frame["settled"].notna() & (frame["latency_source"] == "screened") & fresh).sum())
