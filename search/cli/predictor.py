"""``vitsearch profile`` and ``vitsearch predictor-eval``: the latency predictor's commands.

Light at import (argparse only): heavy imports live inside the handlers.
"""

from __future__ import annotations

import json
import math

from vitsearch.spaces.errors import ConfigError


def register(sub) -> None:
    """Add this module's sub-commands to the `vitsearch` parser."""
    p = sub.add_parser("profile", help="measure the study's device and fit its latency predictor")
    p.add_argument("study", help="study file (YAML), or 'default'")
    p.add_argument("--out", default=None, help="profile dir (default: profiles/<study name>)")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="time budget for measuring (default 8)")
    p.add_argument("--models", type=int, default=None, help="whole-model sample size cap (default 400)")
    p.add_argument("--refine", action="store_true",
                   help="measure where the fitted predictor is least certain / most wrong, then refit")
    p.add_argument("--refine-n", type=int, default=40, help="configs measured by --refine (default 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_profile)

    e = sub.add_parser("predictor-eval", help="score the fitted predictor on fresh held-out measurements")
    e.add_argument("study", help="study file (YAML), or 'default'")
    e.add_argument("--profile", default=None, help="profile dir (default: profiles/<study name>)")
    e.add_argument("--n", type=int, default=50, help="held-out configs measured (default 50)")
    e.add_argument("--seed", type=int, default=777, help="seed of the held-out draw")
    e.add_argument("--near", default=None, metavar="RUN_DIR",
                   help="judge on the neighbourhood of this run's front (one knob step) instead of a uniform draw")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_predictor_eval)


def _positive(name: str, value, kind=float) -> None:
    if value is not None and (not isinstance(value, (int, float)) or not value > 0 or math.isinf(value)):
        raise ConfigError(f"{name}: {value!r} is not allowed; expected a positive {kind.__name__}")


def cmd_profile(args) -> int:
    """``vitsearch profile STUDY``: components + whole models, resumable, then fit (or ``--refine``).

    In the study's ``latency.runtime``: whole models only where it is not eager, each built
    into the runtime's program (build time reported apart from latency).
    """
    _positive("--budget-minutes", args.budget_minutes)
    _positive("--models", args.models, int)
    _positive("--refine-n", args.refine_n, int)
    if args.out:
        from vitsearch.search.preflight import check_out_dir

        check_out_dir(args.out, "--out")
    from vitsearch.evaluators.latency.profile.run import N_MODELS, run_profile
    from vitsearch.evaluators.latency.profile.refine import refine_profile
    from vitsearch.search.session import load_session

    session = load_session(args.study)
    show = not args.json
    if args.refine:
        out = refine_profile(session, args.out, n=args.refine_n, budget_minutes=args.budget_minutes,
                             seed=args.seed, progress=show)
    else:
        out = run_profile(session, args.out, budget_minutes=args.budget_minutes,
                          n_models=args.models or N_MODELS, seed=args.seed, progress=show)
    out["device"] = str(session.device)
    out["input_shape"] = list(session.input_shape)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    _print_profile(out, args.refine)
    print(f"next: vitsearch predictor-eval {args.study}" + (f" --profile {out['dir']}" if args.out else ""))
    return 0


