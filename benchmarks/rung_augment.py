"""The search's distillation with other settings (augmented batches, the labels' weight, the learning rate), on candidates drawn from the
default study's space.

    .venv/bin/python benchmarks/rung_augment.py [--n 16] [--arms augment=none augment=shift] [--jobs 2]
                                                [--threads 1] [--seed 24] [--rungs 10 50 150] [--out FILE.json]

(``--out`` defaults to benchmarks/results/rung_augment.json for the default arms, and is
required for others.)

``--n`` configs spread over the default study's space (scrambled Sobol points, as a device
profile draws them; no presets) are each distilled along the study's whole ladder of rungs
(10 / 50 / 150 steps: what a top-rung candidate gets) once per ``--arms`` entry, from the
same start with the same seeds, and scored as the study deploys them on val (what the
search selects on) and on the test split, each paired with the uncompressed model and
with the first arm on the same images. An arm is ``SETTING=VALUE`` of the study's recovery
settings as the distillation takes them: ``augment`` (``recovery.augment``: each batch
altered the same way for teacher and student) or ``alpha`` (the teacher's share of the
loss, ``recovery.alpha``; the labels' cross-entropy weighs ``1 - alpha``) or ``lr`` (AdamW's learning rate,
``recovery.lr``, constant along the rungs). Configs run side
by side, one process per job. Accuracy only: the machine's load changes the wall time, no
figure.

The summary per arm: mean val and test difference to the first arm over the configs with a
95 % t-interval across configs, how many configs gained / lost, and the images gained and
lost in all (test); each arm's val KL from the teacher per config (``val_kl``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def configs_of(session, n: int, seed: int) -> list:
    """``n`` distinct configs of the session's space (Sobol points; no presets)."""
    from vitsearch.evaluators.latency.profile.sampling import sample_configs
    from vitsearch.spaces import SearchSpace

    return sample_configs(SearchSpace.from_spec(session.spec.space, session.base), n, seed=seed, presets=False)


def one_job(job: int, args) -> list[dict]:
    """Rows of configs ``job``, ``job + jobs``, ...: each arm's val and test, paired."""
    import torch

    from qad import distil, session_for  # this folder's QAD benchmark: the same rung chain
    from vitsearch.evaluators.paired import paired_drop
    from vitsearch.spaces import CompressionConfig

    torch.set_num_threads(args.threads)
    session = session_for("eager", args.rungs)
    pipe = session.pipeline
    identity = CompressionConfig()
    base, _ = pipe.accuracy(pipe.prepare(identity), identity, session.data.test, "test")
    rows = []
    for i, config in enumerate(configs_of(session, args.n, args.seed)):
        if i % args.jobs != job:
            continue
        row: dict = {"index": i, "config": config.to_dict(), "arms": {}}
        first_mask = None
        for arm in args.arms:
            t0 = time.perf_counter()
            model = distil(session, config, **arm_settings(arm))
            scored = pipe.score(model, config, against_teacher=True)
            val = scored.top1
            acc, _ = pipe.accuracy(model, config, session.data.test, "test")
            mask = acc.correct_mask()
            first_mask = mask if first_mask is None else first_mask
            drop, vs_first = paired_drop(base.correct_mask(), mask), paired_drop(first_mask, mask)
            row["arms"][arm] = {"val_accuracy": val, "val_kl": round(scored.reference_kl, 6),
                                "test_accuracy": acc.top1, "paired_drop": drop.drop,
                                "paired_drop_low": drop.low, "paired_drop_high": drop.high, "vs_first": {
                "gain": -vs_first.drop, "low": -vs_first.high, "high": -vs_first.low,
                "images_lost_gained": [vs_first.ref_only, vs_first.cand_only]},
                "seconds": round(time.perf_counter() - t0, 1)}
        print(f"config {i:>2}: " + "  ".join(f"{a} val {r['val_accuracy']:.3f} test {r['test_accuracy']:.3f}"
                                            for a, r in row["arms"].items()), flush=True)
        rows.append(row)
    return rows


