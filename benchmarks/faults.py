"""Fault benchmark: a short study SIGKILLed at a random moment, resumed, and checked.

    .venv/bin/python benchmarks/faults.py [--runs 20] [--trials 8] [--seed 0] [--rungs 0,20]
                                          [--out benchmarks/results/faults]

Each run starts `vitsearch run` (the built-in model, 2 workers, batch 1, latency
measured with few passes, SQLite in the run dir) in a process group of its own, waits a
random time, and SIGKILLs, at random, either

* the **driver**: its whole process group (the driver and the Ray instance it started,
  as a machine or container loss would), then `vitsearch run --resume` finishes it; or
* a **worker**: one Ray worker process evaluating a batch; the driver goes on (Tune
  retries the batch).

With ``--rungs`` every other run uses rungs of distillation (e.g. ``0,20``: scored
zero-shot, the best third distilled 20 steps), so some kills land while a promotion is
in flight.

It then checks the study: completed trials lost (COMPLETE before the kill, not after),
configs evaluated twice (evaluated or settled on their measured cost, reuses left out),
trials left RUNNING or WAITING, whether exactly the requested number was evaluated
(COMPLETE, not reused: what ``--trials`` counts), the trials that were in flight at the
kill and asked again, promotions issued and never finished, and whether the
uncompressed model was evaluated and is on the final front. Prints one row per run and
the totals (Markdown), and writes them to OUT/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

STUDY = {
    "name": "faults",
    "latency": {"batch_size": 1, "threads": 1, "warmup": 1, "max_runs": 20, "max_seconds": 0.1, "predictor": "off"},
    "data": {"eval_batch_size": 500, "calibration_size": 32},
    "constraints": {"max_accuracy_drop": 0.05},
    "search": {"workers": 2, "cpus": 2, "seed": 0, "batch_size": 1},
}


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the driver's Ray processes and workers)."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def db_states(db: Path) -> dict[int, str]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=2) as con:
            return dict(con.execute("select number, state from trials").fetchall())
    except sqlite3.Error:
        return {}


def kill_run(proc: subprocess.Popen, tree: list[int]) -> None:
    """SIGKILL the driver's process group and anything it started that left the group."""
    for target in [proc.pid]:
        try:
            os.killpg(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def one_run(i: int, rng: random.Random, study: Path, out: Path, trials: int) -> dict:
    """Start, kill at a random moment, resume if needed, check."""
    row = _one_run(i, rng, study, out, trials)
    return {"rungs": "rungs" in study.stem, **row}


def _one_run(i: int, rng: random.Random, study: Path, out: Path, trials: int) -> dict:
    """The run itself: a kill of the driver or of a worker, then the checks."""
    run = out / f"run{i:02d}"
    env = {**os.environ, "VITSEARCH_LOCK_DIR": str(out / "locks")}
    cmd = [sys.executable, "-m", "vitsearch.search.cli", "run", str(study), "--trials", str(trials)]
    proc = subprocess.Popen([*cmd, "--out", str(run)], stdout=subprocess.DEVNULL,
                            stderr=open(out / f"run{i:02d}.stderr", "w"), start_new_session=True, env=env)
    kind = rng.choice(["driver", "worker"])
    started = time.time()
    # a random moment while trials are being evaluated: after the first completes, before the last
    while "COMPLETE" not in db_states(run / "optuna.db").values() and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(rng.uniform(0, 10))
    row = {"run": i, "killed": kind, "at_s": round(time.time() - started, 1)}
    before = db_states(run / "optuna.db")
    row["complete_at_kill"] = sum(s == "COMPLETE" for s in before.values())
    if proc.poll() is not None:
        row["killed"] = "none (finished first)"
    elif kind == "driver":
        kill_run(proc, descendants(proc.pid))
        resumed = subprocess.run([*cmd, "--resume", str(run)], capture_output=True, text=True, env=env, timeout=900)
        row["resume_rc"] = resumed.returncode
    else:
        workers = [p for p in descendants(proc.pid) if "ImplicitFunc" in cmdline(p)]
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)
        else:
            row["killed"] = "worker (none running)"
        row["resume_rc"] = proc.wait(timeout=900)
    return {**row, **check(run, before, trials)}


def check(run: Path, before: dict[int, str], trials: int) -> dict:
    """The invariants, read from the finished run's Optuna study."""
    import optuna

    study = optuna.load_study(study_name="faults", storage=f"sqlite:///{run / 'optuna.db'}")
    final = {t.number: t for t in study.trials}
    complete = [t for t in final.values() if t.state.name == "COMPLETE"]
    own = [t for t in final.values() if t.user_attrs.get("reused_from") is None and (
        t.state.name == "COMPLETE" or (t.state.name == "PRUNED" and t.user_attrs.get("settled")))]
    worked = [t.user_attrs.get("config") for t in own if t.user_attrs.get("eval_seconds") is not None]
    attrs = study.user_attrs
    issued = [k.split(":", 1)[1] for k in attrs if k.startswith("promoted:")]
    return {
        "complete": sum(t.state.name == "COMPLETE" and t.user_attrs.get("reused_from") is None for t in own),
        "exact": sum(t.state.name == "COMPLETE" for t in own) == trials,
        "lost": sum(1 for n, s in before.items() if s == "COMPLETE" and final[n].state.name != "COMPLETE"),
        "twice": len(worked) - len(set(worked)),
        "left_running_waiting": sum(t.state.name in ("RUNNING", "WAITING") for t in final.values()),
        "asked_again": sum(1 for t in final.values() if t.system_attrs.get("failed_trial") is not None),
        "promoted": len(issued),
        "promotions_lost": sum(f"rung:{p}" not in attrs and f"rung_failed:{p}" not in attrs for p in issued),
        **uncompressed(run, complete),
    }


