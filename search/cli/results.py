"""``vitsearch report``, ``vitsearch pick`` and ``vitsearch list``: read a run dir back.

Kept light at import (argparse only): pandas, plotly, matplotlib and torch load inside
the handlers.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    """Add ``report``, ``pick`` and ``list`` to the `vitsearch` parser."""
    p = sub.add_parser("report", help="Pareto-front report of a run: HTML, PNG, CSV/parquet, Markdown")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `vitsearch run`")
    p.add_argument("--out", default=None, help="where to write the report (default: RUN_DIR/report)")
    p.add_argument("--no-remeasure", action="store_true",
                   help="keep the recorded latencies (default: re-measure the front when this device is the study's)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("pick", help="the most accurate variant within a latency budget (or the fastest Pareto "
                                    "variant within an accuracy drop), exported")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `vitsearch run`")
    p.add_argument("--latency-ms", type=float, default=None,
                   help="latency budget in ms (> 0): the most accurate variant within it wins")
    p.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                   help="at most this many val accuracy points below the uncompressed model (1 = one point, "
                        "not a fraction); "
                        "alone: the fastest such variant wins. Give --latency-ms, --max-drop or both")
    p.add_argument("--min-accuracy", type=float, default=None, help="also require top-1 >= this fraction (0..1)")
    p.add_argument("--max-size-mb", type=float, default=None, help="also require size <= this many MB")
    p.add_argument("--out", default=None, help="variant dir to write (default: RUN_DIR/variants/trial-N)")
    p.add_argument("--no-remeasure", action="store_true", help="judge the budget on the recorded latencies")
    p.add_argument("--polish-steps", type=int, default=None,
                   help="distil the chosen variant this many more steps before export (default: the study's top "
                        "rung; 0: none); kept only if it beats the unpolished weights on val (--polish-select)")
    p.add_argument("--polish-augment", default=None, metavar="HOW",
                   help="how the polish alters each batch, teacher and student alike: none, shift (each image "
                        "moved by up to 2 pixels), affine (rotated up to 12 degrees, scaled 0.9-1.1 and moved up to "
                        "2 pixels, as the built-in model was trained; default), mixup or shift+mixup")
    p.add_argument("--polish-lr", type=float, default=None, metavar="LR",
                   help="the polish's peak learning rate, decayed along a cosine to 0 (default 5e-4)")
    p.add_argument("--polish-ema", type=float, default=None, metavar="DECAY",
                   help="the polish scores and keeps a moving average of the weights, DECAY per step (default "
                        "1 - 4 / steps: 0.998 over 2,000 steps; 0: the weights as trained)")
    p.add_argument("--polish-select", default=None, metavar="BY",
                   help="what picks the polish's checkpoint and whether it is kept, on val: top1 (against the "
                        "labels) or teacher (how closely it follows its fp32 teacher, the uncompressed model: "
                        "KL divergence; default)")
    p.add_argument("--choose-by", default=None, metavar="BY",
                   help="with --latency-ms, what makes a variant the most accurate, on val: top1 (against the "
                        "labels; among the front) or teacher (how closely it follows its fp32 teacher: KL divergence, "
                        "among the front and the other trials of the top rung, each within the budget rebuilt and "
                        "scored in the study's runtime; default)")
    p.add_argument("--json", action="store_true",
                   help="print the exported variant's record as one JSON object on stdout (progress on stderr)")
    p.set_defaults(func=cmd_pick)

    p = sub.add_parser("list", help="the Pareto front of a run as a table")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `vitsearch run`")
    p.set_defaults(func=cmd_list)


def cmd_report(args) -> int:
    """``vitsearch report RUN_DIR``."""
    from vitsearch.search.engine.progress import stderr_is_terminal
    from vitsearch.search.results.report import build
    from vitsearch.search.results.runview import load_run

    from vitsearch.search.preflight import check_out_dir

    if args.out:
        check_out_dir(args.out, "--out")  # before the run is read or anything re-measured
    view = load_run(args.run_dir)
    out = Path(args.out) if args.out else view.path / "report"
    check_out_dir(out, "--out")
    result = build(view, out, remeasure=not args.no_remeasure, progress=stderr_is_terminal())
    print(f"latencies: {result['remeasure'].why}")
    for name, path in result["paths"].items():
        print(f"{name:>14}: {path}")
    return 0


def cmd_pick(args) -> int:
    """``vitsearch pick RUN_DIR --latency-ms X`` and/or ``--max-drop P``."""
    from vitsearch.search.engine.progress import stderr_is_terminal
    from vitsearch.search.results.basis import rebase
    from vitsearch.search.results.closeness import CHOOSE_BY, check_choose_by, teacher_kl
    from vitsearch.search.results.export import export, polish_settings
    from vitsearch.search.results.pick import check_budget, check_same_base, choose, runner_up_line
    from vitsearch.search.results.runview import (check_remeasure, front_latency, load_run, pool_name,
                                                  remeasure_front, top_rung_pool)
    from vitsearch.search.session import load_session

    from vitsearch.search.preflight import check_out_dir

    check_budget(args.latency_ms, args.min_accuracy, args.max_size_mb, args.max_drop)  # before any slow work
    if args.out:
        check_out_dir(args.out, "--out")
    polish = polish_settings(args.polish_steps, args.polish_augment, args.polish_ema, args.polish_select,
                             args.polish_lr)
    choose_by = CHOOSE_BY if args.choose_by is None else args.choose_by
    check_choose_by(choose_by)
    view = load_run(args.run_dir)
    if not args.out:
        check_out_dir(view.path / "variants", "--out (default RUN_DIR/variants)")
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print  # noqa: E731
    session = None
    base_acc = view.base_accuracy
    base_source = "recorded by the run"
    if args.max_drop is not None and base_acc is None and not view.front.empty:
        # recorded only where the study sets constraints.max_accuracy_drop; measured as the run would have
        session = load_session(view.spec)
        check_same_base(view, session)
        base_acc = session.base_val_accuracy()
        base_source = f"measured at pick ({session.base_precision} on {session.device.type})"
        why = ("its study sets no constraints.max_accuracy_drop" if view.spec.constraints.max_accuracy_drop is None
               else "none in its run.json")
        say(f"uncompressed model: {base_acc:.2%} val, measured here in {session.base_precision} on "
            f"{session.device.type} (the run recorded none: {why})")
    by_teacher = choose_by == "teacher" and args.latency_ms is not None
    rows = top_rung_pool(view) if by_teacher else view.front  # the teacher's KL ranks the top rung's trials too
    check = check_remeasure(view)
    if args.no_remeasure:
        check.done, check.why = False, "not re-measured (--no-remeasure); latencies are as recorded"
    elif check.done:
        session = session or load_session(view.spec)
        check = remeasure_front(view, session, progress=stderr_is_terminal(), rows=rows)
    closeness = None
    if by_teacher:
        session = session or load_session(view.spec)
        closeness = lambda rows: teacher_kl(view, session, rows, say)  # noqa: E731
    basis = view.basis  # the report's: a trial has the same ms in both
    say(f"latencies: {check.why}; {basis.text()}")
    choice = choose(rebase(front_latency(view, check, rows), basis), args.latency_ms, args.min_accuracy,
                    args.max_size_mb, args.max_drop, base_acc, closeness, pool_name(view, rows))
    choice.asked["latency_basis"] = basis.text()
    if args.max_drop is not None:
        choice.asked.update(base_val_accuracy=base_acc, base_val_source=base_source)
    say(choice.why)
    say(runner_up_line(choice))
    session = session or load_session(view.spec)
    out = Path(args.out) if args.out else view.path / "variants" / f"trial-{int(choice.winner['number'])}"
    prov = export(view, choice, session, out, check.why, polish)
    for line in _pick_lines(prov, out):
        say(line)
    if args.json:
        import json

        print(json.dumps(pick_record(prov, out)))
    return 0


def _pick_lines(prov: dict, out: Path) -> list[str]:
    """What ``pick`` says about the exported variant: accuracy (val, test, paired drop), speed-up, the files."""
    from vitsearch.search.results.variant import polish_criterion

    ex, acc, lat = prov["export"], prov["accuracy"], prov["latency"]
    test, polish, paired, speed = acc["test"], acc["polish"], acc["paired"], lat["speedup"]
    lines = [f"accuracy at export: val {acc['at_export']:.2%} (recorded {acc['recorded']:.2%}, rung {acc['rung']}); "
             f"test {test['test_accuracy']:.2%} [{test['test_lo']:.1%}, {test['test_hi']:.1%}] (95 % Wilson, "
             f"{test['test_n']} images the search never saw)"]
    if "val_accuracy" in polish:
        follows = (f", KL from the teacher {polish['val_kl']:.4f} (unpolished {polish['unpolished_val_kl']:.4f})"
                   if polish.get("val_kl") is not None else "")
        lines.append(f"polished {polish['steps']} more steps ({polish['schedule']}; best at step "
                     f"{polish['best_step']}): val {polish['val_accuracy']:.2%}{follows}, test "
                     f"{polish['test_accuracy']:.2%} [{polish['test_lo']:.1%}, {polish['test_hi']:.1%}]; "
                     + ("exported the polished weights" if polish["kept"] else
                        f"no better than the unpolished weights by {polish_criterion(polish)}: exported those"))
    elif "best_step" in polish:
        lines.append(f"polished {polish['steps']} more steps: {polish['note']}; exported the unpolished weights")
    interval = f" [{speed['low']:.2f}, {speed['high']:.2f}]" if speed.get("low") else ""
    lines += [f"exported weights vs the uncompressed model ({paired['base_test_accuracy']:.2%} test): drop "
              f"{paired['text']}; speed-up x{speed['speedup']:.2f}{interval} in {lat['in_runtime']['runtime']}, "
              f"timed side by side at export" + (" (the interval: where a re-timing in another sitting falls)"
                                                 if speed.get("sitting_sd") else " (the interval: this sitting's)"),
              f"{ex.get('runtime', 'torch.export')}: " + (f"{ex.get('file', 'program.pt2')} written" if ex["exported"]
                                                         else f"not exported ({ex['reason']})"),
              f"exported -> {out}   (load: vitsearch.search.load_variant({str(out)!r}).model)"]
    return lines


def pick_record(prov: dict, out: Path) -> dict:
    """The exported variant as ``pick --json`` prints it (keys documented in docs/search.md, "pick --json").

    ``paired_drop``, ``paired_drop_low``, ``paired_drop_high``: the test top-1 drop against
    the uncompressed model on the same test images and its 95 % interval, as **fractions**
    (0.01 = 1 point; positive = less accurate). ``speedup``: uncompressed latency / the
    variant's, both timed in the study's runtime at export, with ``speedup_low``/``_high``;
    ``uncompressed_precision``: what the uncompressed model ran in (``model.precision``).
    """
    acc, lat = prov["accuracy"], prov["latency"]
    paired, speed, entry = acc["paired"], lat["speedup"], lat["in_runtime"]
    test = acc["polish"] if acc["polish"].get("kept") else acc["test"]
    return {"trial": prov["trial"], "config": prov["config"], "summary": prov["config_summary"], "out": str(out),
            "runtime": entry.get("runtime"), "device": entry.get("device"),
            "latency_ms": entry["median_ms"], "latency_low_ms": entry.get("low_ms"),
            "latency_high_ms": entry.get("high_ms"),
            "uncompressed_latency_ms": lat["uncompressed_in_runtime"]["median_ms"],
            "uncompressed_precision": lat["uncompressed_in_runtime"].get("precision", "fp32"),
            "speedup": speed["speedup"], "speedup_low": speed.get("low"), "speedup_high": speed.get("high"),
            "val_accuracy": acc["polish"].get("val_accuracy") if acc["polish"].get("kept") else acc["at_export"],
            "test_accuracy": test["test_accuracy"], "test_n": test["test_n"],
            "base_test_accuracy": paired["base_test_accuracy"],
            "paired_drop": paired["drop"], "paired_drop_low": paired["low"], "paired_drop_high": paired["high"],
            "paired_confidence": paired["confidence"], "paired_method": paired["method"],
            "asked": prov.get("asked", {}),
            "polish": {"steps": acc["polish"]["steps"], "augment": acc["polish"].get("augment"),
                       "ema": acc["polish"].get("ema"), "select": acc["polish"].get("select"),
                       "lr": acc["polish"].get("lr"),
                       "kept": acc["polish"]["kept"]},
            "units": {"paired_drop": "fraction of the test images (0.01 = 1 point), positive = less accurate",
                      "latency_ms": "ms per batch of the study's latency.batch_size", "speedup": "x"}}


def cmd_list(args) -> int:
    """``vitsearch list RUN_DIR``: the front with the Markdown summary's columns."""
    from vitsearch.evaluators.paired import PairedDrop
    from vitsearch.search.results.basis import rebase
    from vitsearch.search.results.report import FRONT_COLUMNS, device_text, front_rows
    from vitsearch.search.results.runview import load_run
    from vitsearch.search.results.testacc import BASE_KEY, read_cache, with_cached

    view = load_run(args.run_dir)
    basis = view.basis  # the report's: list and report state ms on one basis
    cache = read_cache(view.path, view.spec.latency.runtime)
    front = rebase(with_cached(view.front, cache), basis)
    rows = front_rows(front) if not view.front.empty else []
    if not rows:
        print("(no feasible completed trial on the front yet)")
        return 0
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(FRONT_COLUMNS)]
    right = {0, 2, 4, 5, 7, 8}
    fmt = lambda cells: "  ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    print(fmt(list(FRONT_COLUMNS)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))
    evaluated = ((view.frame["state"] == "COMPLETE") & view.frame["reused_from"].isna()).sum()
    method = PairedDrop.method.split(": ", 1)[-1]
    fp = view.study_fingerprint()
    where = f" on {device_text(fp)}" if fp else ""
    base = cache.get(BASE_KEY) or {}
    test = (f" on {base['test_n']} test images ({base.get('test_source', 'the test split')})"
            if base.get("test_n") else "")
    print(f"\n{len(rows)} Pareto variant(s) of {evaluated} evaluated trials; latency as recorded during search "
          f"(source per row){where} in {view.spec.latency.runtime}, {basis.text()}; val accuracy selected them, "
          f"test accuracy (95 % Wilson interval){test} as measured at the end of the run or by `report`/`pick`; "
          "test drop: points lost against the uncompressed model on the same test images (paired 95 % interval: "
          f"{method})")
    return 0