#: the settings an arm may set, and how its value is read
ARM_SETTINGS = {"augment": str, "alpha": float, "lr": float}


def arm_settings(arm: str) -> dict:
    """``"alpha=1.0"`` -> ``{"alpha": 1.0}``; ValueError for anything else."""
    key, _, value = arm.partition("=")
    if key not in ARM_SETTINGS or not value:
        raise ValueError(f"arm {arm!r}: expected SETTING=VALUE with SETTING one of {', '.join(ARM_SETTINGS)}")
    return {key: ARM_SETTINGS[key](value)}


def over_configs(points: list[float]) -> dict:
    """Differences per config, in points: their mean with a 95 % t-interval over configs, how many gained / lost."""
    from scipy import stats

    n = len(points)
    mean = sum(points) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in points) / (n - 1)) if n > 1 else float("nan")
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"mean_points": round(mean, 3), "low": round(mean - half, 3), "high": round(mean + half, 3),
            "configs_gained": sum(x > 0 for x in points), "configs_lost": sum(x < 0 for x in points), "configs": n}


def summary(rows: list[dict], arms: list[str]) -> dict:
    """Per arm after the first: mean val / test difference to the first arm over configs, a 95 % t-interval."""
    out = {}
    first = arms[0]
    for arm in arms[1:]:
        figures = {split: over_configs([100 * (r["arms"][arm][key] - r["arms"][first][key]) for r in rows])
                   for split, key in (("val", "val_accuracy"), ("test", "test_accuracy"))}
        lost, gained = (sum(r["arms"][arm]["vs_first"]["images_lost_gained"][k] for r in rows) for k in (0, 1))
        figures["test"]["images_lost_gained"] = [lost, gained]
        out[f"{arm} vs {first}"] = figures
    out["val_kl_mean"] = {arm: round(sum(r["arms"][arm]["val_kl"] for r in rows) / len(rows), 6) for arm in arms}
    return out


def run_jobs(one_job, args, script: str, *, summary, **fields) -> list[dict]:
    """``one_job(job, args)`` for each of ``args.jobs`` processes side by side; their rows by config index, written
    to ``args.out`` with ``fields``, the command, the machine, ``summary(rows)`` and the wall time, and the summary
    printed."""
    from allocation import cpu

    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = sorted((r for part in pool.map(one_job, range(args.jobs), [args] * args.jobs) for r in part),
                      key=lambda r: r["index"])
    result = {**fields, "command": " ".join([f".venv/bin/python benchmarks/{script}", *sys.argv[1:]]),
              "study": "default (eager)", "machine": cpu(), "summary": summary(rows), "rows": rows,
              "wall_s": round(time.perf_counter() - start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--arms", nargs="+", default=["augment=none", "augment=shift"], metavar="SETTING=VALUE",
                    help="the first arm is what the others are paired with")
    ap.add_argument("--seed", type=int, default=24, help="the Sobol points' scramble")
    ap.add_argument("--jobs", type=int, default=2, help="processes side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--rungs", type=int, nargs="+", help="step counts in place of the study's rungs (a quick look)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default, for the default arms only: benchmarks/results/rung_augment.json")
    args = ap.parse_args()
    from vitsearch.evaluators.augment import AUGMENTS

    try:
        settings = [arm_settings(a) for a in args.arms]
    except ValueError as exc:
        ap.error(str(exc))
    if args.out is None:
        if args.arms != ap.get_default("arms"):
            ap.error("--out: give a file for arms other than the augmentation check's (its record is kept)")
        args.out = Path("benchmarks/results/rung_augment.json")
    if any(s.get("augment", "none") not in AUGMENTS or not 0 <= s.get("alpha", 0.5) <= 1 or s.get("lr", 1.0) <= 0
           for s in settings):
        ap.error(f"--arms: augment is one of {', '.join(AUGMENTS)}, alpha within [0, 1], lr above 0")
    run_jobs(one_job, args, "rung_augment.py", summary=lambda rows: summary(rows, args.arms),
             accuracies="fractions of the test images; summary in points")


if __name__ == "__main__":
    main()
