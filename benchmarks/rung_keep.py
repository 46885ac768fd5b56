"""Whether a candidate's weights should be kept from the rung where they followed the teacher most closely on val.

    .venv/bin/python benchmarks/rung_keep.py [--n 16] [--jobs 2] [--threads 1] [--seed 24] [--rungs 10 50 150]
                                             [--out FILE.json]

The same ``--n`` configs of the default study's space as ``benchmarks/rung_augment.py``
(scrambled Sobol points, seed 24), each distilled along the study's whole ladder (10 / 50 /
150 steps) with its settings, and scored after every rung as the study deploys it: val
top-1, val KL(teacher || candidate), test top-1 (read, never used to choose). Two rules
for the weights a top-rung candidate keeps: the top rung's (what the search does), or the
rung with the smallest val KL. The summary: test and val of the second against the first,
paired on the same images, mean over configs with a 95 % t-interval, and how often the
rules differ. Accuracy only: the machine's load changes the wall time, no figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def scored_rungs(session, config) -> list[dict]:
    """Val top-1, val KL and test top-1 (with its per-image mask) after each rung, distilled as the search does."""
    from vitsearch.evaluators.distill import distil_further, distilled

    pipe = session.pipeline
    settings = pipe.recovery_settings(config)
    structure, ladder = pipe.runtime.structure(config), pipe.ladder
    out = []
    student = None
    for k, steps in enumerate(ladder):
        if k == 0:
            student = distilled(session.base, structure, session.data.train, steps=steps,
                                calibration=session.data.calibration, **settings)
        else:
            distil_further(student, session.base, session.data.train, steps=steps - ladder[k - 1], rung=k, **settings)
        val = pipe.score(student, config, against_teacher=True)
        test, _ = pipe.accuracy(student, config, session.data.test, "test")
        out.append({"rung": k, "steps": steps, "val_top1": val.top1, "val_kl": round(val.reference_kl, 6),
                    "test_top1": test.top1, "test_mask": test.correct_mask()})
    return out


def one_job(job: int, args) -> list[dict]:
    """Rows of configs ``job``, ``job + jobs``, ...: every rung's figures and the two rules' test, paired."""
    import torch

    from qad import session_for
    from rung_augment import configs_of
    from vitsearch.evaluators.paired import paired_drop

    torch.set_num_threads(args.threads)
    session = session_for("eager", args.rungs)
    rows = []
    for i, config in enumerate(configs_of(session, args.n, args.seed)):
        if i % args.jobs != job:
            continue
        rungs = scored_rungs(session, config)
        top, closest = rungs[-1], min(rungs, key=lambda r: (r["val_kl"], -r["rung"]))
        vs = paired_drop(top["test_mask"], closest["test_mask"])
        rows.append({"index": i, "config": config.to_dict(), "closest_rung": closest["rung"],
                     "rungs": [{k: v for k, v in r.items() if k != "test_mask"} for r in rungs],
                     "closest_vs_top": {"test_points": round(100 * (closest["test_top1"] - top["test_top1"]), 3),
                                        "val_points": round(100 * (closest["val_top1"] - top["val_top1"]), 3),
                                        "images_lost_gained": [vs.ref_only, vs.cand_only]}})
        print(f"config {i:>2}: " + "  ".join(f"rung {r['rung']} val {r['val_top1']:.3f} kl {r['val_kl']:.4f} test "
                                            f"{r['test_top1']:.3f}" for r in rungs), flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    """The closest rung's weights against the top rung's: mean test / val difference over configs, a 95 % t-interval."""
    from rung_augment import over_configs

    out = {"configs": len(rows), "closest_not_top": sum(r["closest_rung"] != len(r["rungs"]) - 1 for r in rows)}
    for split in ("test", "val"):
        out[split] = over_configs([r["closest_vs_top"][f"{split}_points"] for r in rows])
    out["test"]["images_lost_gained"] = [sum(r["closest_vs_top"]["images_lost_gained"][k] for r in rows)
                                         for k in (0, 1)]
    return out


def main() -> None:
    from rung_augment import run_jobs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=24, help="the Sobol points' scramble")
    ap.add_argument("--jobs", type=int, default=2, help="processes side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--rungs", type=int, nargs="+", help="step counts in place of the study's rungs (a quick look)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rung_keep.json"))
    args = ap.parse_args()
    run_jobs(one_job, args, "rung_keep.py", summary=summary,
             rule="closest: the rung with the smallest val KL from the teacher (ties: the later rung)")


if __name__ == "__main__":
    main()
