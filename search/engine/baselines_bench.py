"""Running ``bench-search --baselines``: vitsearch's time-budgeted searches and the hand recipes, side by side.

Per seed: one real ``vitsearch run`` with ``search.time_budget_minutes = M`` (a fresh
process, as :mod:`.fidelity_bench` runs one), then each recipe of :mod:`.baselines` in
this process for the same M minutes. Everything is written to ``OUT/bench_baselines.json``
after each step, so an interrupted benchmark keeps what it measured.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from vitsearch.search.engine.baselines import RECIPES, front_quality, run_recipe, vitsearch_front


def parse_recipes(text: str | None) -> tuple[str, ...]:
    """``--recipes``: comma-separated recipe names, or 'none'; None: every recipe."""
    if text is None:
        return tuple(RECIPES)
    if text.strip() == "none":
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))  # in order, once each
    bad = [n for n in names if n not in RECIPES]
    if bad or not names:
        from vitsearch.spaces.errors import ConfigError

        raise ConfigError(f"--recipes: unknown recipe {(bad or [text])[0]!r}; accepted: {', '.join(RECIPES)}, "
                          "comma-separated, or 'none'")
    return names


def run_baselines_bench(study, minutes: float, n_seeds: int, out: Path, progress: bool = True,
                        first_seed: int = 0, recipes: tuple[str, ...] = tuple(RECIPES)) -> dict[str, Any]:
    """vitsearch against the hand ``recipes`` (default: all) at equal wall time, seeds ``first_seed`` ..
    ``first_seed + n_seeds - 1``; the summary (also ``out/bench_baselines.json``)."""
    from vitsearch.search.engine.fidelity_bench import _cpu_name, _one_run, _reference, check_args, fidelity_spec
    from vitsearch.search.results.testacc import base_test
    from vitsearch.search.session import load_session
    from vitsearch.search.study import load_study, study_to_yaml

    spec = load_study(study)
    check_args(spec, ["rungs"] if len(spec.recovery.ladder) > 1 else [], minutes, n_seeds, None, out)
    if not isinstance(first_seed, int) or first_seed < 0:
        from vitsearch.spaces.errors import ConfigError

        raise ConfigError(f"--first-seed: must be an integer >= 0, got {first_seed}")
    seeds = list(range(first_seed, first_seed + n_seeds))
    session = load_session(spec)
    if session.data.test is None:
        from vitsearch.spaces.errors import DataError

        raise DataError(f"data: {session.data.name} has no test split; the benchmark scores fronts on test")
    ref = _reference(spec, session)
    base, _ = base_test(session, {})
    for sub in ("runs", "studies", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {"vitsearch": [], **{name: [] for name in recipes}}
    started = time.time()

    def save() -> dict[str, Any]:
        summary = summarise(spec, minutes, seeds, ref, base, results, time.time() - started, _cpu_name())
        (out / "bench_baselines.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    for seed in seeds:
        name = f"vitsearch-seed{seed}"
        study_file = out / "studies" / f"{name}.yaml"
        study_file.write_text(study_to_yaml(fidelity_spec(spec, "rungs", minutes, seed, None)))
        if progress:
            print(f"bench-search: {name}: a {minutes:g}-minute search ...", file=sys.stderr, flush=True)
        code, wall = _one_run(study_file, out / "runs" / name, out / "logs" / f"{name}.log")
        record: dict[str, Any] = {"seed": seed, "exit_code": code, "wall_seconds": round(wall, 1)}
        if code == 0:
            front, _ = vitsearch_front(out / "runs" / name, spec.latency.runtime)
            record.update(front=front, **front_quality(front, ref, base))
        results["vitsearch"].append(record)
        save()
        for recipe in recipes:
            run = run_recipe(session, recipe, minutes, seed, progress)
            results[recipe].append({**run, **front_quality(run["front"], ref, base)})
            save()
    return save()


def _stats(values: list[float]) -> dict[str, Any] | float | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values),
            "max": max(values), "n": len(values)}


def _mean(x: Any) -> float | None:
    return x["mean"] if isinstance(x, dict) else x


def summarise(spec, minutes: float, seeds: list[int], ref: dict, base: dict, results: dict[str, list[dict]],
              seconds: float, cpu: str) -> dict[str, Any]:
    """Per method: hypervolume (a number, or mean/std over seeds), fastest within X points, best at half latency."""
    hv = {name: _stats([r.get("hypervolume") for r in runs]) for name, runs in results.items() if runs}
    recipes = {n: _mean(v) for n, v in hv.items() if n != "vitsearch" and _mean(v) is not None}
    best = max(recipes, key=recipes.get, default=None)
    ours = _mean(hv.get("vitsearch"))
    half = {name: _stats([r.get("best_test_accuracy_at_half_latency") for r in runs])
            for name, runs in results.items() if runs}
    within = {name: [r.get("fastest_within") for r in runs] for name, runs in results.items() if runs}
    strip = lambda runs: [{k: v for k, v in r.items() if k not in ("points", "front")} for r in runs]  # noqa: E731
    return {"study": spec.name, "wall_minutes": minutes, "seeds": list(seeds), "reference_point": ref,
            "base_test_accuracy": base["test_accuracy"], "hypervolume": hv,
            "recipes": [n for n in results if n != "vitsearch"],
            "best_recipe": best, "ratio_vs_best_recipe": (ours / recipes[best]) if best and ours else None,
            "best_test_accuracy_at_half_latency": half, "fastest_within": within,
            "goal": "vitsearch >= 1.2x the best recipe's hypervolume, and more accurate at 0.5x the latency",
            "runs": {name: strip(runs) for name, runs in results.items()},
            "fronts": {name: [r.get("front") for r in runs] for name, runs in results.items()},
            "seconds": round(seconds, 1), "device": spec.device, "cpu": cpu,
            "what": "test-accuracy hypervolume of the val-selected front (latency as ratio to the uncompressed "
                    "model, measured); fastest within X points: the paired 95 % upper bound of the test drop"}


def format_baselines(s: dict[str, Any]) -> str:
    """The summary as a text table."""
    lines = [f"{'method':<12} {'hypervolume':>12} {'best acc @0.5x':>15} {'fastest within 1 pt':>20} "
             f"{'within 2 pt':>12}"]
    for name, hv in s["hypervolume"].items():
        w = (s["fastest_within"].get(name) or [None])[0] or {}
        cell = lambda key: f"x{w[key]['speedup']:.2f}" if w.get(key) else "-"  # noqa: E731
        half = _mean(s["best_test_accuracy_at_half_latency"].get(name))
        lines.append(f"{name:<12} {_mean(hv) or 0:>12.5f} {(f'{half:.2%}' if half is not None else '-'):>15} "
                     f"{cell('1 point'):>20} {cell('2 point'):>12}")
    ratio = s.get("ratio_vs_best_recipe")
    lines.append((f"vitsearch vs the best recipe run ({s['best_recipe']}): " if s.get("best_recipe") else
                  "vitsearch alone (no recipe run): ")
                 + (f"{ratio:.2f}x the hypervolume" if ratio is not None else "no ratio")
                 + f"; {s['wall_minutes']:g} minutes each, device {s['device']} ({s['cpu']})")
    return "\n".join(lines)
