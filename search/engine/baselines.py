"""``vitsearch bench-search STUDY --baselines``: vitsearch's front against what a user would do by hand.

Each hand recipe sweeps one or two knobs the way a user tries them without a search:

* **depth**: drop blocks (keep depth-1, depth-2, ... down to half);
* **tome**: ToMe-style merging, the same number r of tokens merged in every block (r sweep);
* **mlp**: uniform structured pruning of every MLP (share of hidden channels removed);
* **int8**: int8 linears alone (MLP, then attention and MLP), in the study's runtime;
* **depth+mlp**: the two knobs together on a small grid (the two-knob hand combination).

Every recipe model gets the study's top-rung distillation steps and is built, timed and
scored by the study's own pipeline (:mod:`vitsearch.evaluators.pipeline`), in sweep order,
until the same wall time vitsearch's search gets (``--wall-minutes``) is spent. A recipe's
front is selected on val, as vitsearch's is; each front point is then measured on the
test split, which neither saw. Quality, for both: the hypervolume of (test accuracy,
latency ratio to the uncompressed model) with the fidelity benchmark's reference point
(:mod:`.fidelity_bench`), the fastest variant within 1 and 2 points (paired: the 95 %
upper bound of its test drop, :mod:`vitsearch.evaluators.paired`), and the best test
accuracy at half the uncompressed latency.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

#: budgets of the "fastest within" columns, in points of test accuracy (paired upper bound)
WITHIN_POINTS = (1.0, 2.0)
#: the latency ratio at which fronts are compared point to point ("dominates at 0.5x")
HALF = 0.5


def _depth(dims) -> list[dict]:
    return [{"depth": {"keep": k}} for k in range(dims.depth - 1, max(dims.depth // 2, 1) - 1, -1)]


def _tome(dims) -> list[dict]:
    """r tokens merged in every block while one bipartite step can (r <= half the tokens left); r ~ 3-12 % of N."""
    out = []
    for r in sorted({max(1, round(f * dims.num_patches)) for f in (0.03, 0.05, 0.08, 0.12)}):
        n, shares = dims.num_patches, {}
        for block in range(dims.depth):
            if r > n // 2:
                break
            shares[str(block)] = (n - r) / n
            n -= r
        if shares:
            out.append({"tokens": {"method": "merge", "schedule": shares}})
    return out


def _mlp(dims) -> list[dict]:
    return [{"sparsity": {"mlp": f"structured:{p}"}} for p in (0.25, 0.5, 0.625, 0.75)]


def _int8(dims) -> list[dict]:
    return [{"precision": {"mlp": "int8"}}, {"precision": {"attn": "int8", "mlp": "int8"}}]


def _depth_mlp(dims) -> list[dict]:
    keeps = [k for k in (dims.depth - 1, dims.depth - 2, max(dims.depth // 2, 1)) if k >= 1]
    return [{"depth": {"keep": k}, "sparsity": {"mlp": f"structured:{p}"}} for k in keeps for p in (0.25, 0.5)]


#: recipe name -> the configs it tries, in the order a user would (mild first)
RECIPES: dict[str, Callable[[Any], list[dict]]] = {
    "depth": _depth, "tome": _tome, "mlp": _mlp, "int8": _int8, "depth+mlp": _depth_mlp}


def recipe_configs(name: str, dims, space_check: Callable[[Any], str | None] | None = None,
                   base_precision: str = "fp32") -> list[Any]:
    """The recipe's configs for a model of ``dims`` deployed in ``base_precision`` (those the runtime refuses left out)."""
    from vitsearch.spaces import CompressionConfig

    configs = [CompressionConfig.from_dict(c).on_base(base_precision) for c in RECIPES[name](dims)]
    return [c for c in configs if space_check is None or space_check(c) is None]


def run_recipe(session, name: str, minutes: float, seed: int, progress: bool = True) -> dict[str, Any]:
    """Evaluate recipe ``name`` until ``minutes`` of wall time are spent; its points, val front and test accuracy."""
    from dataclasses import replace

    from vitsearch.spaces.vit.dims import VitDims

    pipe = session.pipeline
    pipe = replace(pipe, distill={**pipe.distill, "seed": seed})
    steps = pipe.ladder[-1]
    configs = recipe_configs(name, VitDims.of(session.base), lambda c: _refused(session, c), session.base_precision)
    deadline, spent, points, base = time.monotonic() + minutes * 60.0, [], [], {}
    for config in configs:
        if spent and time.monotonic() + sum(spent) / len(spent) > deadline:
            break  # the next model would overrun the wall time
        t0 = time.monotonic()
        points.append(_point(session, pipe, config, steps, base))
        spent.append(time.monotonic() - t0)
        if progress:
            print(f"bench-search: {name}: {config.summary()}: val {points[-1]['val_accuracy']:.2%}, latency ratio "
                  f"{points[-1]['latency_ratio']:.3f}", file=sys.stderr, flush=True)
    front = val_front(points)
    return {"recipe": name, "seed": seed, "steps": steps, "tried": len(points), "of": len(configs),
            "seconds": round(sum(spent), 1), "points": points, "front": front}