def cmd_predictor_eval(args) -> int:
    """``vitsearch predictor-eval STUDY``: held-out configs measured fresh (interleaved) vs predicted."""
    _positive("--n", args.n, int)
    from vitsearch.evaluators.latency.profile.evaluate import evaluate_predictor
    from vitsearch.search.session import load_session

    front = _front_configs(args.near) if args.near else None
    session = load_session(args.study)
    res = evaluate_predictor(session, args.profile, n=args.n, seed=args.seed, progress=not args.json, front=front)
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "rows"} | {"rows": res["rows"]}, indent=2,
                         default=str))
        return 0
    fp = res["fingerprint"]
    where = f"{res['device']} [{fp.get('cpu_model') or fp.get('gpu_name')}, {fp.get('threads')} threads, " \
            f"fingerprint {res['fingerprint_id']}], input {tuple(res['input_shape'])}"
    print(f"predictor-eval of {res['profile_dir']} ({_runtime(res)}): {res['n']} held-out configs ({res['set']}) "
          f"never used in fitting, each measured twice (interleaved with the uncompressed eager model, median "
          f"{res.get('repeat_gap_s') or 0:.0f} s apart) on {where}; mean load average {res['load_avg_1m']:.2f}")
    print("  latency = ratio to the uncompressed model timed in alternating chunks (95 % bootstrap interval, "
          f"median half-width {_pct(res['measure_halfwidth_median'])}, {res['measure_s_per_config']:.2f} s each)")
    print(f"  predicted vs measured:   {_line(res['predicted'])}")
    if res.get("predicted_vs_mean_of_two"):
        print(f"  predicted vs mean of 2:  {_line(res['predicted_vs_mean_of_two'])}")
        print(f"  re-measured vs measured: {_line(res['repeatability'])}  (the measurement's own repeatability)")
    dec = res.get("where_it_decides") or {}
    if dec.get("predicted"):
        print(f"  where the search ranks them ({dec['n']} configs {dec['rule']}):")
        print(f"    predicted vs measured:   {_line(dec['predicted'])}")
        if dec.get("repeatability"):
            print(f"    re-measured vs measured: {_line(dec['repeatability'])}")
    if dec:
        lo, hi = dec["no_gain_agreement_ci"]
        print(f"  no-gain decision (predicted vs measured side of the uncompressed model): "
              f"{_pct(dec['no_gain_agreement'])} agree (95 % Wilson {_pct(lo)}-{_pct(hi)})")
    print(f"  prediction: {res['predict_ms'] * 1000:.0f} us per config (measured wall time of predict()); "
          f"{res['out_of_range']} prediction(s) out of the profiled range; reference {res['reference_ms_eval']:.3f} "
          f"ms now vs {res['reference_ms_profile']:.3f} ms in the profile")
    return 0


def _print_profile(out: dict, refine: bool) -> None:
    """The human summary of a profile (or refine) run: what was measured, in which runtime, build time apart."""
    if refine:
        print(f"refined {out['dir']}: {out['measured']} whole models measured on {out['device']} "
              f"({out['uncertain']} least certain, {out['remeasured_worst']} worst fitted re-measured), "
              f"{out['models_total']} in all; fit MAPE (predicted vs measured, training set) "
              f"{_pct(out['train_mape_before'])} -> {_pct(out['train_mape_after'])}; {out['seconds']:.0f} s")
    else:
        budget = " (stopped by the time budget; run again to continue)" if out["stopped_by_budget"] else ""
        parts = (f"{out['components']} component timings" if out["components"]
                 else "whole models only (a runtime program is built per model; its parts are not timed apart)")
        print(f"profiled {out['dir']} on {out['device']} in {_runtime(out)} (fingerprint {out['fingerprint_id']}), "
              f"input {tuple(out['input_shape'])}: {parts}, {out['models_total']} whole models measured, "
              f"{out['seconds']:.0f} s{budget}; fit MAPE (predicted vs measured, training set) "
              f"{_pct(out['train_mape'])}")
    if out.get("build_seconds_total"):
        print(f"  build (export / compile, not latency): {out['build_seconds_total']:.0f} s for the "
              f"{out.get('models_measured_now', out.get('measured'))} models built now, median "
              f"{out['build_seconds_median']:.1f} s each; build + timing {out['model_seconds_total']:.0f} s in all")
    if out.get("build_failed"):
        print(f"  not profiled ({len(out['build_failed'])}, the runtime could not build them): "
              + "; ".join(out["build_failed"][:3]))


def _runtime(out: dict) -> str:
    return f"{out['runtime']} {out['runtime_version']}"


def _front_configs(run_dir: str) -> list:
    from vitsearch.search.results.runview import load_run
    from vitsearch.spaces import CompressionConfig

    view = load_run(run_dir)
    return [CompressionConfig.from_json(c) for c in view.front["config"]]


def _line(s: dict) -> str:
    lo, hi = s["within_10pct_ci"]
    return (f"within +-10% {_pct(s['within_10pct'])} (95 % Wilson {_pct(lo)}-{_pct(hi)}), within +-5% "
            f"{_pct(s['within_5pct'])}, MAPE {_pct(s['mape'])}, Spearman {s['spearman']:.3f}")


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"
