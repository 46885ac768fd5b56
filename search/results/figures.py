"""The report's figures, twice: interactive plotly (HTML) and static matplotlib (PNG).

Each figure is drawn from the same plain inputs (the trial table, the front, the
importances, the latency check), so the HTML and the PNGs show the same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

_AXIS = {"accuracy": "top-1 accuracy", "latency_ms": "latency (ms)", "size_mb": "size (MB)", "macs": "MACs"}


def _groups(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Completed trials with both plotted metrics, split into feasible and infeasible; plus
    ``skipped``: settled on their (predicted) latency or size - over a budget or no gain over the
    uncompressed model - never accuracy-evaluated (Optuna state PRUNED)."""
    done = frame[frame["latency_ms"].notna()]
    scored = done[(done["state"] == "COMPLETE") & done["accuracy"].notna()]
    return {"feasible": scored[scored["feasible"] == True],  # noqa: E712
            "infeasible": scored[scored["feasible"] != True],  # noqa: E712
            "skipped": done[done["settled"].notna() & done["accuracy"].isna()]}


def _floor(groups: dict[str, pd.DataFrame], min_accuracy: float | None = None) -> float:
    """Where skipped trials sit: under the lowest plotted accuracy and the accuracy budget (they have none)."""
    lows = [g["accuracy"].min() for k, g in groups.items() if k != "skipped" and not g.empty]
    lows += [min_accuracy] if min_accuracy is not None else []
    return (min(lows) if lows else 1.0) - 0.02


def _skipped_hover(df: pd.DataFrame) -> list[str]:
    return [f"trial {int(r['number'])}<br>{r['summary']}<br>not accuracy-evaluated: {r['infeasible_reason']}"
            for _, r in df.iterrows()]


def _hover(df: pd.DataFrame) -> list[str]:
    return [f"trial {int(r['number'])}<br>{r['summary']}<br>accuracy {r['accuracy']:.2%} (val, rung {r.get('rung')}, "
            f"{r.get('recovery_steps')} distillation steps)<br>"
            f"latency {r['latency_ms']:.3f} ms ({r['latency_source']})<br>size {r['size_mb']:.3f} MB"
            + (f"<br>infeasible: {r['infeasible_reason']}" if isinstance(r.get("infeasible_reason"), str) else "")
            for _, r in df.iterrows()]


def pareto_plotly(frame: pd.DataFrame, front: pd.DataFrame, budgets: dict[str, float | None]):
    """Accuracy vs latency: all trials behind, infeasible as crosses, the front coloured by size."""
    import plotly.graph_objects as go

    fig = go.Figure()
    g = _groups(frame)
    fig.add_trace(go.Scatter(x=g["feasible"]["latency_ms"], y=g["feasible"]["accuracy"], mode="markers",
                             name="feasible trials", marker=dict(color="lightgray", size=7),
                             hovertext=_hover(g["feasible"]), hoverinfo="text"))
    fig.add_trace(go.Scatter(x=g["infeasible"]["latency_ms"], y=g["infeasible"]["accuracy"], mode="markers",
                             name="infeasible trials", marker=dict(color="crimson", symbol="x", size=8),
                             hovertext=_hover(g["infeasible"]), hoverinfo="text"))
    if not g["skipped"].empty:
        floor = _floor(g, budgets.get("min_accuracy"))
        fig.add_trace(go.Scatter(x=g["skipped"]["latency_ms"], y=[floor] * len(g["skipped"]), mode="markers",
                                 name="over budget, not evaluated (accuracy unknown)",
                                 marker=dict(color="crimson", symbol="triangle-down", size=8, opacity=0.6),
                                 hovertext=_skipped_hover(g["skipped"]), hoverinfo="text"))
    if not front.empty:
        fig.add_trace(go.Scatter(
            x=front["latency_ms"], y=front["accuracy"], mode="lines+markers", name="Pareto front",
            line=dict(shape="hv", color="steelblue"), hovertext=_hover(front), hoverinfo="text",
            marker=dict(size=13, color=front["size_mb"], colorscale="Viridis", showscale=True,
                        colorbar=dict(title="size MB"), line=dict(width=1, color="black"))))
    if budgets.get("max_latency_ms"):
        fig.add_vline(x=budgets["max_latency_ms"], line_dash="dash", line_color="orange",
                      annotation_text=f"latency budget {budgets['max_latency_ms']:g} ms")
    if budgets.get("min_accuracy") is not None:
        fig.add_hline(y=budgets["min_accuracy"], line_dash="dash", line_color="orange",
                      annotation_text=f"min accuracy {budgets['min_accuracy']:.2%}")
    fig.update_layout(title="Pareto front: accuracy vs latency (colour = size)", xaxis_title=_AXIS["latency_ms"],
                      yaxis_title=_AXIS["accuracy"], yaxis_tickformat=".0%", template="plotly_white", height=560,
                      legend=dict(orientation="h", yanchor="top", y=-0.15, x=0))
    return fig


