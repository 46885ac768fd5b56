"""The report's latency check as a figure, interactive (plotly) and static (PNG).

It plots what the check's text judges: per front variant, the recorded (predicted or
search-time) latency relative to the re-measurement, in %, against the ±10 % band the
hit rate counts, with the recorded interval as a bar (the text's coverage: the bar
crosses zero). On one ms basis (:mod:`.basis`) that relative difference is the one of
the ratios to the uncompressed model.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vitsearch.search.results.figures import pyplot, save_png


def check_points(table: pd.DataFrame) -> pd.DataFrame:
    """What the latency check judges, per front variant: ``x`` (re-measured speed-up, else ms), ``err`` (recorded
    vs re-measured, %: the same ``rel_error`` the check's text counts within ±10 %) and ``err_low`` /
    ``err_high`` (the recorded interval relative to the re-measurement, %; NaN without one)."""
    speed = table.get("remeasured_speedup")
    by_speed = speed is not None and speed.notna().all()
    out = pd.DataFrame({"number": table["number"], "x": speed if by_speed else table["remeasured_ms"],
                        "err": 100 * table["rel_error"]})
    for end in ("low", "high"):
        col = table.get(f"recorded_{end}_ms")
        out[f"err_{end}"] = float("nan") if col is None else 100 * (pd.to_numeric(col) / table["remeasured_ms"] - 1)
    out.attrs["x_title"] = ("speed-up over the uncompressed model, re-measured here (x)" if by_speed
                            else "re-measured here (ms)")
    return out


def latency_check_plotly(table: pd.DataFrame, label: str):
    """Recorded (predicted or measured) vs re-measured, as the check's relative error, with the ±10 % band."""
    import plotly.graph_objects as go

    p = check_points(table)
    fig = go.Figure()
    fig.add_hrect(y0=-10, y1=10, fillcolor="lightgray", opacity=0.4, line_width=0,
                  annotation_text="±10 %", annotation_position="top right")
    fig.add_hline(y=0, line_color="gray")
    bars = p["err_low"].notna().all()
    fig.add_trace(go.Scatter(
        x=p["x"], y=p["err"], mode="markers+text", name="front variants", text=[f"#{n}" for n in p["number"]],
        textposition="middle right", marker=dict(size=10, color="steelblue"),
        error_y=dict(type="data", array=p["err_high"] - p["err"], arrayminus=p["err"] - p["err_low"],
                     visible=bool(bars), color="steelblue", thickness=1)))
    top = max(15.0, float(pd.concat([p["err"], p["err_low"], p["err_high"]]).abs().max()) * 1.1)
    fig.update_layout(title=f"{label} vs re-measured latency (front): relative difference"
                            + (", bars = recorded interval" if bars else ""),
                      xaxis_title=p.attrs["x_title"], yaxis_title=f"{label.split(' (')[0]} / re-measured - 1 (%)",
                      yaxis_range=[-top, top], template="plotly_white", height=420, showlegend=False)
    return fig


def latency_check_png(table: pd.DataFrame, label: str, path: Path) -> Path:
    """Static latency check (same content as :func:`latency_check_plotly`)."""
    plt = pyplot()
    p = check_points(table)
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    ax.axhspan(-10, 10, color="lightgray", alpha=0.5, label="±10 %")
    ax.axhline(0, c="gray", lw=1)
    bars = p["err_low"].notna().all()
    yerr = [p["err"] - p["err_low"], p["err_high"] - p["err"]] if bars else None
    ax.errorbar(p["x"], p["err"], yerr=yerr, fmt="o", c="steelblue", ms=6, capsize=3, zorder=3,
                label="front variants" + (" (bars: recorded interval)" if bars else ""))
    for _, r in p.iterrows():
        ax.annotate(f"#{int(r['number'])}", (r["x"], r["err"]), xytext=(5, 3), textcoords="offset points", fontsize=8)
    top = max(15.0, float(pd.concat([p["err"], p["err_low"], p["err_high"]]).abs().max()) * 1.1)
    ax.set(xlabel=p.attrs["x_title"], ylabel=f"{label.split(' (')[0]} / re-measured - 1 (%)", ylim=(-top, top),
           title=f"{label} vs re-measured latency")
    ax.legend(fontsize=8)
    return save_png(fig, path)
