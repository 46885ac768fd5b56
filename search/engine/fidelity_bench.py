"""``vitsearch bench-search STUDY --fidelity ...``: what rungs of distillation buy, at equal wall time.

Each fidelity is the study's real search (``vitsearch run``, in a fresh process: its own
Ray, its own SQLite storage, nothing shared between runs) with a modified copy of the study:

* **zero-shot**: no recovery (``recovery.steps: 0``, one rung of 0 steps);
* **rungs**: the study's ``recovery.rungs`` and reduction, as they are;
* **full**: every candidate distilled for the top rung's steps (one rung).

Every run gets the same time budget (``search.time_budget_minutes``: no batch or promotion
is handed out after it, what is in flight finishes and is recorded, nothing is left
RUNNING) and a ``--trials`` too large to matter, so time alone stops it; its sampler is
sized for the study's ``search.trials``. Runs alternate fidelities seed by seed so a drift
of the machine's speed hits them alike.

Quality is the hypervolume of each run's front re-measured on the **test** split, which the
search never saw: the run's Pareto front (selected on val, each candidate at the highest
rung it reached) with the test accuracy the driver measures for it (``summary.json``
``pareto_test``), against its latency as a ratio to the uncompressed model in the study's
runtime (the interleaved measurement's ratio where there is one - outside eager divided by
the uncompressed program's own, every ratio being to the eager model - else latency / the
run's reference timing; the uncompressed model itself is 1 by definition), so runs timed
minutes apart compare. One reference point for every run and fidelity: test accuracy = the uncompressed
model's test accuracy minus the study's ``max_accuracy_drop`` (0.05 when the study sets
none), latency ratio = 1 (nothing slower than the uncompressed model is a gain). The
hypervolume is then in (accuracy fraction) x (share of the uncompressed latency saved);
its largest possible value is the accuracy budget (e.g. 0.05).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FIDELITIES = ("zero-shot", "rungs", "full")
#: ``--trials`` of every fidelity run: large enough that the time budget alone stops it
UNBOUNDED_TRIALS = 100_000
#: accuracy budget of the reference point when the study sets no max_accuracy_drop
DEFAULT_DROP = 0.05


def parse_fidelities(text: str) -> list[str]:
    """``"zero-shot,rungs"`` -> the list; ConfigError (one line) for an unknown or repeated name."""
    from vitsearch.spaces.errors import ConfigError

    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in FIDELITIES]
    if bad or not names or len(set(names)) != len(names):
        what = repr(bad[0]) if bad else repr(text)
        raise ConfigError(f"--fidelity: {what} is not a list of distinct fidelities; use a comma list of "
                          f"{', '.join(FIDELITIES)}")
    return names


def check_args(spec, fidelities: list[str], minutes: float, seeds: int, sampler: str | None, out: Path) -> None:
    """Everything judged before a file is written: ConfigError with one line."""
    from vitsearch.search.preflight import check_out_dir
    from vitsearch.spaces.errors import ConfigError

    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"--wall-minutes: must be a finite number of minutes > 0, got {minutes}")
    if seeds <= 0:
        raise ConfigError(f"--seeds: must be a positive integer, got {seeds}")
    if sampler is not None and sampler not in ("nsga2", "tpe", "gp", "random"):
        raise ConfigError(f"--sampler: {sampler!r} is not a sampler; use nsga2, tpe, gp or random")
    ladder = spec.recovery.ladder
    if "rungs" in fidelities and len(ladder) < 2:
        raise ConfigError(f"--fidelity rungs: study {spec.name!r} has no recovery.rungs (its ladder is "
                          f"{list(ladder)}); give a study with rungs, e.g. [10, 50, 150]")
    if "full" in fidelities and ladder[-1] == 0:
        raise ConfigError(f"--fidelity full: study {spec.name!r} has no recovery (0 steps); give a study with "
                          "recovery.rungs or recovery.steps > 0")
    check_out_dir(out, "--out")
    if (out / "runs").is_dir() and any((out / "runs").iterdir()):
        raise ConfigError(f"--out: {str(out)!r} already holds a fidelity benchmark (runs/); choose another --out")


def fidelity_spec(spec, fidelity: str, minutes: float, seed: int, sampler: str | None):
    """The study as one fidelity's run sees it (own storage in its run dir, the time budget, the seed)."""
    rc = spec.recovery
    if fidelity == "zero-shot":
        rec = rc.model_copy(update={"rungs": None, "steps": 0})
    elif fidelity == "full":
        rec = rc.model_copy(update={"rungs": None, "steps": rc.ladder[-1]})
    else:
        rec = rc
    search = spec.search.model_copy(update={"time_budget_minutes": float(minutes), "seed": seed, "storage": None,
                                            "sampler": sampler or spec.search.sampler})
    return spec.model_copy(update={"recovery": rec, "search": search})


