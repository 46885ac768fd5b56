"""The report's HTML page and the front tables a reader decides with.

The page states the report's ms basis once, shows the figures, then the front with the
columns a choice is made on (trial, config, test accuracy with its interval, accuracy
drop, latency with its interval, speed-up, size); every other column is in ``front.csv``
(linked) and in a collapsed table.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

#: the HTML front table's columns
DECISION_COLUMNS = ("trial", "config", "test acc [95% CI]", "test drop vs uncompressed, paired [95% CI]",
                    "latency ms [interval]", "speed-up [interval]", "size MB")


def as_decided(front: pd.DataFrame) -> pd.DataFrame:
    """``front`` with its latency columns replaced by the sitting the report decides with (``budget_*``)."""
    if "budget_ms" not in front:
        return front
    runs = front.get("latency_runs")
    if "remeasured_runs" in front:  # the passes of the sitting decided with: the re-measurement's where it ran
        runs = front["remeasured_runs"].where(front["remeasured_runs"].notna(), runs)
    return front.assign(latency_ms=front["budget_ms"], latency_low_ms=front.get("budget_low_ms"),
                        latency_high_ms=front["budget_high_ms"], latency_confidence=front.get("budget_confidence"),
                        latency_source=front["budget_source"], speedup=front.get("budget_speedup"), latency_runs=runs)


def latency_cell(r: Any) -> str:
    """``"4.293 [4.010, 4.602] 95%"``, or the point estimate alone without an interval."""
    ms, lo, hi, conf = (r.get(k) for k in ("latency_ms", "latency_low_ms", "latency_high_ms", "latency_confidence"))
    if not _num(lo) or not _num(hi):
        return f"{ms:.3f}"
    return f"{ms:.3f} [{lo:.3f}, {hi:.3f}]" + (f" {round(100 * conf)}%" if _num(conf) else "")


def speedup_cell(r: Any) -> str:
    """``"x1.52 [1.41, 1.63]"``: the speed-up over the uncompressed model in the study's runtime (interval from the
    latency's, widened by the uncompressed model's own where it was timed as a candidate), or "-"."""
    s = r.get("speedup")
    if not _num(s):
        return "-"
    lo, hi, ms = r.get("latency_low_ms"), r.get("latency_high_ms"), r.get("latency_ms")
    if not (_num(lo) and _num(hi) and lo > 0):
        return f"x{s:.2f}"
    wide_lo, wide_hi = (r.get(k) if _num(r.get(k)) else 1.0 for k in ("speedup_low_factor", "speedup_high_factor"))
    return f"x{s:.2f} [{s * ms / hi * wide_lo:.2f}, {s * ms / lo * wide_hi:.2f}]"


def paired_cell(r: Any) -> str:
    """``"+0.40 pt [-0.12, +0.95]"``: the test drop against the uncompressed model on the same images, or "-"."""
    d = r.get("paired_drop")
    if not _num(d):
        return "-"
    return f"{100 * d:+.2f} pt [{100 * r['paired_drop_low']:+.2f}, {100 * r['paired_drop_high']:+.2f}]"


def decision_rows(front: pd.DataFrame, base_accuracy: float | None) -> list[list[str]]:
    """The front (as decided, :func:`as_decided`) as text cells in :data:`DECISION_COLUMNS` order."""
    rows = []
    for _, r in front.iterrows():
        test = "-" if not _num(r.get("test_accuracy")) else \
            f"{r['test_accuracy']:.2%} [{r['test_lo']:.1%}, {r['test_hi']:.1%}]"
        drop = paired_cell(r)
        if drop == "-" and base_accuracy is not None:  # no paired test figure yet: the val difference, said so
            drop = f"{100 * (base_accuracy - r['accuracy']):+.2f} pt (val, unpaired)"
        rows.append([str(int(r["number"])), str(r["summary"]), test, drop, latency_cell(r), speedup_cell(r),
                     f"{r['size_mb']:.3f}"])
    return rows


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and x == x


def html_table(header, rows: list[list[str]], cls: str = "") -> str:
    """A plain HTML table of text cells (escaped)."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def front_section(front: pd.DataFrame, base_accuracy: float | None, base_name: str) -> list[str]:
    """The front's HTML: the decision table, what its latency is, the rest behind a link and a <details>."""
    decided = as_decided(front)
    sitting = decided["latency_source"].iloc[0] if not decided.empty else "-"
    base = "?" if base_accuracy is None else f"{base_accuracy:.2%}"
    return ["<h2>Front variants</h2>",
            f"<p>Latency: {html.escape(str(sitting))}, in the report's ms; speed-up over the uncompressed model "
            "in the study's runtime, its interval from the latency's. Test drop: the test top-1 points the "
            "variant loses against the uncompressed "
            f"{html.escape(base_name)} on the same test images, with its paired 95 % interval (a variant not yet "
            f"measured on test shows its val difference from {html.escape(base_name)}'s {base} val, marked "
            "unpaired; the study's accuracy constraint judges val).</p>",
            html_table(DECISION_COLUMNS, decision_rows(decided, base_accuracy), "front"),
            "<p>Every column (val accuracy, rung, distillation steps, the search-time and re-measured latencies "
            "as timed, MACs, ...): <a href='front.csv'>front.csv</a>; every trial: "
            "<a href='trials.csv'>trials.csv</a>.</p>",
            "<details><summary>All front columns</summary><div style='overflow-x:auto'>",
            front.to_html(index=False, escape=True), "</div></details>"]


def render_html(title: str, intro: list[str], figs: list[tuple[str, Any, str]], sections: list[str]) -> str:
    """One self-contained page: ``intro`` paragraphs (text), each figure (title, plotly figure, caption)
    with plotly's JavaScript embedded once (no network needed), then ``sections`` (HTML)."""
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>"] + [f"<p>{esc(p)}</p>" for p in intro]
    for i, (name, fig, caption) in enumerate(figs):
        body.append(f"<h2>{esc(name)}</h2>" + (f"<p>{esc(caption)}</p>" if caption else ""))
        body.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig{i}",
                                config={"displaylogo": False}))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body + sections)}</body></html>")


def kv_table(d: dict[str, Any], caption: str) -> str:
    """A two-column table of ``d`` (values JSON unless text)."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v) if not isinstance(v, str) else v)}"
                   "</td></tr>" for k, v in d.items())
    return f"<table><caption>{html.escape(caption)}</caption>{rows}</table>"
