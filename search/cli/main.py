"""The ``vitsearch`` command line. Heavy imports live inside the commands so ``--help`` is instant.

Every user error (a :class:`VitsearchError`) becomes one line on stderr and exit code 2
(3 when nothing fits a budget); no traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path

from vitsearch.spaces.errors import VitsearchError


def _add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="accuracy, measured latency and size of the uncompressed model")
    p.add_argument("study", help="study file (YAML), or 'default' for the embedded default study")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_baseline)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="compress the study's model with one config and evaluate it")
    p.add_argument("study", help="study file (YAML), or 'default'")
    p.add_argument("--config", required=True, help="CompressionConfig as JSON text or a path to a JSON file")
    p.add_argument("--recovery-steps", type=int, default=None, help="distillation steps before scoring (default: the study's)")
    p.add_argument("--json", action="store_true", help="print the Evaluation record as JSON")
    p.set_defaults(func=cmd_eval)


def _add_train_builtin(sub) -> None:
    p = sub.add_parser("train-builtin", help="train the built-in vitsearch-tiny on mnist5k (about 30 min on 2 CPU cores)")
    p.add_argument("--out", default=None, help="where to write the state dict (default: the packaged weights file)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's 120)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train_builtin)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="search: Optuna draws candidates, Ray workers evaluate them")
    p.add_argument("study", help="study file (YAML), or 'default'")
    p.add_argument("--trials", type=int, default=None, help="completed trials wanted (default: the study's)")
    p.add_argument("--workers", type=int, default=None, help="trials evaluated at a time (default: the study's)")
    p.add_argument("--out", default=None, help="run dir (default: the study's output_dir)")
    p.add_argument("--address", default=None, help="Ray cluster address HOST:PORT (default: start Ray locally)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite in the run dir)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a stopped run")
    p.add_argument("--batch-size", type=int, default=None, help="candidates per Tune trial (default: auto)")
    p.add_argument("--verbose", action="store_true", help="show Ray's and Tune's own output")
    p.set_defaults(func=cmd_run)


def _add_bench_search(sub) -> None:
    p = sub.add_parser("bench-search", help="benchmark: samplers (hypervolume vs trials), fidelities at equal "
                                            "wall time (--fidelity), or hand recipes (--baselines)")
    p.add_argument("study", help="study file (YAML), or 'default'")
    p.add_argument("--trials", type=int, default=40, help="samplers: trials per (sampler, seed)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per sampler, fidelity or baselines run (0..N-1; see --first-seed)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="baselines: the first seed (seeds K..K+N-1), to add seeds to an earlier benchmark (with a new --out)")
    p.add_argument("--samplers", default="nsga2,tpe,random", help="samplers to compare: nsga2, tpe, gp, random")
    p.add_argument("--recovery-steps", type=int, default=0,
                   help="samplers: distillation steps before each config's val accuracy (default 0: zero-shot)")
    p.add_argument("--fidelity", default=None, metavar="LIST",
                   help="compare fidelities instead (zero-shot, rungs, full): real time-budgeted searches, "
                        "hypervolume of the test-accuracy front")
    p.add_argument("--baselines", action="store_true",
                   help="compare vitsearch's front with hand recipes (depth, ToMe r, MLP pruning, int8, depth+MLP) "
                        "at equal wall time, on test accuracy")
    p.add_argument("--recipes", default=None, metavar="LIST",
                   help="baselines: the recipes to run (comma-separated: depth, tome, mlp, int8, depth+mlp; 'none': "
                        "vitsearch's searches alone, to set against an earlier benchmark's recipes); default all")
    p.add_argument("--wall-minutes", type=float, default=10.0,
                   help="fidelities / baselines: time budget of every search and every recipe")
    p.add_argument("--sampler", default=None, help="fidelities: the sampler of every search (default: the study's)")
    p.add_argument("--out", default=None, help="cache and results folder (default: benchmarks/results/search, "
                                               "benchmarks/results/fidelity with --fidelity, "
                                               "benchmarks/results/baselines with --baselines)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_search)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="vitsearch",
        description="Compression search for Vision Transformers: sparsity, bit-width, head grouping, "
                    "token budget and depth, searched jointly for a target device.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_run, _add_baseline, _add_eval, _add_train_builtin, _add_bench_search):
        add(sub)
    from vitsearch.search.cli import doctor, predictor, results  # light modules: heavy imports stay in handlers

    predictor.register(sub)
    results.register(sub)
    doctor.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vitsearch`` console script."""
    args = build_parser().parse_args(argv)
    try:
        _refuse_empty(args)
        return args.func(args) or 0
    except VitsearchError as exc:
        print(f"vitsearch {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # a second Ctrl-C, or one outside the search; SIGTERM in a run too
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"vitsearch {args.command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum


#: arguments that name something (a path, a URL, JSON): an empty one is a mistake, not "the default"
NAMED = {"out": "--out", "resume": "--resume", "storage": "--storage", "address": "--address", "config": "--config",
         "study": "STUDY", "run_dir": "RUN_DIR"}


def _refuse_empty(args) -> None:
    for dest, flag in NAMED.items():
        value = getattr(args, dest, None)
        if isinstance(value, str) and not value.strip():
            fix = "leave the option out for its default, or give a value" if flag.startswith("--") else \
                "give a path"
            raise VitsearchError(f"{flag}: got an empty value {value!r}; {fix}")


#: the longest run of characters without a space a message shows (a 5 MB path is cut)
LONGEST_WORD = 200


def one_line(message: str) -> str:
    """``message`` on one line, any word longer than LONGEST_WORD characters cut (its length said)."""
    def cut(m: re.Match) -> str:
        return f"{m.group()[:LONGEST_WORD]}...({len(m.group()):,} characters)"

    return re.sub(rf"\S{{{LONGEST_WORD + 1},}}", cut, " ".join(message.split("\n")))


def _print_record(record, as_json: bool, title: str) -> None:
    """An Evaluation as JSON (flat metrics first, the full record under "record") or as lines."""
    if as_json:
        lat = record.latency or {}
        flat = {"accuracy": record.accuracy, "top5": record.top5, "accuracy_source": record.accuracy_source,
                "latency_ms": lat.get("median_ms"), "latency_p10_ms": lat.get("p10_ms"),
                "latency_p90_ms": lat.get("p90_ms"), "latency_runs": lat.get("n_runs"),
                "latency_source": lat.get("source"), "device": lat.get("device"),
                "size_mb": record.size_mb, "size_mb_sparse_storage": record.size_mb_sparse_storage,
                "macs": record.macs, "record": record.to_dict()}
        print(json.dumps(flat, indent=2, default=str))
    else:
        print(title)
        print("\n".join("  " + line for line in record.summary_lines()))


def cmd_run(args) -> int:
    """``vitsearch run STUDY``: run or resume a search."""
    from vitsearch.search.engine.plan import RunOptions, plan_run

    plan = plan_run(args.study, RunOptions(args.trials, args.workers, args.out, args.address, args.storage,
                                           args.resume, args.verbose, args.batch_size))
    from vitsearch.search.engine.driver import run_planned  # the engine (Ray, torch: seconds) once the input is good

    summary = run_planned(plan)
    path = summary["run_dir"]
    from vitsearch.search.results.sitting import sitting_line
    from vitsearch.search.results.tables import counts_line

    print(f"\n{summary['completed']}/{summary['requested']} candidates evaluated in {summary['seconds']:.0f} s: "
          f"{counts_line(summary, summary['rungs'])}; {summary['infeasible']} infeasible")
    eng = summary.get("engine") or {}
    if eng.get("steady_overhead_share") is not None:
        print(f"engine overhead (measured, worker clocks): {eng['steady_overhead_share']:.1%} per trial - worker time "
              f"between its first and last evaluation not spent evaluating; {eng['engine_overhead_share']:.1%} all-in "
              f"with the one-off {eng['startup_seconds']:.1f} s worker start-up and {eng['drain_seconds']:.1f} s drain "
              f"({eng['evaluations']} evaluations, {eng['evaluation_seconds']:.0f} s of evaluation on "
              f"{summary['workers']} workers)")
    print(f"Pareto front (feasible trials at the highest rung each reached; selected on val, accuracy re-measured "
          f"on the test split ({summary['test_split']}) with its 95 % Wilson interval; latency source per row; "
          f"{summary.get('latency_basis', 'ms as timed')}):\n{summary['front_table']}")
    print(sitting_line(summary.get("sitting")))
    stopped_by = summary.get("interrupted_by")
    if stopped_by:
        name = signal.Signals(stopped_by).name
        print(f"\ninterrupted by {name}: what finished is recorded; resume with: vitsearch run {args.study} "
              f"--resume {path}")
        print(f"vitsearch run: interrupted by {name}; resume with --resume {path}", file=sys.stderr)
    elif summary.get("stopped_at_time_budget"):
        print(f"\nstopped at the time budget (search.time_budget_minutes: {summary['time_budget_minutes']}); "
              "what was in flight then finished and is recorded")
    elif summary["completed"] < summary["requested"]:
        print(f"\nstopped early; resume with: vitsearch run {args.study} --resume {path}")
    print(f"\nnext: vitsearch report {path}    |    vitsearch pick {path} --latency-ms <budget>")
    return 128 + stopped_by if stopped_by else 0


def cmd_baseline(args) -> int:
    """``vitsearch baseline STUDY``: the uncompressed model's numbers."""
    from vitsearch.search.session import load_session

    session = load_session(args.study)
    record = session.evaluate(session.reference_config, recovery_steps=0)
    _print_record(record, args.json, f"baseline of {session.spec.model.name} ({session.data.describe()})")
    return 0


def cmd_eval(args) -> int:
    """``vitsearch eval STUDY --config JSON``: one compressed candidate's numbers."""
    from vitsearch.search.session import load_session, read_config_arg

    config = read_config_arg(args.config)  # judged before the model and data load
    if args.recovery_steps is not None and args.recovery_steps < 0:
        raise VitsearchError(f"--recovery-steps: must be >= 0, got {args.recovery_steps}")
    session = load_session(args.study)
    config = config.on_base(session.base_precision)  # its unnamed precisions are the study's model.precision
    record = session.evaluate(config, recovery_steps=args.recovery_steps)
    _print_record(record, args.json, f"{config.summary()} on {session.spec.model.name} ({session.data.describe()})")
    return 0


def cmd_bench_search(args) -> int:
    """``vitsearch bench-search STUDY``: samplers against random search, fidelities or hand recipes at equal wall time."""
    if args.baselines and args.fidelity is not None:
        raise VitsearchError("--baselines and --fidelity: choose one benchmark")
    if args.first_seed != 0 and not args.baselines:
        raise VitsearchError(f"--first-seed: only with --baselines, got {args.first_seed}")
    if args.recipes is not None and not args.baselines:
        raise VitsearchError(f"--recipes: only with --baselines, got {args.recipes!r}")
    if args.baselines:
        from vitsearch.search.engine.baselines_bench import format_baselines, parse_recipes, run_baselines_bench

        recipes = parse_recipes(args.recipes)
        summary = run_baselines_bench(args.study, args.wall_minutes, args.seeds,
                                      Path(args.out or "benchmarks/results/baselines"), first_seed=args.first_seed,
                                      recipes=recipes)
        print(json.dumps(summary, indent=2, default=str) if args.json else format_baselines(summary))
        return 0
    if args.fidelity is not None:
        from vitsearch.search.engine.fidelity_bench import format_fidelity, parse_fidelities, run_fidelity_bench

        summary = run_fidelity_bench(args.study, parse_fidelities(args.fidelity), args.wall_minutes, args.seeds,
                                     args.sampler, Path(args.out or "benchmarks/results/fidelity"))
        print(json.dumps(summary, indent=2, default=str) if args.json else format_fidelity(summary))
        return 0
    from vitsearch.search.engine.sampler_bench import format_summary, run_bench

    samplers = [x.strip() for x in args.samplers.split(",") if x.strip()]
    bad = [x for x in samplers if x not in ("nsga2", "tpe", "gp", "random")]
    if bad or not samplers:
        raise VitsearchError(f"--samplers: {bad[0] if bad else args.samplers!r} is not a sampler; use nsga2, tpe, gp, "
                             "random")
    if args.trials <= 0 or args.seeds <= 0:
        raise VitsearchError(f"--trials/--seeds: must be positive, got {args.trials}/{args.seeds}")
    if args.recovery_steps < 0:
        raise VitsearchError(f"--recovery-steps: must be >= 0, got {args.recovery_steps}")
    from vitsearch.search.preflight import check_out_dir

    out = args.out or "benchmarks/results/search"
    check_out_dir(out, "--out")
    summary = run_bench(args.study, args.trials, list(range(args.seeds)), samplers, Path(out),
                        recovery_steps=args.recovery_steps)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_train_builtin(args) -> int:
    """``vitsearch train-builtin``: reproduce the shipped built-in weights."""
    from dataclasses import replace

    from vitsearch.evaluators.models import builtin_weights_path
    from vitsearch.evaluators.training import Recipe, train_builtin

    from vitsearch.search.preflight import check_out_file

    if args.out:
        check_out_file(args.out, "--out")
    recipe = Recipe(seed=args.seed)
    if args.epochs is not None:
        if args.epochs <= 0:
            raise VitsearchError(f"--epochs: must be > 0, got {args.epochs}")
        recipe = replace(recipe, epochs=args.epochs)
    out = Path(args.out) if args.out else builtin_weights_path()
    summary = train_builtin(out, recipe)
    print(f"vitsearch-tiny: val top-1 {summary['val_top1']:.4f} on {summary['val_images']} mnist5k val images "
          f"(measured), {summary['wall_s']:.0f} s of training; weights -> {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