def _reference(spec, session) -> dict[str, Any]:
    """The hypervolume reference point, shared by every run: (test accuracy floor, latency ratio 1)."""
    from vitsearch.search.results.testacc import measure_test

    base = measure_test(session, session.reference)
    drop = spec.constraints.max_accuracy_drop
    how = ("the study's max_accuracy_drop" if drop is not None else f"{DEFAULT_DROP} (the study sets no "
           "max_accuracy_drop)")
    drop = DEFAULT_DROP if drop is None else drop
    return {"test_accuracy": base["test_accuracy"] - drop, "latency_ratio": 1.0,
            "how": f"uncompressed model's test accuracy {base['test_accuracy']:.4f} ({base['test_n']} images, "
                   f"measured) minus {drop} ({how}); latency ratio 1 = the uncompressed model",
            "base_test": base}


def front_points(run_dir: Path, runtime: str | None = None) -> list[dict[str, Any]]:
    """The run's front (val-selected, highest rung) with test accuracy and latency ratio per point: to the
    uncompressed model in the study's ``runtime`` (default: the run's study file's)."""
    import pandas as pd

    summary = json.loads((run_dir / "summary.json").read_text())
    frame = pd.read_parquet(run_dir / "trials.parquet").set_index("number")
    ref_ms = (summary.get("reference") or {}).get("latency_ms")
    if runtime is None:
        from vitsearch.search.study import load_study

        runtime = load_study(run_dir / "study.yaml").latency.runtime
    from vitsearch.search.results.basis import is_reference_runtime, is_uncompressed_config

    reference = is_reference_runtime(runtime)
    uncompressed = 1.0 if reference else _uncompressed_ratio(frame, summary)
    points = []
    for rec in summary.get("pareto_test", []):
        row = frame.loc[int(rec["number"])]
        ratio = row.get("latency_ratio")
        if is_uncompressed_config(row["config"]):
            ratio, how = 1.0, "the uncompressed model itself"
        elif ratio is not None and ratio == ratio and uncompressed is not None:
            ratio, how = ratio / uncompressed, ("interleaved ratio to the uncompressed model" if reference
                                                else f"interleaved ratio to the eager model / the uncompressed "
                                                     f"program's in {runtime} ({uncompressed:.3f})")
        else:
            ratio, how = row["latency_ms"] / ref_ms, "latency / the run's uncompressed-model timing"
        points.append({"number": int(rec["number"]), "rung": rec.get("rung"), "val_accuracy": rec.get("accuracy"),
                       "test_accuracy": rec.get("test_accuracy"), "test_lo": rec.get("test_lo"),
                       "test_hi": rec.get("test_hi"), "latency_ms": float(row["latency_ms"]),
                       "latency_ratio": float(ratio), "latency_ratio_how": how,
                       "latency_source": row.get("latency_source"), "summary": row.get("summary")})
    return points


