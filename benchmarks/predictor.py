"""Benchmark of the latency predictor: profile -> fit -> predictor-eval, per target.

Targets (the issue's goals, this CPU, one thread as the default study), in eager or, with
``--runtime``, in another runtime (whole models built in it, timed against the eager
uncompressed model as a search in that runtime measures them):

- ``builtin-b1``: studies/default.yaml (built-in vitsearch-tiny, batch 1)
- ``builtin-b8``: the same at batch 8
- ``deit_small-b1``: timm deit_small_patch16_224 architecture (pretrained=False, random
  weights: latency does not depend on the weights' values), 3x224x224, batch 1, the
  default search space

Every latency is the interleaved ratio to the uncompressed model (evaluators/latency/
timing/interleaved.py); predictor-eval measures each held-out config twice, minutes apart,
and scores the predictor and the measurement's own repeatability the same way (share
within +-10 % / +-5 % with 95 % Wilson intervals, MAPE, Spearman), on a uniform set and,
with ``--near RUN_DIR``, on the neighbourhood of a real run's front.

Usage::

    .venv/bin/python benchmarks/predictor.py builtin-b1 [--budget-minutes 8] [--n 100] [--out profiles/bench]
    .venv/bin/python benchmarks/predictor.py builtin-b1 --skip-profile --skip-uniform --near runs/default
    .venv/bin/python benchmarks/predictor.py builtin-b1 --skip-profile --skip-uniform --cost 20
    .venv/bin/python benchmarks/predictor.py builtin-b1 --refine 40   # refine, then re-evaluate
    .venv/bin/python benchmarks/predictor.py builtin-b1 --runtime onnxruntime --budget-minutes 20 --n 100
    .venv/bin/python benchmarks/predictor.py builtin-b1 --rescore --before old.json   # A/B, same measurements

``--rescore`` measures nothing: it scores the predictor(s) on every held-out eval already
stored in the profile dir (``eval/*``), so a refit or ``--refine`` is judged on exactly
the measurements the previous predictor was judged on (configs the new one trained on
are dropped from both sides).

Writes ``<out>/<target>/`` (the profile dir) and ``<out>/<target>.json`` (profile summary
and predictor-eval result). Check ``uptime`` first: on a loaded machine the noise floor
(``noise_mape``, printed beside every score) is what limits the share within +-10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def session_for(target: str, runtime: str = "eager"):
    """A study Session for ``target`` in ``runtime`` (deit_small is built without a data set: latency only)."""
    from vitsearch.search.session import Session, load_session
    from vitsearch.search.study import load_study, parse_study, study_document

    if target in ("builtin-b1", "builtin-b8"):
        if target == "builtin-b1" and runtime == "eager":
            return load_session("default")
        spec = study_document(load_study("default"))
        batch = 8 if target == "builtin-b8" else 1
        name = "default" + ("-b8" if batch == 8 else "")
        spec.update(name=name, latency={**spec["latency"], "batch_size": batch, "runtime": runtime})
        return load_session(parse_study(spec, target))
    if target == "deit_small-b1":
        import timm
        import torch

        from vitsearch.search.preflight import check_study_runtime

        spec = parse_study({"name": "deit_small-b1", "model": {"name": "timm:deit_small_patch16_224",
                                                               "pretrained": False},
                            "latency": {"batch_size": 1, "threads": 1, "input_size": [3, 224, 224],
                                        "runtime": runtime}})
        check_study_runtime(spec, torch.device("cpu"))
        base = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
        return Session(spec, torch.device("cpu"), base, None)
    raise SystemExit(f"target: {target!r} is not one of builtin-b1, builtin-b8, deit_small-b1")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for one target; print and save the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=["builtin-b1", "builtin-b8", "deit_small-b1"])
    ap.add_argument("--runtime", default="eager", choices=["eager", "compile", "onnxruntime", "tensorrt"],
                    help="latency.runtime to profile and evaluate in (default eager); the profile dir and result "
                         "file get a -<runtime> suffix")
    ap.add_argument("--budget-minutes", type=float, default=8.0)
    ap.add_argument("--n", type=int, default=100, help="held-out configs per evaluation set")
    ap.add_argument("--out", default="profiles/bench")
    ap.add_argument("--refine", type=int, default=0, help="run profile --refine with this many configs first")
    ap.add_argument("--skip-profile", action="store_true", help="reuse the profile dir's timings (refit only)")
    ap.add_argument("--skip-uniform", action="store_true", help="no uniform evaluation set")
    ap.add_argument("--near", default=None, metavar="RUN_DIR", help="also evaluate on this run's front neighbourhood")
    ap.add_argument("--cost", type=int, default=0, help="compare the wall time of a burst and an interleaved "
                                                          "measurement on this many configs")
    ap.add_argument("--rescore", action="store_true", help="score on the stored evals only (measures nothing)")
    ap.add_argument("--before", default=None, help="with --rescore: a predictor.json to compare against")
    args = ap.parse_args(argv)
    tag = tag_of(args)
    if args.rescore:
        return rescore(Path(args.out) / tag, args.before)

    from vitsearch.evaluators.latency.profile.evaluate import evaluate_predictor
    from vitsearch.evaluators.latency.profile.context import ProfileContext
    from vitsearch.evaluators.latency.profile.fitting import fit_from_store
    from vitsearch.evaluators.latency.profile.run import run_profile
    from vitsearch.evaluators.latency.profile.refine import refine_profile

    session = session_for(args.target, args.runtime)
    pdir = Path(args.out) / tag
    result = {"target": args.target, "runtime": args.runtime, "load_avg_before": os.getloadavg(), "evals": {}}
    t0 = time.monotonic()
    if not args.skip_profile:
        result["profile"] = run_profile(session, pdir, budget_minutes=args.budget_minutes)
    else:  # refit on what the dir holds (e.g. after a code change)
        fit_from_store(ProfileContext.of(session, pdir))
    if args.refine:
        result["refine"] = refine_profile(session, pdir, n=args.refine, budget_minutes=args.budget_minutes)
    if args.cost:
        result["cost"] = measurement_cost(session, pdir, args.cost)
        print(json.dumps({"cost": result["cost"]}, indent=1))
    sets = ([] if args.skip_uniform else [("uniform", None)]) + ([("front", front_of(args.near))] if args.near else [])
    for name, front in sets:
        result["evals"][name] = evaluate_predictor(session, pdir, n=args.n, front=front)
        print(json.dumps({name: brief(result["evals"][name])}, indent=1, default=str))
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["load_avg_after"] = os.getloadavg()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{tag}{'-refined' if args.refine else ''}.json").write_text(
        json.dumps(result, indent=1, default=str))
    return 0


def tag_of(args) -> str:
    """The profile dir / result name: the target, with ``-<runtime>`` outside eager."""
    if args.cost and args.runtime != "eager":
        raise SystemExit("--cost compares eager measurement protocols; run it without --runtime")
    return args.target + ("" if args.runtime == "eager" else f"-{args.runtime}")


def brief(ev: dict) -> dict:
    """The figures the README reports, from one evaluation set."""
    keep = ("n", "within_10pct", "within_10pct_ci", "within_5pct", "within_5pct_ci", "mape", "spearman")
    out = {k: ev.get(k) for k in ("set", "n", "repeat_gap_s", "measure_s_per_config", "measure_halfwidth_median",
                                  "stop_reasons", "reference_ms_profile", "reference_ms_eval", "load_avg_1m",
                                  "predict_ms", "out_of_range", "seconds", "runtime", "runtime_version",
                                  "models_built", "build_seconds_total")}
    for part in ("predicted", "predicted_vs_mean_of_two", "repeatability"):
        if ev.get(part):
            out[part] = {k: ev[part].get(k) for k in keep}
    if ev.get("interval_coverage"):
        out["interval_coverage"] = ev["interval_coverage"]
    dec = ev.get("where_it_decides") or {}
    if dec:
        out["where_it_decides"] = {k: dec.get(k) for k in ("rule", "n", "no_gain_agreement", "no_gain_agreement_ci")}
        for part in ("predicted", "repeatability"):
            if dec.get(part):
                out["where_it_decides"][part] = {k: dec[part].get(k) for k in keep}
    return out


def front_of(run_dir: str) -> list:
    """The configs of a run's Pareto front."""
    from vitsearch.search.results.runview import load_run
    from vitsearch.spaces import CompressionConfig

    return [CompressionConfig.from_json(c) for c in load_run(run_dir).front["config"]]


