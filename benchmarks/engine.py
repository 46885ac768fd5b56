"""Engine benchmark: throughput with 1 vs 2 workers and engine overhead, side by side.

    .venv/bin/python benchmarks/engine.py [--study default] [--trials 24]

Runs `vitsearch run` on the same study and seed with --workers 1 and --workers 2 (each
in a fresh run dir under benchmarks/results/engine/), back to back, and reports for each:
wall time (Ray start included), fit time, evaluations, evaluation seconds, throughput
(evaluations per second of fit time) and the engine overhead share (worker time not
spent evaluating). Timings are from this machine, one run each: compare the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run_once(study: str, trials: int, workers: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "vitsearch.search.cli", "run", study, "--trials", str(trials),
                           "--workers", str(workers), "--out", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    summary = json.loads((out / "summary.json").read_text())
    summary["wall_s"] = round(time.time() - start, 1)
    summary["throughput_per_s"] = summary["evaluations"] / summary["seconds"]
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="default")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--out", default="benchmarks/results/engine")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    rows = {w: run_once(args.study, args.trials, w, Path(args.out) / f"workers{w}") for w in (1, 2)}
    print(f"engine benchmark, study {args.study}, {args.trials} trials, load average before {load:.2f}")
    print(f"{'workers':>7} {'wall s':>7} {'fit s':>6} {'evals':>5} {'eval s':>7} {'evals/s':>8} {'overhead':>8}")
    for w, r in rows.items():
        print(f"{w:>7} {r['wall_s']:>7.1f} {r['seconds']:>6.1f} {r['evaluations']:>5} {r['evaluation_seconds']:>7.1f} "
              f"{r['throughput_per_s']:>8.3f} {r['engine_overhead_share']:>8.1%}")
    print(f"throughput 2 workers / 1 worker: {rows[2]['throughput_per_s'] / rows[1]['throughput_per_s']:.2f}x (measured)")
    Path(args.out, "engine.json").write_text(json.dumps({"load_before": load, **{str(k): v for k, v in rows.items()}},
                                                        indent=2, default=str))


if __name__ == "__main__":
    main()
