"""pick's polish with and without augmentation of its batches, on front variants of the default study (accuracy only).

    .venv/bin/python benchmarks/polish_augment.py CONFIG [--steps 2000] [--augments none shift affine mixup shift+mixup]
        [--threads 1] [--out FILE.jsonl] [--test-at-checkpoints] [--ema DECAY] [--lr LR] [--select teacher|top1]

CONFIG names one of :data:`CONFIGS` (variants `pick` exported from the default study and its
ONNX Runtime twin, in float). The variant is distilled along the study's ladder of rungs
(10 / 50 / 150 steps, as the search gave it), then polished as `pick` polishes
(:func:`vitsearch.evaluators.distill.polished`: ``--steps`` more steps, the learning rate
decayed along a cosine to 0, the best of 8 val checkpoints kept) once per augmentation,
each from the same distilled weights with the same seeds. Each polished model is scored
on the test split and paired with the uncompressed model on the same images. One
JSON line per arm (and one for the distilled weights before any polish) goes to stdout
and, with ``--out``, to that file. ``--test-at-checkpoints`` adds ``test_at_checkpoints``:
per val checkpoint, test top-1 and the images lost and gained against the uncompressed
model (read, never used to select). Every arm records ``val_teacher_at_checkpoints``: per
val checkpoint, the val images' mean KL divergence from the teacher and top-1 agreement
with it (read, never used to select). ``--ema DECAY`` scores and keeps a moving average of the
weights instead of the weights themselves (:func:`~vitsearch.evaluators.distill.polished`).
The machine's load changes the wall time only.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

CONFIGS = {
    # eager default study, 2026-12-05: trial 50 (x2.29), pick_eager_polish2000.json
    "t50": {"schema_version": 2, "depth": {"keep": 6}, "heads": {"keep": [6, 3, 4, 3, 1, 1]},
            "sparsity": {"mlp_keep": [256, 104, 40, 16, 40, 32]}},
    # ONNX Runtime allocation study, 2026-12-06: trial 78 (x2.54 with int8), pick_ort_alloc_polish2000.json
    "t78": {"schema_version": 2, "heads": {"keep": [6, 6, 5, 5, 5, 5, 3, 2]},
            "sparsity": {"mlp_keep": [288, 160, 128, 88, 96, 88, 120, 152]},
            "tokens": {"schedule": {"2": 0.8, "4": 0.6}}},
    # the same study run again, 2026-12-06: trial 79 (x1.97 with int8), pick_ort_alloc_finish_front.json
    "t79": {"schema_version": 2, "heads": {"keep": [6, 3, 4, 3, 3, 3, 1, 2], "kv_heads": [3, 3, 2, 3, 3, 3, 1, 2]},
            "sparsity": {"mlp_keep": [256, 120, 56, 16, 32, 24, 48, 40]},
            "tokens": {"schedule": {"2": 0.8, "4": 0.7}}},
    # the ONNX Runtime allocation study run again, 2026-12-07: trial 72 (x2.28 with int8), pick_ort_alloc_ema.json
    "t72": {"schema_version": 2, "depth": {"keep": 7}, "heads": {"keep": [6, 6, 6, 6, 5, 4, 5]},
            "sparsity": {"mlp_keep": [288, 200, 168, 152, 160, 184, 200]},
            "tokens": {"schedule": {"2": 0.8, "4": 0.7}}},
    # the ONNX Runtime allocation study run again, 2026-12-07: trial 12 (x2.54 with int8), pick_ort_alloc_teacher.json
    "t12": {"schema_version": 1, "depth": {"keep": 6}, "sparsity": {"attn": "2:4"},
            "tokens": {"schedule": {"2": 0.5, "4": 0.9}}},
    # the same run: trial 39, the front's closest to the teacher on val within pick's budget (val KL 0.046 against
    # trial 12's 0.050; val top-1 97.8 % against 98.2 %)
    "t39": {"schema_version": 2, "depth": {"keep": 6}, "heads": {"keep": [6, 6, 5, 5, 3, 2]},
            "sparsity": {"mlp_keep": [288, 152, 128, 64, 112, 144]}, "tokens": {"schedule": {"4": 0.7}}},
    # the ONNX Runtime allocation study, pick on the 2,000-digit test split, 2026-12-07: trial 61 (x3.06 with int8),
    # pick_ort_test2000.json
    "t61": {"schema_version": 2, "depth": {"keep": 7}, "heads": {"keep": [6, 4, 5, 3, 4, 1, 2]},
            "sparsity": {"mlp_keep": [288, 136, 80, 40, 32, 88, 80]}, "tokens": {"schedule": {"2": 0.7}}},
    # its eager twin, 2026-12-07: trial 158 (x2.63), pick_eager_alloc_teacher.json
    "t158": {"schema_version": 2, "depth": {"keep": 4}, "heads": {"keep": [6, 5, 5, 2]},
             "sparsity": {"mlp_keep": [288, 136, 88, 96]}},
}


def main() -> None:
    import torch

    from qad import distil, session_for, test_entry  # this folder's QAD benchmark: the same rung chain and scoring
    from vitsearch.evaluators.augment import AUGMENTS
    from vitsearch.evaluators.distill import polished
    from vitsearch.spaces import CompressionConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--augments", nargs="+", default=list(AUGMENTS), choices=AUGMENTS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the JSON lines to this file too")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="score and keep a moving average of the weights (decay per step, e.g. 0.998; 0: off)")
    ap.add_argument("--lr", type=float, default=None,
                    help="the polish's peak learning rate (default: the study's recovery.lr, as pick did before the "
                         "fifteenth session, then 1e-4; pick's polish now uses 5e-4)")
    ap.add_argument("--select", choices=("teacher", "top1"), default="top1",
                    help="what chooses the kept checkpoint: val KL from the teacher (pick's default) or val top-1 (this "
                         "script's default, as its earlier rows were run)")
    ap.add_argument("--test-at-checkpoints", action="store_true",
                    help="also record test top-1 and images lost / gained at each val checkpoint (read, never used)")
    args = ap.parse_args()
    if not 0.0 <= args.ema < 1.0:
        ap.error(f"--ema: must be in [0, 1), got {args.ema}")
    torch.set_num_threads(args.threads)
    out = open(args.out, "a") if args.out else None

    def emit(row: dict) -> None:
        line = json.dumps({"config": args.config, "steps": args.steps, **row})
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    session = session_for("eager", None)
    pipe = session.pipeline
    identity = CompressionConfig()
    base, _ = pipe.accuracy(pipe.prepare(identity), identity, session.data.test, "test")
    config = CompressionConfig.from_dict(CONFIGS[args.config])
    settings = pipe.recovery_settings(config)
    t0 = time.time()
    start = distil(session, config)
    before, _ = pipe.accuracy(start, config, session.data.test, "test")
    emit({"aug": "before the polish", "val": pipe.score(start, config).top1, "test": before.top1,
          "s": round(time.time() - t0)})
    for aug in args.augments:
        t = time.time()
        tests: list = []
        follows: list = []

        def score(m):  # val selects; test at each checkpoint only read (--test-at-checkpoints), never selects
            if args.test_at_checkpoints:
                tests.append(test_entry(session, m, config, base))
            val = pipe.score(m, config, against_teacher=True)
            follows.append([round(val.reference_kl, 6), val.reference_agreement])
            return -val.reference_kl if args.select == "teacher" else val.top1

        model, seen = polished(copy.deepcopy(start), session.base, session.data.train, steps=args.steps,
                               rung=len(pipe.ladder), score=score, every=-(-args.steps // 8),
                               ema=args.ema, **{**settings, "augment": aug,
                                                **({"lr": args.lr} if args.lr else {})})
        e = test_entry(session, model, config, base)
        row = {"aug": aug, **({"ema": args.ema} if args.ema else {}), "lr": args.lr or settings["lr"],
               "select": args.select, "best_step": seen["best_step"],
               "val": seen["scores"], "test": e["test_accuracy"],
               "drop": e["paired_drop"], "low": e["paired_drop_low"], "high": e["paired_drop_high"],
               "discordant": e["discordant"], "s": round(time.time() - t)}
        row["val_teacher_at_checkpoints"] = {str(step): x for step, x in zip(seen["scores"], follows)}
        if tests:
            row["test_at_checkpoints"] = {str(step): [x["test_accuracy"], *x["discordant"]]
                                          for step, x in zip(seen["scores"], tests)}
        emit(row)
    if out is not None:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
