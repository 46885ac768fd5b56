"""The report's figures, twice: interactive plotly (HTML) and static matplotlib (PNG).

Each figure is drawn from the same plain inputs (the trial table, the front, the
importances, the latency check), so the HTML and the PNGs show the same thing.
"""

from __future__ import annotations

import math
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
            f"latency {r['latency_ms']:.3f} ms ({r['latency_source']}){_speedup(r, 'speedup')}"
            + (f"<br>re-measured here: {r['remeasured_ms']:.3f} ms{_speedup(r, 'remeasured_speedup')}"
               if _known(r.get("remeasured_ms")) else "")
            + f"<br>size {r['size_mb']:.3f} MB"
            + (f"<br>infeasible: {r['infeasible_reason']}" if isinstance(r.get("infeasible_reason"), str) else "")
            for _, r in df.iterrows()]


def _known(x) -> bool:
    return isinstance(x, (int, float)) and x == x


def _speedup(r, key: str) -> str:
    return f", speed-up x{r[key]:.2f}" if _known(r.get(key)) else ""


def latency_axis(front_ms: pd.Series, others_ms: pd.Series | None = None,
                 budget: float | None = None) -> tuple[str, float, float] | None:
    """(scale, low, high) of the front figure's latency axis, in ms; None (autoscale) without a front.

    The axis spans the front, the other trials ``others_ms`` that lie within
    a factor of 1.25 of the front's ends and the latency budget if it lies that near, with a
    margin; log when that spans more than a factor of 4. Points outside are drawn at the
    axis' edge (:func:`beyond`), so far trials (a slow candidate settled on its cost) do not
    squeeze the front.
    """
    ms = pd.to_numeric(front_ms, errors="coerce").dropna()
    ms = ms[ms > 0]
    if ms.empty:
        return None
    lo, hi = float(ms.min()), float(ms.max())
    candidates = [*pd.to_numeric(pd.Series(others_ms, dtype=float), errors="coerce"), budget or float("nan")]
    near = [float(x) for x in candidates if lo / 1.25 <= x <= hi * 1.25]
    lo, hi = min([lo, *near]), max([hi, *near])
    if hi / lo > 4:
        return "log", lo / 1.15, hi * 1.15
    pad = 0.08 * (hi - lo) if hi > lo else 0.2 * hi
    return "linear", max(lo - pad, 0.0), hi + pad


def _axis_for(g: dict[str, pd.DataFrame], front: pd.DataFrame, budgets: dict[str, Any]):
    others = pd.concat([g[k]["latency_ms"] for k in ("feasible", "infeasible", "skipped")])
    return latency_axis(front["latency_ms"] if not front.empty else pd.Series(dtype=float), others,
                        budgets.get("max_latency_ms"))