def measurement_cost(session, pdir: Path, n: int) -> dict:
    """Wall time per measurement: today's burst (study defaults) vs the interleaved protocol, same configs.

    Wall time from the first warm-up pass to the result, compression excluded; each
    config measured both ways back to back (order alternating).
    """
    import statistics

    from vitsearch.evaluators.latency.measure import measure_latency
    from vitsearch.evaluators.latency.profile.context import ProfileContext
    from vitsearch.evaluators.latency.profile.sampling import sample_configs
    from vitsearch.spaces import compress

    ctx = ProfileContext.of(session, pdir)
    lat = session.spec.latency
    burst, inter = [], []
    for i, c in enumerate(sample_configs(ctx.space, n, seed=4242, presets=False)):
        model = compress(session.base, c, calibration=None, device=str(session.device))
        runs = [("burst", dict(threads=lat.threads, warmup=lat.warmup, max_runs=lat.max_runs,
                               max_seconds=lat.max_seconds)), ("interleaved", session.latency_kwargs())]
        for name, kw in runs if i % 2 == 0 else runs[::-1]:
            t = time.perf_counter()
            measure_latency(model, session.input_shape, session.device, **kw)
            (burst if name == "burst" else inter).append(time.perf_counter() - t)
    return {"n": n, "burst_median_s": statistics.median(burst), "interleaved_median_s": statistics.median(inter),
            "burst_s": burst, "interleaved_s": inter}


def rescore(pdir: Path, before: str | None) -> int:
    """Score the current (and a previous) predictor on every stored eval of ``pdir``."""
    from vitsearch.evaluators.latency.predict.base import LatencyPredictor
    from vitsearch.evaluators.latency.profile.evaluate import score_rows
    from vitsearch.evaluators.latency.profile.store import ProfileStore
    from vitsearch.spaces import CompressionConfig

    now = LatencyPredictor.load(pdir)
    predictors = {"current": now} | ({"before": LatencyPredictor.load(before)} if before else {})
    trained = set().union(*(p.trained_keys for p in predictors.values()))
    results = {}
    for sub in sorted((pdir / "eval").iterdir()) if (pdir / "eval").is_dir() else []:
        rows = ProfileStore(pdir, f"eval/{sub.name}").rows()
        keys = [k for k in dict.fromkeys(r["key"] for r in rows if r["kind"] == "model" and r["phase"] == "eval")
                if k not in trained]
        configs = [CompressionConfig.from_dict(json.loads(k)) for k in keys]
        for name, pred in predictors.items():
            results[f"{sub.name} {name}"] = brief(score_rows(pred, configs, rows))
    print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
