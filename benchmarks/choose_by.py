"""Which val figure orders a run's candidates as their test top-1 does: val top-1 or the val KL from the teacher.

    .venv/bin/python benchmarks/choose_by.py RUN_DIR [RUN_DIR ...] [--threads 1] [--out FILE.json]

For every candidate of each run that reached the top rung (its weights kept in
``RUN/rungs/``), rebuilt and built in the run's runtime as ``pick`` builds it: val top-1,
the val images' mean KL(teacher || candidate) and top-1 agreement with the teacher (the
teacher: the uncompressed model in fp32), and test top-1 (read, never used to rank).
Per run: the share of candidate pairs with different test top-1 that each val figure
orders the same way (a tie in the figure counts half), and Spearman's rho with test. What
``pick --choose-by`` ranks variants by rests on this (docs/results.md, "Choosing
the variant by the teacher"). Accuracy only: the machine's load changes the wall time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time


def concordance(test: list[float], figure: list[float]) -> float | None:
    """Share of the pairs with different ``test`` that ``figure`` orders the same way (ties in it: half)."""
    right = pairs = 0.0
    for i, j in itertools.combinations(range(len(test)), 2):
        if test[i] == test[j]:
            continue
        pairs += 1
        s = (test[i] - test[j]) * (figure[i] - figure[j])
        right += 1.0 if s > 0 else 0.5 if s == 0 else 0.0
    return right / pairs if pairs else None


def top_rung_trials(run_dir: str):
    """(view, session, top, trials) of one run: ``top``, its top rung; trials, (number, config, row) of every
    completed trial whose top-rung weights the run kept (``RUN/rungs/``)."""
    import pandas as pd

    from vitsearch.search.results.runview import load_run
    from vitsearch.search.results.testacc import checkpoint_path
    from vitsearch.search.session import load_session
    from vitsearch.spaces import CompressionConfig

    view = load_run(run_dir)
    top = len(view.spec.recovery.ladder) - 1
    trials = pd.read_parquet(view.path / "trials.parquet")
    kept = [(int(row["number"]), CompressionConfig.from_dict(json.loads(row["config"])), row)
            for _, row in trials[trials["state"] == "COMPLETE"].iterrows()
            if checkpoint_path(view.path, int(row["number"]), top).exists()]
    return view, load_session(view.spec), top, kept


def candidates(run_dir: str) -> dict:
    """Val top-1, val KL and agreement with the teacher, and test top-1 of every top-rung candidate of one run."""
    from scipy.stats import spearmanr

    from vitsearch.search.results.testacc import measure_test_deployed, rebuild_prepared

    view, session, top, kept = top_rung_trials(run_dir)
    pipe = session.pipeline
    rows = []
    for number, config, row in kept:
        prepared = rebuild_prepared(session, config, top, view.path, number, row.get("recovery_threads"))
        program = pipe.build(prepared, config)
        val = pipe.score(prepared, config, program, against_teacher=True)
        test = measure_test_deployed(session, prepared, config, program)
        rows.append({"number": number, "latency_ms": float(row["latency_ms"]), "val_top1": val.top1,
                     "val_kl": round(val.reference_kl, 6), "val_agreement": val.reference_agreement,
                     "test_top1": test["test_accuracy"], "summary": row.get("summary")})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    test = [r["test_top1"] for r in rows]
    figures = {"val_top1": [r["val_top1"] for r in rows], "val_kl": [-r["val_kl"] for r in rows],
               "val_agreement": [r["val_agreement"] for r in rows]}
    return {"run": str(view.path), "study": view.spec.name, "runtime": pipe.runtime.name, "top_rung": top,
            "candidates": len(rows),
            "pairs_ordered_as_test": {k: concordance(test, v) for k, v in figures.items()},
            "spearman_with_test": {k: float(spearmanr(test, v)[0]) for k, v in figures.items()},
            "rows": rows}


def cli(doc: str, what: str, per_run) -> None:
    """The command line of this benchmark and benchmarks/promote_by.py: RUN_DIR ..., --threads, --out; prints (and
    writes) one JSON object: ``what``, the CPU, ``per_run(run_dir)`` of each run, the seconds it took."""
    import torch

    from vitsearch.evaluators.latency.fingerprint import read_cpuinfo

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the JSON here too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = {"what": what, "cpu": read_cpuinfo().get("model"), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "runs": [per_run(r) for r in args.runs]}
    out["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


def main() -> None:
    cli(__doc__, "val KL from the teacher (smaller first) vs val top-1 as an ordering of test top-1, per run; "
                 "every candidate at the top rung", candidates)


if __name__ == "__main__":
    sys.exit(main())