def _refused(session, config) -> str | None:
    from vitsearch.evaluators.runtimes.support import check_config
    from vitsearch.spaces.errors import VitsearchError

    try:
        check_config(session.spec.latency.runtime, str(session.device), config)
    except VitsearchError as exc:
        return str(exc)
    return None


def _point(session, pipe, config, steps: int, base: dict[str, float]) -> dict[str, Any]:
    """One recipe model: distilled, timed (ratio to the uncompressed model in the study's runtime), scored on val
    and on test.

    The ratio is the interleaved measurement's (to the eager model: outside eager divided by the uncompressed
    program's own, timed once per recipe, ``base["ratio"]``); without one (``latency.interleave`` off) the
    latency over the uncompressed program's, timed once per recipe (``base["ms"]``).
    """
    costs = pipe.costs(config)
    prepared = pipe.recover(config, steps)
    program = pipe.build(prepared, config) if pipe.runtime.changes_numerics(config) else None
    val, _ = pipe.accuracy(prepared, config, session.data.val, f"val split of {session.data.name}", program)
    test, _ = pipe.accuracy(prepared, config, session.data.test, f"test split of {session.data.name}", program)
    lat = costs["latency"]
    if lat.get("ratio"):
        if "ratio" not in base:  # 1 in eager, where the interleaved reference is the uncompressed model itself
            base["ratio"] = 1.0 if pipe.runtime.is_reference else (
                pipe.costs(pipe.reference)["latency"].get("ratio") or 1.0)
        ratio = lat["ratio"] / base["ratio"]
    else:
        if "ms" not in base:
            base["ms"] = pipe.costs(pipe.reference)["latency"]["median_ms"]
        ratio = lat["median_ms"] / base["ms"]
    return {"config": config.to_dict(), "summary": config.summary(), "val_accuracy": val.top1,
            "test_accuracy": test.top1, "test_n": test.n, "test_correct": test.correct,
            "latency_ratio": float(ratio), "latency_ms": lat["median_ms"], "latency_source": lat["source"]}


def val_front(points: list[dict]) -> list[dict]:
    """The points no other point beats on val accuracy and latency ratio together (as the search selects)."""
    def beaten(p, q):
        return (q["val_accuracy"] >= p["val_accuracy"] and q["latency_ratio"] <= p["latency_ratio"]
                and (q["val_accuracy"] > p["val_accuracy"] or q["latency_ratio"] < p["latency_ratio"]))
    return [p for p in points if not any(beaten(p, q) for q in points if q is not p)]


def front_quality(front: list[dict], ref: dict, base: dict) -> dict[str, Any]:
    """Hypervolume, fastest within X points (paired upper bound) and the best test accuracy at half latency."""
    from vitsearch.search.engine.fidelity_bench import front_hypervolume
    from vitsearch.search.results.testacc import paired_vs_base

    drops = [paired_vs_base(p, base) for p in front]
    within: dict[str, Any] = {}
    for x in WITHIN_POINTS:
        ok = [p for p, d in zip(front, drops) if d is not None and 100 * d.high <= x]
        best = min(ok, key=lambda p: p["latency_ratio"], default=None)
        within[f"{x:g} point"] = None if best is None else {
            "speedup": 1.0 / best["latency_ratio"], "summary": best.get("summary"),
            "test_accuracy": best["test_accuracy"]}
    at_half = [p["test_accuracy"] for p in front if p["latency_ratio"] <= HALF and p["test_accuracy"] is not None]
    return {"hypervolume": front_hypervolume(front, ref), "fastest_within": within,
            "best_test_accuracy_at_half_latency": max(at_half, default=None)}


def vitsearch_front(run_dir: Path, runtime: str | None = None) -> tuple[list[dict], dict | None]:
    """A finished run's val-selected front with test accuracy and per-image results; and the run's base entry."""
    from vitsearch.search.engine.fidelity_bench import front_points

    points = front_points(run_dir, runtime)
    cache_file = run_dir / "test_accuracy.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    for p in points:
        entry = cache.get(f"{p['number']}:{p['rung']}", {})
        p.update(test_correct=entry.get("test_correct"), test_n=entry.get("test_n"))
    return points, cache.get("base")