def _uncompressed_ratio(frame, summary: dict) -> float | None:
    """Outside eager, the uncompressed program's ratio to the interleaved (eager) reference: its trial's recorded
    ratio (as ``list`` takes it), else the run-start timing's; None when the run recorded neither."""
    from vitsearch.search.results.basis import is_uncompressed_config

    timed = frame[frame["latency_ratio"].notna()] if "latency_ratio" in frame else frame.iloc[:0]
    first = next((r["latency_ratio"] for _, r in timed.iterrows() if is_uncompressed_config(r.get("config"))), None)
    if first is not None:
        return float(first)
    start = (summary.get("reference") or {}).get("latency_ratio")
    return float(start) if start else None


def front_hypervolume(points: list[dict], ref: dict) -> float:
    """Hypervolume of (test accuracy up, latency ratio down) up to the reference point."""
    import numpy as np

    from vitsearch.search.engine.rungs import hypervolume_2d

    pts = np.array([[p["latency_ratio"], -p["test_accuracy"]] for p in points if p["test_accuracy"] is not None])
    return hypervolume_2d(pts.reshape(-1, 2), (ref["latency_ratio"], -ref["test_accuracy"]))


def _one_run(study_file: Path, run_dir: Path, log_file: Path) -> tuple[int, float]:
    """``vitsearch run`` in a fresh process (its output to ``log_file``); (exit code, wall seconds)."""
    t0 = time.time()
    with open(log_file, "w") as log:
        proc = subprocess.run([sys.executable, "-m", "vitsearch.search.cli", "run", str(study_file), "--out",
                               str(run_dir), "--trials", str(UNBOUNDED_TRIALS)], stdout=log, stderr=subprocess.STDOUT)
    return proc.returncode, time.time() - t0


def _run_record(fid: str, seed: int, run_dir: Path, code: int, wall: float, ref: dict, log_file: Path) -> dict:
    record: dict[str, Any] = {"fidelity": fid, "seed": seed, "run_dir": str(run_dir), "exit_code": code,
                              "wall_seconds": round(wall, 1), "log": str(log_file)}
    if code != 0 or not (run_dir / "summary.json").is_file():
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] if log_file.is_file() else []
        record["error"] = tail[0] if tail else f"exit code {code}"
        return record
    s = json.loads((run_dir / "summary.json").read_text())
    points = front_points(run_dir)
    record.update(search_seconds=s["seconds"], stopped_at_time_budget=s.get("stopped_at_time_budget"),
                  evaluated=s.get("evaluated"), reached_rung=s.get("reached_rung"), rungs=s.get("rungs"),
                  failed=s.get("failed"), latency_source=s.get("latency_source"), front=points,
                  hypervolume=front_hypervolume(points, ref))
    return record


