"""Benchmark of the latency predictor: profile -> fit -> predictor-eval, per target.

Targets (the issue's goals, this CPU, one thread as the default study):

- ``builtin-b1``: studies/default.yaml (built-in vitsearch-tiny, batch 1)
- ``builtin-b8``: the same at batch 8
- ``deit_small-b1``: timm deit_small_patch16_224 architecture (pretrained=False, random
  weights: latency does not depend on the weights' values), 3x224x224, batch 1, the
  default search space

Usage::

    .venv/bin/python benchmarks/predictor.py builtin-b1 [--budget-minutes 8] [--n 50] [--out profiles/bench]
    .venv/bin/python benchmarks/predictor.py builtin-b1 --refine 40   # refine, then re-evaluate
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


def session_for(target: str):
    """A study Session for ``target`` (deit_small is built without a data set: latency only)."""
    from vitsearch.search.session import Session, load_session
    from vitsearch.search.study import load_study, parse_study

    if target == "builtin-b1":
        return load_session("default")
    if target == "builtin-b8":
        spec = load_study("default").model_dump(mode="json")
        spec.update(name="default-b8", latency={**spec["latency"], "batch_size": 8})
        return load_session(parse_study(spec, "builtin-b8"))
    if target == "deit_small-b1":
        import timm
        import torch

        spec = parse_study({"name": "deit_small-b1", "model": {"name": "timm:deit_small_patch16_224",
                                                               "pretrained": False},
                            "latency": {"batch_size": 1, "threads": 1, "input_size": [3, 224, 224]}})
        base = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
        return Session(spec, torch.device("cpu"), base, None)
    raise SystemExit(f"target: {target!r} is not one of builtin-b1, builtin-b8, deit_small-b1")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for one target; print and save the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=["builtin-b1", "builtin-b8", "deit_small-b1"])
    ap.add_argument("--budget-minutes", type=float, default=8.0)
    ap.add_argument("--n", type=int, default=50, help="held-out configs for predictor-eval")
    ap.add_argument("--out", default="profiles/bench")
    ap.add_argument("--refine", type=int, default=0, help="run profile --refine with this many configs first")
    ap.add_argument("--skip-profile", action="store_true", help="reuse the profile dir's timings (refit only)")
    ap.add_argument("--rescore", action="store_true", help="score on the stored evals only (measures nothing)")
    ap.add_argument("--before", default=None, help="with --rescore: a predictor.json to compare against")
    args = ap.parse_args(argv)
    if args.rescore:
        return rescore(Path(args.out) / args.target, args.before)

    from vitsearch.evaluators.latency.evaluate import evaluate_predictor
    from vitsearch.evaluators.latency.profile import ProfileContext, fit_from_store, refine_profile, run_profile

    session = session_for(args.target)
    pdir = Path(args.out) / args.target
    result = {"target": args.target, "load_avg_before": os.getloadavg()}
    t0 = time.monotonic()
    if not args.skip_profile:
        result["profile"] = run_profile(session, pdir, budget_minutes=args.budget_minutes)
    else:  # refit on what the dir holds (e.g. after a code change)
        fit_from_store(ProfileContext.of(session, pdir))
    if args.refine:
        result["refine"] = refine_profile(session, pdir, n=args.refine, budget_minutes=args.budget_minutes)
    ev = evaluate_predictor(session, pdir, n=args.n)
    result["eval"] = ev
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["load_avg_after"] = os.getloadavg()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.target}{'-refined' if args.refine else ''}.json").write_text(
        json.dumps(result, indent=1, default=str))
    brief = {k: ev[k] for k in ("n", "within_10pct", "within_5pct", "mape", "spearman", "kendall", "predict_ms",
                                "noise_mape", "noise_within_10pct", "noise_spearman", "out_of_range",
                                "load_avg_1m", "fingerprint_id", "device")}
    print(json.dumps({"target": args.target, "profile": result.get("profile"), "eval": brief}, indent=1,
                     default=str))
    return 0


BRIEF = ("n", "within_10pct", "within_5pct", "mape", "spearman", "within_10pct_calibrated_once",
         "mape_calibrated_once", "within_10pct_drift_normalized", "mape_drift_normalized", "noise_within_10pct",
         "noise_mape", "reference_ms_profile", "reference_ms_eval")


def rescore(pdir: Path, before: str | None) -> int:
    """Score the current (and a previous) predictor on every stored eval of ``pdir``."""
    from vitsearch.evaluators.latency.predictor import LatencyPredictor
    from vitsearch.evaluators.latency.evaluate import score_rows
    from vitsearch.evaluators.latency.profile import ProfileStore
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
            res = score_rows(pred, configs, rows)
            results[f"{sub.name} {name}"] = {k: res.get(k) for k in BRIEF}
    print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
