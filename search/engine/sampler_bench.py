"""``vitsearch bench-search``: do the samplers beat random search, and by how much?

Runs in-process Optuna studies (no Ray: the comparison is about the samplers) with
NSGA-II, TPE and random at equal trial counts over several seeds, on the study's real
search space and real evaluations. Each distinct config is evaluated once (accuracy on
val, latency measured on this device) and cached in a JSON file, so all samplers and
seeds see identical numbers and the benchmark stays affordable. Quality is the
hypervolume of the feasible front (accuracy up, latency down) after every trial. The
samplers see the study's accuracy-drop and latency budgets as Optuna constraints, as in
`vitsearch run` (there, cost-infeasible candidates also get placeholder objective values);
random search ignores them, as it does there.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def hypervolume_2d(points: np.ndarray, ref: tuple[float, float]) -> float:
    """Hypervolume dominated by ``points`` (both objectives minimised) up to ``ref``."""
    pts = points[(points[:, 0] < ref[0]) & (points[:, 1] < ref[1])]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.argsort(pts[:, 0])]
    area, best_f2 = 0.0, ref[1]
    for i, (f1, f2) in enumerate(pts):
        best_f2 = min(best_f2, f2)
        next_f1 = pts[i + 1, 0] if i + 1 < len(pts) else ref[0]
        area += (next_f1 - f1) * (ref[1] - best_f2)
    return area


class EvalCache:
    """Evaluations by canonical config JSON, persisted after every new one."""

    def __init__(self, path: Path, session, predictor=None):
        self.path, self.session, self.predictor = path, session, predictor
        self.data: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}
        self.new = 0

    def get(self, config) -> dict:
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in self.data:
            metrics, _ = self.session.evaluate_staged(config, recovery_steps=0, predictor=self.predictor)
            self.data[key] = {"accuracy": metrics["accuracy"], "latency_ms": metrics["latency"]["median_ms"],
                              "size_mb": metrics["size_mb"]}
            self.new += 1
            self.path.write_text(json.dumps(self.data))
        if self.predictor is not None:  # deterministic and 0.05 ms: always the current predictor's
            return {**self.data[key], "latency_ms": self.predictor.predict(config).median_ms}
        return self.data[key]


def run_bench(study, trials: int, seeds: list[int], samplers: list[str], out: Path, progress: bool = True) -> dict:
    """Hypervolume after each trial for every (sampler, seed); returns and writes the summary."""
    import optuna
    from tqdm.auto import tqdm

    from vitsearch.search.engine.plan import make_sampler
    from vitsearch.search.session import load_session, study_predictor
    from vitsearch.spaces import CompressionConfig, SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    session = load_session(study)
    spec = session.spec
    space = SearchSpace.from_spec(spec.space, session.base, device=str(session.device))
    out.mkdir(parents=True, exist_ok=True)
    predictor = study_predictor(session)
    source = ("predicted by the study's latency predictor" if predictor is not None
              else "measured once per config on this device")
    cache = EvalCache(out / f"eval_cache_{'predicted' if predictor is not None else 'measured'}.json", session,
                      predictor)
    base = cache.get(CompressionConfig())
    drop = spec.constraints.max_accuracy_drop if spec.constraints.max_accuracy_drop is not None else 0.05
    min_acc = base["accuracy"] - drop
    ref = (-min_acc, base["latency_ms"] * 1.2)  # minimise (-accuracy, latency)
    curves: dict[str, dict[int, list[float]]] = {s: {} for s in samplers}
    bar = tqdm(total=len(samplers) * len(seeds) * trials, desc="bench-search", unit="trial", disable=not progress)
    started = time.time()
    for name in samplers:
        for seed in seeds:
            local = spec.model_copy(update={"search": spec.search.model_copy(update={"sampler": name, "seed": seed})})
            study_ = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(local, trials))
            points, curve = [], []
            for _ in range(trials):
                trial = study_.ask(space.distributions())
                m = cache.get(space.config_from_params(trial.params))
                # the study's budgets as Optuna constraints, as `vitsearch run` sets them
                if spec.constraints.max_accuracy_drop is not None:
                    trial.set_constraint("accuracy", min_acc - m["accuracy"])
                if spec.constraints.max_latency_ms is not None:
                    trial.set_constraint("latency_ms", m["latency_ms"] - spec.constraints.max_latency_ms)
                study_.tell(trial, [m["accuracy"], m["latency_ms"]])
                points.append((-m["accuracy"], m["latency_ms"]))
                curve.append(hypervolume_2d(np.array(points), ref))
                bar.update()
            curves[name][seed] = curve
    bar.close()
    summary = _summarise(curves, trials, ref, base, cache, time.time() - started, session)
    summary["latency_source"] = source + ", cached"
    (out / "bench_search.json").write_text(json.dumps(summary, indent=2))
    return summary


def _summarise(curves, trials, ref, base, cache, seconds, session) -> dict[str, Any]:
    checkpoints = sorted({c for c in (10, 20, trials // 2, trials) if 0 < c <= trials})
    table = {}
    for name, by_seed in curves.items():
        table[name] = {str(c): {"mean": statistics.fmean(v[c - 1] for v in by_seed.values()),
                                "std": statistics.pstdev(v[c - 1] for v in by_seed.values())}
                       for c in checkpoints}
    rnd = table.get("random")
    ratios = ({name: table[name][str(trials)]["mean"] / rnd[str(trials)]["mean"] for name in table}
              if rnd and rnd[str(trials)]["mean"] > 0 else {})
    return {"trials": trials, "seeds": sorted(next(iter(curves.values())).keys()), "checkpoints": checkpoints,
            "hypervolume": table, "ratio_vs_random_at_end": ratios,
            "reference_point": {"accuracy": -ref[0], "latency_ms": ref[1]},
            "base": base, "distinct_configs_evaluated": len(cache.data), "new_evaluations": cache.new,
            "seconds": round(seconds, 1), "device": str(session.device),
            "latency_source": "measured once per config on this device, cached"}


def format_summary(s: dict) -> str:
    """The summary as a text table."""
    cps = s["checkpoints"]
    lines = [f"hypervolume of the feasible front (accuracy >= {s['reference_point']['accuracy']:.3f}, latency <= "
             f"{s['reference_point']['latency_ms']:.3f} ms) vs trials; mean +- std over seeds {s['seeds']}",
             f"{'sampler':<8}" + "".join(f"{'@' + str(c):>18}" for c in cps) + "   vs random"]
    for name, row in s["hypervolume"].items():
        ratio = s["ratio_vs_random_at_end"].get(name)
        lines.append(f"{name:<8}" + "".join(f"{row[str(c)]['mean']:>11.5f} +-{row[str(c)]['std']:.5f}"[-18:].rjust(18)
                                           for c in cps) + (f"   {ratio:.2f}x" if ratio else ""))
    lines.append(f"{s['distinct_configs_evaluated']} distinct configs evaluated ({s['latency_source']}; "
                 f"accuracy measured on val), {s['seconds']:.0f} s, device {s['device']}")
    return "\n".join(lines)
