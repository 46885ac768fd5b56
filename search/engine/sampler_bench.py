"""``vitsearch bench-search``: do the samplers beat random search, and by how much?

Runs in-process Optuna studies (no Ray: the comparison is about the samplers) with
NSGA-II, TPE, GP (Optuna's GPSampler: constrained multi-objective through logCEHVI since
Optuna 4.5) and random at equal trial counts over several seeds, on the study's real
search space and real evaluations.

What each trial evaluates: the config compressed, distilled for ``recovery_steps`` steps
(default 0: **zero-shot**, the cheap proxy; ``vitsearch run`` tells its sampler the
study's first-rung accuracy, e.g. 10 steps, which ``--recovery-steps`` reproduces at a
few seconds per config), accuracy measured on **val**; latency **predicted** by the
study's fitted predictor when one matches this machine, else **measured** once per config.
Each distinct config is evaluated once and cached in a JSON file (per steps and latency
source), so all samplers and seeds see identical numbers and the benchmark stays
affordable. As in ``vitsearch run``, a config no cheaper than the uncompressed model
(predicted or measured slower, where latency is the only cost objective) is settled on
its cost without accuracy work and told PRUNED with its constraints, never with an
invented accuracy (the run's screen is not applied: each config is timed);
there is no Ray and no rung promotion
here (for the real search at equal wall time, see :mod:`.fidelity_bench`). Quality is
the hypervolume of the feasible front (accuracy up, latency down; reference point: the
accuracy budget and the uncompressed model's latency) after every trial; the summary also
says how many trials each sampler needs to reach random search's hypervolume at the last
trial (the goal: the default sampler reaches random's 200-trial figure in <= 50). The
samplers see the study's accuracy-drop and latency budgets as Optuna constraints, as in
`vitsearch run`; random search ignores them, as it does there.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from vitsearch.search.engine.rungs import hypervolume_2d


class EvalCache:
    """Evaluations by canonical config JSON, persisted after every new one.

    ``reference`` (:class:`~vitsearch.search.engine.gain.Reference`): a config with no gain
    over the uncompressed model is returned with ``accuracy`` None and ``settled`` (its
    accuracy is never measured; one cached with an accuracy by an older benchmark is
    settled alike), as ``vitsearch run`` settles it.
    """

    def __init__(self, path: Path, session, predictor=None, recovery_steps: int = 0, reference=None):
        self.path, self.session, self.predictor, self.steps = path, session, predictor, recovery_steps
        self.reference = reference
        self.data: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}
        self.new = 0

    def get(self, config) -> dict:
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in self.data:
            metrics, _ = self.session.pipeline.evaluate(config, self.steps, predictor=self.predictor,
                                                        reference=self.reference)
            self.data[key] = {"accuracy": metrics["accuracy"], "latency_ms": metrics["latency"]["median_ms"],
                              "size_mb": metrics["size_mb"], "macs": metrics.get("macs")}
            self.new += 1
            self.path.write_text(json.dumps(self.data))
        out = dict(self.data[key])
        if self.predictor is not None:  # deterministic and 0.05 ms: always the current predictor's
            out["latency_ms"] = self.predictor.predict(config).median_ms
        if self.reference is not None:
            why = self.reference.no_gain({"config": config.to_dict(), "latency": {"median_ms": out["latency_ms"]},
                                          "size_mb": out["size_mb"], "macs": out.get("macs") or 0})
            if why is not None:
                out.update(accuracy=None, settled=why)
        return out


def run_bench(study, trials: int, seeds: list[int], samplers: list[str], out: Path, progress: bool = True,
              recovery_steps: int = 0) -> dict:
    """Hypervolume after each trial for every (sampler, seed); returns and writes the summary."""
    import optuna
    from tqdm.auto import tqdm

    from vitsearch.search.engine.gain import NO_GAIN_CONSTRAINT, reference_of
    from vitsearch.search.engine.plan import make_sampler
    from vitsearch.search.preflight import runtime_search_space
    from vitsearch.search.session import load_session, study_predictor

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    session = load_session(study)
    spec = session.spec
    # the space a run of the study searches: in its runtime, with its allocation and sensitivity
    space, notes = runtime_search_space(spec, session.base, session.device, session.data.calibration)
    out.mkdir(parents=True, exist_ok=True)
    predictor = study_predictor(session)
    source = ("predicted by the study's latency predictor" if predictor is not None
              else "measured once per config on this device")
    steps = f"_steps{recovery_steps}" if recovery_steps else ""  # zero-shot keeps the earlier file name
    objectives = [(o.metric, o.direction) for o in spec.objectives]
    reference = reference_of(session, objectives, predictor)
    cache = EvalCache(out / f"eval_cache_{'predicted' if predictor is not None else 'measured'}{steps}.json", session,
                      predictor, recovery_steps, reference)
    base = cache.get(session.reference_config)
    drop = spec.constraints.max_accuracy_drop if spec.constraints.max_accuracy_drop is not None else 0.05
    min_acc = base["accuracy"] - drop
    ref = (-min_acc, base["latency_ms"])  # minimise (-accuracy, latency); nothing slower than the base is a gain
    curves: dict[str, dict[int, list[float]]] = {s: {} for s in samplers}
    settled: dict[str, int] = {}  # trials settled as no gain, per sampler (all seeds)
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
                # the study's budgets as Optuna constraints, as `vitsearch run` sets them (a settled
                # config: only what was measured, plus its no-gain margin, and PRUNED)
                if spec.constraints.max_accuracy_drop is not None and m["accuracy"] is not None:
                    trial.set_constraint("accuracy", min_acc - m["accuracy"])
                if spec.constraints.max_latency_ms is not None:
                    trial.set_constraint("latency_ms", m["latency_ms"] - spec.constraints.max_latency_ms)
                if m["accuracy"] is None:
                    trial.set_constraint(NO_GAIN_CONSTRAINT, max(m["latency_ms"] - reference.latency_ms, 1e-6))
                    study_.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    settled[name] = settled.get(name, 0) + 1
                else:
                    study_.tell(trial, [m["accuracy"], m["latency_ms"]])
                    points.append((-m["accuracy"], m["latency_ms"]))
                curve.append(hypervolume_2d(np.array(points), ref) if points else 0.0)
                bar.update()
            curves[name][seed] = curve
    bar.close()
    summary = _summarise(curves, trials, ref, base, cache, time.time() - started, session)
    summary["latency_source"] = source + ", cached"
    summary["settled_no_gain"] = {name: settled.get(name, 0) for name in samplers}
    summary["recovery_steps"] = recovery_steps
    summary["space_notes"] = notes  # choices the runtime cannot run, left out (as `vitsearch run` says)
    summary["accuracy_source"] = (f"measured on val after {recovery_steps} distillation steps" if recovery_steps
                                  else "measured on val, zero-shot (no distillation)")
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
            "trials_to_reach_random": trials_to_reach_random(curves, trials),
            "reference_point": {"accuracy": -ref[0], "latency_ms": ref[1]},
            "base": base, "distinct_configs_evaluated": len(cache.data), "new_evaluations": cache.new,
            "seconds": round(seconds, 1), "device": str(session.device),
            "latency_source": "measured once per config on this device, cached"}


def trials_to_reach_random(curves: dict[str, dict[int, list[float]]], trials: int) -> dict[str, Any]:
    """Trials each sampler needs to reach random search's mean hypervolume at ``trials``.

    On the mean curve over seeds, and per seed (None: not reached within ``trials``).
    """
    rnd = curves.get("random")
    if not rnd:
        return {}
    target = statistics.fmean(c[trials - 1] for c in rnd.values())

    def first(curve) -> int | None:
        # equal within float rounding counts as reached (means of the same areas summed in another order)
        return next((i + 1 for i, v in enumerate(curve) if v >= target * (1 - 1e-9) and v > 0), None)

    out: dict[str, Any] = {"target": target, "target_is": f"random search's mean hypervolume at trial {trials}"}
    for name, by_seed in curves.items():
        mean_curve = [statistics.fmean(c[i] for c in by_seed.values()) for i in range(trials)]
        out[name] = {"mean_curve": first(mean_curve), "per_seed": {s: first(c) for s, c in by_seed.items()}}
    return out


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
    reach = s.get("trials_to_reach_random") or {}
    if reach:
        lines.append(f"trials to reach {reach['target_is']} ({reach['target']:.5f}), on the mean curve: " + ", ".join(
            f"{n} {r['mean_curve'] if r['mean_curve'] is not None else 'not reached'}"
            for n, r in reach.items() if isinstance(r, dict)))
    lines += [f"note: {note}" for note in s.get("space_notes", [])]
    lines.append(f"{s['distinct_configs_evaluated']} distinct configs evaluated ({s['latency_source']}; "
                 f"accuracy {s.get('accuracy_source', 'measured on val')}), {s['seconds']:.0f} s, device {s['device']}")
    return "\n".join(lines)