def beyond(df: pd.DataFrame, axis: tuple[str, float, float] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows inside the latency axis, rows outside it with ``edge_ms``: where they are drawn, on the edge)."""
    if axis is None or df.empty:
        return df, df.iloc[:0].assign(edge_ms=[])
    _, lo, hi = axis
    out = (df["latency_ms"] < lo) | (df["latency_ms"] > hi)
    return df[~out], df[out].assign(edge_ms=df[out]["latency_ms"].clip(lo, hi))


def _layout_x(axis) -> dict:
    if axis is None:
        return {}
    scale, lo, hi = axis
    return {"xaxis_type": scale, "xaxis_range": [math.log10(lo), math.log10(hi)] if scale == "log" else [lo, hi]}



def pareto_plotly(frame: pd.DataFrame, front: pd.DataFrame, budgets: dict[str, float | None]):
    """Accuracy vs latency: all trials behind, infeasible as crosses, the front coloured by size; the
    latency axis is :func:`latency_axis`, with trials beyond it as triangles on its edge."""
    import plotly.graph_objects as go

    fig = go.Figure()
    g, edge = _groups(frame), []
    axis = _axis_for(g, front, budgets)
    for key, name, marker in (("feasible", "feasible trials", dict(color="lightgray", size=7)),
                              ("infeasible", "infeasible trials", dict(color="crimson", symbol="x", size=8))):
        inside, out = beyond(g[key], axis)
        edge.append(out.assign(y=out["accuracy"], what=name, color=marker["color"]))
        fig.add_trace(go.Scatter(x=inside["latency_ms"], y=inside["accuracy"], mode="markers", name=name,
                                 marker=marker, hovertext=_hover(inside), hoverinfo="text"))
    if not g["skipped"].empty:
        floor = _floor(g, budgets.get("min_accuracy"))
        inside, out = beyond(g["skipped"], axis)
        edge.append(out.assign(y=floor, what="not accuracy-evaluated", color="crimson"))
        fig.add_trace(go.Scatter(x=inside["latency_ms"], y=[floor] * len(inside), mode="markers",
                                 name="over budget, not evaluated (accuracy unknown)",
                                 marker=dict(color="crimson", symbol="triangle-down", size=8, opacity=0.6),
                                 hovertext=_skipped_hover(inside), hoverinfo="text"))
    edge = pd.concat(edge) if edge else pd.DataFrame()
    if not edge.empty:
        symbols = ["triangle-right" if a > b else "triangle-left" for a, b in zip(edge["latency_ms"], edge["edge_ms"])]
        fig.add_trace(go.Scatter(
            x=edge["edge_ms"], y=edge["y"], mode="markers", cliponaxis=False,
            name="beyond the latency axis (at its edge)",
            marker=dict(color=list(edge["color"]), size=9, opacity=0.7, symbol=symbols),
            hovertext=[f"trial {int(r['number'])} ({r['what']}): {r['latency_ms']:.3f} ms, beyond the axis"
                       for _, r in edge.iterrows()], hoverinfo="text"))
    if not front.empty:
        fig.add_trace(go.Scatter(
            x=front["latency_ms"], y=front["accuracy"], mode="lines+markers", name="Pareto front", uid="paretofront",
            line=dict(shape="hv", color="steelblue"), hovertext=_hover(front), hoverinfo="text",
            marker=dict(size=13, color=front["size_mb"], colorscale="Viridis", showscale=True,
                        colorbar=dict(title="size MB"), line=dict(width=1, color="black"))))
    budget = budgets.get("max_latency_ms")
    if budget and _in_axis(budget, axis):
        fig.add_vline(x=budget, line_dash="dash", line_color="orange", annotation_text=f"latency budget {budget:g} ms")
    if budgets.get("min_accuracy") is not None:
        fig.add_hline(y=budgets["min_accuracy"], line_dash="dash", line_color="orange",
                      annotation_text=f"min accuracy {budgets['min_accuracy']:.2%}")
    fig.update_layout(title=_pareto_title(axis, budget), xaxis_title=_AXIS["latency_ms"],
                      yaxis_title=_AXIS["accuracy"], yaxis_tickformat=".0%", template="plotly_white", height=560,
                      legend=dict(orientation="h", yanchor="top", y=-0.15, x=0), **_layout_x(axis))
    return fig


def _in_axis(ms: float, axis) -> bool:
    return axis is None or axis[1] <= ms <= axis[2]


def _pareto_title(axis, budget) -> str:
    title = "Pareto front: accuracy vs latency (colour = size)"
    if axis is not None and axis[0] == "log":
        title += ", log latency axis"
    if budget and axis is not None and budget > axis[2]:
        title += f"; latency budget {budget:g} ms lies right of the axis"
    return title


def importance_plotly(importances: dict[str, dict[str, float]]):
    """One bar group per objective: Optuna's parameter importances."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for objective, values in importances.items():
        fig.add_trace(go.Bar(x=list(values), y=list(values.values()), name=objective))
    fig.update_layout(title="Knob effects: parameter importance per objective", barmode="group",
                      yaxis_title="importance (share)", template="plotly_white", height=420)
    return fig


# ---- PNG (matplotlib, Agg) ---------------------------------------------------------
def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_png(frame: pd.DataFrame, front: pd.DataFrame, budgets: dict[str, Any], path: Path) -> Path:
    """Static Pareto figure (same content and latency axis as :func:`pareto_plotly`)."""
    return save_png(pareto_figure(frame, front, budgets), path)


