"""Engine benchmark: where worker time goes, and what 2 workers and the pipeline buy.

    .venv/bin/python benchmarks/engine.py [--study default] [--trials 40] [--compare workers|pipeline|batch]

Runs `vitsearch run` on the same study and seed several times back to back, each in a
fresh run dir under benchmarks/results/engine/, varying one thing:

* ``workers``: --workers 1 vs 2 (throughput ratio, side by side);
* ``pipeline``: 2 workers with the worker's evaluation thread off vs on
  (VITSEARCH_ENGINE_PIPELINE=0/1: without it, every report's round trip through the
  driver stalls the worker);
* ``batch``: 2 workers, --batch-size 2 vs 5 vs 10.

For each it prints the run's own books (summary.json "engine", see search/engine/accounting.py):
wall time (Ray start included), evaluations, evaluation seconds, throughput, the
per-trial (steady-state) overhead, the all-in overhead with the one-off start-up and
drain, and driver CPU per settled trial. All measured on this machine, one run each:
compare within a table, not across runs on different days.
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

VARIANTS = {
    "workers": [("1 worker", ["--workers", "1"], {}), ("2 workers", ["--workers", "2"], {})],
    "pipeline": [("no pipeline", ["--workers", "2"], {"VITSEARCH_ENGINE_PIPELINE": "0"}),
                 ("pipeline", ["--workers", "2"], {"VITSEARCH_ENGINE_PIPELINE": "1"})],
    "batch": [(f"batch {b}", ["--workers", "2", "--batch-size", str(b)], {}) for b in (2, 5, 10)],
}


def run_once(study: str, trials: int, extra: list[str], env: dict, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "vitsearch.search.cli", "run", study, "--trials", str(trials),
                           "--out", str(out), *extra], capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    summary = json.loads((out / "summary.json").read_text())
    summary["wall_s"] = round(time.time() - start, 1)
    summary["throughput_per_s"] = summary["evaluations"] / summary["seconds"]
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="default")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--compare", choices=sorted(VARIANTS), default="workers")
    ap.add_argument("--out", default="benchmarks/results/engine")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    rows = {}
    for name, extra, env in VARIANTS[args.compare]:
        rows[name] = run_once(args.study, args.trials, extra, env, Path(args.out) / name.replace(" ", "-"))
    print(f"engine benchmark, study {args.study}, {args.trials} trials, compare {args.compare}, "
          f"load average before {load:.2f} (measured, one run each)")
    print(f"{'variant':>12} {'wall s':>7} {'fit s':>6} {'evals':>5} {'eval s':>7} {'evals/s':>8} {'per-trial':>9} "
          f"{'all-in':>7} {'start s':>7} {'drain s':>7} {'drv cpu/trial':>12}")
    for name, r in rows.items():
        e = r.get("engine") or {}
        print(f"{name:>12} {r['wall_s']:>7.1f} {r['seconds']:>6.1f} {r['evaluations']:>5} {r['evaluation_seconds']:>7.1f} "
              f"{r['throughput_per_s']:>8.3f} {e.get('steady_overhead_share', float('nan')):>9.1%} "
              f"{e.get('engine_overhead_share', float('nan')):>7.1%} {e.get('startup_seconds', float('nan')):>7.1f} "
              f"{e.get('drain_seconds', float('nan')):>7.1f} {e.get('driver_cpu_per_settled_trial', float('nan')):>12.3f}")
    names = list(rows)
    print(f"throughput {names[-1]} / {names[0]}: "
          f"{rows[names[-1]]['throughput_per_s'] / rows[names[0]]['throughput_per_s']:.2f}x (measured)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"engine-{args.compare}.json").write_text(
        json.dumps({"load_before": load, "trials": args.trials, **rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