def importance_plotly(importances: dict[str, dict[str, float]]):
    """One bar group per objective: Optuna's parameter importances."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for objective, values in importances.items():
        fig.add_trace(go.Bar(x=list(values), y=list(values.values()), name=objective))
    fig.update_layout(title="Knob effects: parameter importance per objective", barmode="group",
                      yaxis_title="importance (share)", template="plotly_white", height=420)
    return fig


def latency_check_plotly(table: pd.DataFrame, label: str):
    """Recorded (predicted or measured) vs re-measured latency, with the ±10 % band."""
    import plotly.graph_objects as go

    hi = float(max(table["recorded_ms"].max(), table["remeasured_ms"].max())) * 1.1
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", name="equal", line=dict(color="gray")))
    for f, name in ((1.1, "+10 %"), (0.9, "-10 %")):
        fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi * f], mode="lines", name=name,
                                 line=dict(color="lightgray", dash="dot")))
    fig.add_trace(go.Scatter(x=table["remeasured_ms"], y=table["recorded_ms"], mode="markers", name="front variants",
                             text=[f"trial {n}" for n in table["number"]], marker=dict(size=10, color="steelblue")))
    fig.update_layout(title=f"{label} vs re-measured latency (front)", xaxis_title="re-measured here (ms)",
                      yaxis_title=f"{label} (ms)", template="plotly_white", height=420)
    return fig


# ---- PNG (matplotlib, Agg) ---------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_png(frame: pd.DataFrame, front: pd.DataFrame, budgets: dict[str, Any], path: Path) -> Path:
    """Static Pareto figure (same content as :func:`pareto_plotly`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    g = _groups(frame)
    ax.scatter(g["feasible"]["latency_ms"], g["feasible"]["accuracy"], c="lightgray", s=25, label="feasible trials")
    ax.scatter(g["infeasible"]["latency_ms"], g["infeasible"]["accuracy"], c="crimson", marker="x", s=30,
               label="infeasible trials")
    if not g["skipped"].empty:
        floor = _floor(g, budgets.get("min_accuracy"))
        ax.scatter(g["skipped"]["latency_ms"], [floor] * len(g["skipped"]), c="crimson", marker="v", s=25,
                   alpha=0.6, label="over budget, not evaluated (accuracy unknown)")
    if not front.empty:
        ax.step(front["latency_ms"], front["accuracy"], where="post", color="steelblue", lw=1)
        sc = ax.scatter(front["latency_ms"], front["accuracy"], c=front["size_mb"], cmap="viridis", s=80,
                        edgecolors="black", zorder=3, label="Pareto front")
        fig.colorbar(sc, ax=ax, label="size (MB)")
        for i, (_, r) in enumerate(front.iterrows()):  # alternate sides: neighbours on a front are close
            ax.annotate(f"#{int(r['number'])}", (r["latency_ms"], r["accuracy"]), textcoords="offset points",
                        xytext=(6, -14) if i % 2 else (-6, 8), ha="left" if i % 2 else "right", fontsize=8)
    if budgets.get("max_latency_ms"):
        ax.axvline(budgets["max_latency_ms"], ls="--", c="orange", label="latency budget")
    if budgets.get("min_accuracy") is not None:
        ax.axhline(budgets["min_accuracy"], ls="--", c="orange", label="min accuracy")
    ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
    ax.set(xlabel=_AXIS["latency_ms"], ylabel=_AXIS["accuracy"], title="Pareto front: accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def importance_png(importances: dict[str, dict[str, float]], path: Path) -> Path:
    """Static knob-effects bar chart."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    names = sorted({k for v in importances.values() for k in v})
    width = 0.8 / max(1, len(importances))
    for i, (objective, values) in enumerate(importances.items()):
        ax.bar([j + i * width for j in range(len(names))], [values.get(n, 0.0) for n in names], width, label=objective)
    ax.set_xticks([j + width * (len(importances) - 1) / 2 for j in range(len(names))], names, rotation=30,
                  ha="right", fontsize=8)
    ax.set(ylabel="importance (share)", title="Knob effects: parameter importance per objective")
    ax.legend(fontsize=8)
    return _save(fig, path)


def latency_check_png(table: pd.DataFrame, label: str, path: Path) -> Path:
    """Static recorded vs re-measured latency plot."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    hi = float(max(table["recorded_ms"].max(), table["remeasured_ms"].max())) * 1.1
    ax.plot([0, hi], [0, hi], c="gray", label="equal")
    ax.fill_between([0, hi], [0, hi * 0.9], [0, hi * 1.1], color="lightgray", alpha=0.5, label="±10 %")
    ax.scatter(table["remeasured_ms"], table["recorded_ms"], c="steelblue", s=40, zorder=3, label="front variants")
    for _, r in table.iterrows():
        ax.annotate(f"#{int(r['number'])}", (r["remeasured_ms"], r["recorded_ms"]), xytext=(4, 4),
                    textcoords="offset points", fontsize=8)
    ax.set(xlabel="re-measured here (ms)", ylabel=f"{label} (ms)", xlim=(0, hi), ylim=(0, hi),
           title=f"{label} vs re-measured latency")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path