def run_fidelity_bench(study, fidelities: list[str], minutes: float, n_seeds: int, sampler: str | None,
                       out: Path) -> dict:
    """One time-budgeted search per (seed 0..n_seeds-1, fidelity); the summary (also ``out/bench_fidelity.json``)."""
    from vitsearch.search.session import load_session
    from vitsearch.search.study import load_study, study_to_yaml

    spec = load_study(study)
    check_args(spec, fidelities, minutes, n_seeds, sampler, out)
    seeds = list(range(n_seeds))
    session = load_session(spec)  # model and data errors before anything is written
    if session.data.test is None:
        from vitsearch.spaces.errors import DataError

        raise DataError(f"data: {session.data.name} has no test split; the benchmark scores fronts on test")
    ref = _reference(spec, session)
    del session
    for sub in ("runs", "studies", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    started = time.time()
    for seed in seeds:
        for fid in fidelities:
            name = f"{fid}-seed{seed}"
            study_file = out / "studies" / f"{name}.yaml"
            study_file.write_text(study_to_yaml(fidelity_spec(spec, fid, minutes, seed, sampler)))
            print(f"bench-search: {name}: a {minutes:g}-minute search ...", file=sys.stderr, flush=True)
            code, wall = _one_run(study_file, out / "runs" / name, out / "logs" / f"{name}.log")
            runs.append(_run_record(fid, seed, out / "runs" / name, code, wall, ref, out / "logs" / f"{name}.log"))
            summary = summarise(spec, fidelities, minutes, seeds, sampler, ref, runs, time.time() - started)
            (out / "bench_fidelity.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values),
            "max": max(values), "n": len(values)}


def summarise(spec, fidelities, minutes, seeds, sampler, ref, runs, seconds) -> dict[str, Any]:
    """Hypervolume mean / spread per fidelity, and rungs vs zero-shot, from the run records so far."""
    ladder = spec.recovery.ladder
    steps = {"zero-shot": [0], "rungs": list(ladder), "full": [ladder[-1]]}
    per: dict[str, Any] = {}
    for fid in fidelities:
        done = [r for r in runs if r["fidelity"] == fid and "hypervolume" in r]
        per[fid] = {"steps": steps[fid], **_stats([r["hypervolume"] for r in done]),
                    "per_seed": {r["seed"]: r["hypervolume"] for r in done},
                    "evaluated_mean": statistics.fmean(r["evaluated"] or 0 for r in done) if done else None,
                    "search_seconds_mean": statistics.fmean(r["search_seconds"] for r in done) if done else None,
                    "failed_runs": sum(1 for r in runs if r["fidelity"] == fid and "error" in r)}
    zs, rg = per.get("zero-shot", {}).get("mean"), per.get("rungs", {}).get("mean")
    return {"study": spec.name, "fidelities": fidelities, "seeds": seeds, "wall_minutes": minutes,
            "sampler": sampler or spec.search.sampler, "reference_point": ref, "hypervolume": per,
            "ratio_rungs_vs_zero_shot": (rg / zs) if zs and rg is not None else None,
            "goal": "rungs >= 1.3x the zero-shot front's hypervolume at equal wall time",
            "runs": runs, "seconds": round(seconds, 1), "device": spec.device,
            "cpu": _cpu_name(), "what": "hypervolume of the val-selected front re-measured on the test split "
            "(accuracy measured; latency as ratio to the uncompressed model, source per point)"}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_fidelity(s: dict) -> str:
    """The summary as a text table."""
    ref = s["reference_point"]
    lines = [f"hypervolume of the test-accuracy front (test accuracy >= {ref['test_accuracy']:.4f}, latency ratio "
             f"<= {ref['latency_ratio']:g}: {ref['how']}); {s['wall_minutes']:g} minutes per run, sampler "
             f"{s['sampler']}, seeds {s['seeds']}",
             f"{'fidelity':<10} {'steps':<16} {'hypervolume mean +- std':>26} {'min..max':>17} {'evaluated':>9} "
             f"{'search s':>8}  vs zero-shot"]
    zs = s["hypervolume"].get("zero-shot", {}).get("mean")
    for fid, row in s["hypervolume"].items():
        if row["mean"] is None:
            lines.append(f"{fid:<10} {str(row['steps']):<16} {'no finished run':>26}")
            continue
        vs = f"{row['mean'] / zs:.2f}x" if zs else "-"
        lines.append(f"{fid:<10} {str(row['steps']):<16} {row['mean']:>14.5f} +- {row['std']:.5f} "
                     f"{row['min']:>8.5f}..{row['max']:.5f} {row['evaluated_mean']:>9.1f} "
                     f"{row['search_seconds_mean']:>8.0f}  {vs}" + (f"  ({row['failed_runs']} run(s) failed)"
                                                                    if row["failed_runs"] else ""))
    ratio = s.get("ratio_rungs_vs_zero_shot")
    if ratio is not None:
        lines.append(f"goal: {s['goal']}: {'reached' if ratio >= 1.3 else 'NOT reached'} ({ratio:.2f}x)")
    lines.append(f"{len(s['runs'])} runs, {s['seconds']:.0f} s in all, device {s['device']} ({s['cpu']}); "
                 f"{s['what']}")
    return "\n".join(lines)
