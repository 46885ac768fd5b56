"""Whether a lower rung's val KL from the teacher foretells a candidate's top rung better than its val top-1 does.

    .venv/bin/python benchmarks/promote_by.py RUN_DIR [RUN_DIR ...] [--threads 1] [--out FILE.json]

Rungs promote the candidates that look best on (val top-1, latency) after a few steps. For
every candidate of each run that reached the top rung (each rung's weights kept in
``RUN/rungs/``), rebuilt at each rung and built in the run's runtime as ``pick`` builds it:
val top-1 and the val mean KL(teacher || candidate) at every rung, and test top-1 at the
top rung (read, never used to rank). Per run and lower rung: the share of candidate pairs
that each lower-rung figure orders as the top rung's test top-1 orders them (pairs tied on
test left out, a tie in the figure counts half), and as the top rung's val KL orders them.
Only promoted candidates reach the top rung, so this compares the two figures among those
the rungs already kept (their spread is narrower than a rung's whole field). What would
rank promotions by the KL rests on it (docs/results.md, "Choosing the variant by the
teacher"). Accuracy only: the machine's load changes the wall time.
"""

from __future__ import annotations

import json
import sys

from choose_by import cli, concordance, top_rung_trials


def run_rows(run_dir: str) -> dict:
    """Per top-rung candidate of one run: val top-1 and val KL at each rung, test top-1 at the top rung."""
    from vitsearch.search.results.testacc import checkpoint_path, measure_test_deployed, rebuild_prepared

    view, session, top, kept = top_rung_trials(run_dir)
    pipe = session.pipeline
    rows = []
    for number, config, row in kept:
        if not all(checkpoint_path(view.path, number, k).exists() for k in range(top)):
            continue
        rec = {"number": number, "summary": row.get("summary")}
        for k in range(top + 1):
            prepared = rebuild_prepared(session, config, k, view.path, number, row.get("recovery_threads"))
            program = pipe.build(prepared, config)
            val = pipe.score(prepared, config, program, against_teacher=True)
            rec[f"val_top1_{k}"], rec[f"val_kl_{k}"] = val.top1, round(val.reference_kl, 6)
            if k == top:
                rec["test_top1"] = measure_test_deployed(session, prepared, config, program)["test_accuracy"]
        rows.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)
    test = [r["test_top1"] for r in rows]
    final_kl = [-r[f"val_kl_{top}"] for r in rows]
    by_rung = {}
    for k in range(top):
        figures = {"val_top1": [r[f"val_top1_{k}"] for r in rows], "val_kl": [-r[f"val_kl_{k}"] for r in rows]}
        by_rung[str(k)] = {"pairs_ordered_as_top_rung_test": {n: concordance(test, f) for n, f in figures.items()},
                           "pairs_ordered_as_top_rung_val_kl": {n: concordance(final_kl, f)
                                                                for n, f in figures.items()}}
    return {"run": str(view.path), "study": view.spec.name, "runtime": pipe.runtime.name, "top_rung": top,
            "rungs": list(view.spec.recovery.ladder), "candidates": len(rows), "by_lower_rung": by_rung,
            "rows": rows}


def main() -> None:
    cli(__doc__, "a lower rung's val KL from the teacher (smaller first) vs its val top-1 as an ordering of the top "
                 "rung's test top-1 and val KL, per run; every candidate that reached the top rung", run_rows)


if __name__ == "__main__":
    sys.exit(main())