def uncompressed(run: Path, complete: list) -> dict:
    """Whether the uncompressed model (the identity config) was evaluated and is on the run's final front."""
    from vitsearch.spaces import CompressionConfig

    identity = [t for t in complete if t.user_attrs.get("reused_from") is None and t.user_attrs.get("config")
                and CompressionConfig.from_dict(json.loads(t.user_attrs["config"])) == CompressionConfig()]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    on_front = bool(identity) and identity[0].number in summary.get("pareto", [])
    return {"uncompressed_evaluated": bool(identity), "uncompressed_on_front": on_front,
            "uncompressed_dominated_by": None if on_front or not identity else _dominator(run, identity[0].number)}


def _dominator(run: Path, number: int) -> int | None:
    """A front trial at least as accurate (at its highest rung) and faster than trial ``number``, if any."""
    import pandas as pd

    frame = pd.read_parquet(run / "trials.parquet")
    frame = frame[frame.state == "COMPLETE"].set_index("number")
    me = frame.loc[number]
    better = frame[(frame.accuracy >= me.accuracy) & (frame.latency_ms < me.latency_ms) & (frame.index != number)]
    return int(better.index[0]) if len(better) else None


def recheck(out: Path) -> list[dict]:
    """Recompute the uncompressed-model columns of faults.json from the run dirs (kept rows otherwise)."""
    import optuna

    rows = json.loads((out / "faults.json").read_text())["rows"]
    for row in rows:
        run = out / f"run{row['run']:02d}"
        study = optuna.load_study(study_name="faults", storage=f"sqlite:///{run / 'optuna.db'}")
        row.update(uncompressed(run, [t for t in study.trials if t.state.name == "COMPLETE"]))
    doc = json.loads((out / "faults.json").read_text())
    (out / "faults.json").write_text(json.dumps({**doc, "rows": rows}, indent=1))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/faults")
    ap.add_argument("--rungs", default=None, help="every other run with these rungs of distillation, e.g. 0,20")
    ap.add_argument("--start", type=int, default=0, help="continue: keep the first START rows of OUT/faults.json")
    ap.add_argument("--recheck", action="store_true", help="recompute the uncompressed-model columns (written back), print the table")
    args = ap.parse_args()
    import yaml

    out = Path(args.out).resolve()
    if args.recheck:
        print_table(recheck(out))
        return
    out.mkdir(parents=True, exist_ok=True)
    study = out / "study.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    studies = [study]
    if args.rungs:
        rungs = [int(x) for x in args.rungs.split(",")]
        studies.append(out / "study-rungs.yaml")
        studies[1].write_text(yaml.safe_dump({**STUDY, "recovery": {"rungs": rungs, "reduction": 3}}))
    rng = random.Random(args.seed + args.start)
    rows = json.loads((out / "faults.json").read_text())["rows"][:args.start] if args.start else []
    for i in range(args.start, args.runs):
        if (out / f"run{i:02d}").exists():
            subprocess.run(["rm", "-rf", str(out / f"run{i:02d}")], check=True)
        rows.append(one_run(i, rng, studies[i % len(studies)], out, args.trials))
        print(json.dumps(rows[-1]), flush=True)
        (out / "faults.json").write_text(json.dumps({"load_at_end": os.getloadavg()[0], "rows": rows}, indent=1))
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    cols = ["run", "rungs", "killed", "at_s", "complete_at_kill", "asked_again", "complete", "lost", "twice",
            "left_running_waiting", "promoted", "promotions_lost", "uncompressed_evaluated", "uncompressed_on_front",
            "uncompressed_dominated_by"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    killed = [r for r in rows if r["killed"] in ("driver", "worker")]
    print(f"\n{len(killed)} kills ({sum(r['killed'] == 'driver' for r in killed)} driver, "
          f"{sum(r['killed'] == 'worker' for r in killed)} worker): lost {sum(r['lost'] for r in rows)}, "
          f"evaluated twice {sum(r['twice'] for r in rows)}, left RUNNING/WAITING "
          f"{sum(r['left_running_waiting'] for r in rows)}, exact count {sum(r['exact'] for r in rows)}/{len(rows)}, "
          f"asked again {sum(r['asked_again'] for r in rows)}, promotions {sum(r.get('promoted', 0) for r in rows)} "
          f"(lost {sum(r.get('promotions_lost', 0) for r in rows)}), uncompressed evaluated "
          f"{sum(r['uncompressed_evaluated'] for r in rows)}/{len(rows)}, on the front "
          f"{sum(r['uncompressed_on_front'] for r in rows)}/{len(rows)} (else dominated by a measured "
          f"candidate: {sum(r.get('uncompressed_dominated_by') is not None for r in rows)})")


if __name__ == "__main__":
    main()