def pareto_figure(frame: pd.DataFrame, front: pd.DataFrame, budgets: dict[str, Any]):
    """The matplotlib Figure :func:`pareto_png` saves (its axes hold the latency axis' scale and limits)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    g, edge = _groups(frame), []
    axis = _axis_for(g, front, budgets)
    for key, kw in (("feasible", dict(c="lightgray", s=25, label="feasible trials")),
                    ("infeasible", dict(c="crimson", marker="x", s=30, label="infeasible trials"))):
        inside, out = beyond(g[key], axis)
        edge.append(out.assign(y=out["accuracy"], color=kw["c"]))
        if not inside.empty:
            ax.scatter(inside["latency_ms"], inside["accuracy"], **kw)
    if not g["skipped"].empty:
        floor = _floor(g, budgets.get("min_accuracy"))
        inside, out = beyond(g["skipped"], axis)
        edge.append(out.assign(y=floor, color="crimson"))
        if not inside.empty:
            ax.scatter(inside["latency_ms"], [floor] * len(inside), c="crimson", marker="v", s=25, alpha=0.6,
                       label="over budget, not evaluated (accuracy unknown)")
    _edge_png(ax, pd.concat(edge) if edge else pd.DataFrame())
    if not front.empty:
        ax.step(front["latency_ms"], front["accuracy"], where="post", color="steelblue", lw=1)
        sc = ax.scatter(front["latency_ms"], front["accuracy"], c=front["size_mb"], cmap="viridis", s=80,
                        edgecolors="black", zorder=3, label="Pareto front")
        fig.colorbar(sc, ax=ax, label="size (MB)")
        for i, (_, r) in enumerate(front.iterrows()):  # alternate sides: neighbours on a front are close
            ax.annotate(f"#{int(r['number'])}", (r["latency_ms"], r["accuracy"]), textcoords="offset points",
                        xytext=(6, -14) if i % 2 else (-6, 8), ha="left" if i % 2 else "right", fontsize=8)
    budget = budgets.get("max_latency_ms")
    if budget and _in_axis(budget, axis):
        ax.axvline(budget, ls="--", c="orange", label="latency budget")
    if budgets.get("min_accuracy") is not None:
        ax.axhline(budgets["min_accuracy"], ls="--", c="orange", label="min accuracy")
    if axis is not None:
        ax.set_xscale(axis[0])
        ax.set_xlim(axis[1], axis[2])
        plain = plt.matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        if axis[0] == "log":
            ax.xaxis.set_minor_formatter(plain if axis[2] / axis[1] < 10 else plt.matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
    ax.set(xlabel=_AXIS["latency_ms"], ylabel=_AXIS["accuracy"], title=_pareto_title(axis, budget).split(" (")[0])
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def _edge_png(ax, edge: pd.DataFrame) -> None:
    """Trials beyond the latency axis: triangles on its edge, and how far the farthest lies."""
    if edge.empty:
        return
    right = edge["latency_ms"] > edge["edge_ms"]
    for side, marker in ((right, ">"), (~right, "<")):
        if side.any():
            ax.scatter(edge[side]["edge_ms"], edge[side]["y"], c=list(edge[side]["color"]), marker=marker, s=35,
                       alpha=0.7, clip_on=False, zorder=4,
                       label="beyond the latency axis (at its edge)" if marker == ">" or not right.any() else None)
    if right.any():
        ax.annotate(f"{int(right.sum())} trial(s) beyond, up to {edge[right]['latency_ms'].max():.1f} ms \u25b6",
                    (1.0, -0.1), xycoords="axes fraction", ha="right", va="top", fontsize=7, color="dimgray")


def importance_png(importances: dict[str, dict[str, float]], path: Path) -> Path:
    """Static knob-effects bar chart."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    names = sorted({k for v in importances.values() for k in v})
    width = 0.8 / max(1, len(importances))
    for i, (objective, values) in enumerate(importances.items()):
        ax.bar([j + i * width for j in range(len(names))], [values.get(n, 0.0) for n in names], width, label=objective)
    ax.set_xticks([j + width * (len(importances) - 1) / 2 for j in range(len(names))], names, rotation=30,
                  ha="right", fontsize=8)
    ax.set(ylabel="importance (share)", title="Knob effects: parameter importance per objective")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (tight layout) and close it."""
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path
