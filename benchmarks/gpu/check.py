"""The GPU check, one part per call: what vitsearch measures, predicts and searches on a GPU.

    python benchmarks/gpu/check.py --out OUT --part {1,2,3,4,all} [--minutes 6] [--device cuda|cpu]
                                   [--smoke] [--models deit_b,deit_s] [--batches 1,64,256] [--ray]

benchmarks/gpu/check.sh installs the wheels and makes vitsearch importable, then runs
this. Parts: 1 environment + ``vitsearch doctor --json``; 2 the knob table (knobtable.py);
3 ``vitsearch profile`` of a DeiT-B batch-256 study, ``predictor-eval`` on held-out
configs and a MACs-only predictor beside it; 4 a search with real accuracy on the
built-in model (``bench-search``, in-process; ``vitsearch run`` too with ``--ray``).

Each step runs in its own process, bounded by what is left of ``--minutes`` (a step that
would not fit is skipped and says so); a failed step is recorded with its error and the
rest still run. OUT gets ``part<P>.json`` (every step: status, seconds, error, files),
the steps' own JSON files and ``part<P>.log``: at most 8 files per part (``all`` puts each
part in OUT/part<P>/). ``--smoke`` runs every step with tiny sizes (CPU, in the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "vitsearch.search.cli"]
MODELS = {"deit_s": "timm:deit_small_patch16_224", "deit_b": "timm:deit_base_patch16_224"}


@dataclass
class Step:
    """One bounded step: a command, the seconds it needs to be worth starting, its cap, its JSON output."""

    name: str
    argv: list[str]
    min_s: float
    max_s: float
    stdout_json: str | None = None  # save the command's stdout (JSON) as this file in OUT
    ok_codes: tuple[int, ...] = (0,)
    files: list[str] = field(default_factory=list)


def child(name: str, opts: dict) -> list[str]:
    """The command running ``steps.STEPS[name]`` in a fresh process."""
    return [sys.executable, str(HERE / "check.py"), "--child", name, "--opts", json.dumps(opts)]


def part_steps(part: int, o: argparse.Namespace, out: Path, work: Path, deadline: float) -> list[Step]:
    """The steps of one part, sized for the device (``--smoke``: tiny)."""
    base = {"device": o.device, "smoke": o.smoke, "out": str(out), "work": str(work), "deadline": deadline}
    if part == 1:
        doctor = [*CLI, "doctor", "--device", o.device, "--json"] + (["--quick"] if o.smoke else [])
        return [Step("env", child("env", base), 10, 90, files=["env.json"]),
                Step("doctor", doctor, 30, 240, "doctor.json", ok_codes=(0, 1))]
    if part == 2:
        keys = o.models.split(",") if o.models else (["builtin"] if o.smoke else ["deit_b", "deit_s"])
        batches = [int(b) for b in o.batches.split(",")] if o.batches else ([2] if o.smoke else [1, 64, 256])
        return [Step(f"knobs {k}", child("knobs", {**base, "model": k, "batches": batches, "compile": not o.smoke}),
                     20, 600, files=[f"knobs_{k}.json"]) for k in keys]
    if part == 3:
        arch = "builtin:vitsearch-tiny" if o.smoke else MODELS["deit_b"]
        opts = {**base, "arch": arch, "batch": 2 if o.smoke else 256, "profile_dir": str(work / "profile")}
        study = str(work / "profile_study.yaml")
        budget = 1.0 if o.smoke else 3.0
        return [Step("study", child("profile_study", opts), 5, 60, files=["profile_study.yaml"]),
                Step("profile", [*CLI, "profile", study, "--out", opts["profile_dir"], "--budget-minutes", str(budget),
                                 "--models", "6" if o.smoke else "60", "--json"], 30, budget * 60 + 90, "profile.json"),
                Step("predictor-eval", [*CLI, "predictor-eval", study, "--profile", opts["profile_dir"], "--n",
                                        "3" if o.smoke else "40", "--json"], 30, 240, "predictor_eval.json"),
                Step("macs-baseline", child("macs_baseline", opts), 5, 60, files=["macs_baseline.json"])]
    opts = {**base, "batch": 2 if o.smoke else 64, "trials": 3 if o.smoke else 12}
    study = str(work / "search_study.yaml")
    steps = [Step("study", child("search_study", opts), 5, 60, files=["search_study.yaml"]),
             Step("bench-search", [*CLI, "bench-search", study, "--trials", str(opts["trials"]), "--seeds", "1",
                                   "--samplers", "tpe", "--recovery-steps", "0" if o.smoke else "10",
                                   "--out", str(work / "search"), "--json"], 30, 300, "search.json")]
    if o.ray:
        steps.append(Step("run", [*CLI, "run", study, "--trials", str(opts["trials"]), "--workers", "1"], 60, 300))
    return steps


def run_step(step: Step, out: Path, log, deadline: float) -> dict[str, Any]:
    """Run one step within what is left before ``deadline``; its record (status, seconds, error, files)."""
    left = deadline - time.monotonic()
    rec: dict[str, Any] = {"name": step.name, "argv": step.argv[2:] if step.argv[1] == "-m" else step.argv[1:3]}
    if left < step.min_s:
        return {**rec, "status": "skipped", "error": f"out of time: {left:.0f} s left, the step needs {step.min_s:.0f}"}
    timeout = min(step.max_s, left)
    started = time.monotonic()
    log.write(f"\n===== {step.name} (timeout {timeout:.0f} s): {' '.join(step.argv)}\n")
    log.flush()
    proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        stdout, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the step's own process group: it and what it started
        stdout, _ = proc.communicate()
        rc = None
    rec.update(seconds=round(time.monotonic() - started, 1), returncode=rc, files=list(step.files))
    log.write(stdout if step.stdout_json is None else stdout[-2000:])
    log.flush()
    if step.stdout_json is not None and stdout.strip():
        try:
            data = json.loads(stdout[stdout.index("{"):])
            (out / step.stdout_json).write_text(json.dumps(data, indent=1, default=str))
            rec["files"].append(step.stdout_json)
        except ValueError as exc:
            rec["stdout_not_json"] = f"{exc}: {stdout[-300:]}"
    if rc is None:
        rec.update(status="timeout", error=f"stopped after {timeout:.0f} s (the part's time or the step's cap)")
    elif rc not in step.ok_codes:
        rec.update(status="error", error=f"exit code {rc}; see the log: {_last_error(out, log)}")
    else:
        rec["status"] = "ok"
    return rec


def _last_error(out: Path, log) -> str:
    text = Path(log.name).read_text(errors="replace").strip().splitlines()
    lines = [ln for ln in text[-40:] if "Error" in ln or "error" in ln]
    return (lines[-1] if lines else (text[-1] if text else ""))[:400]


def run_part(part: int, o: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every step of ``part``, bounded by ``--minutes``; writes ``part<P>.json`` after each step."""
    start, wall = time.monotonic(), time.time()
    deadline = start + o.minutes * 60 - 5  # seconds to write the summary
    work = (Path(o.work) / f"part{part}" if o.work else Path(tempfile.mkdtemp(prefix="vitsearch-gpu-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"part": part, "device": o.device, "smoke": o.smoke, "minutes": o.minutes,
                           "started_unix": round(wall), "steps": []}
    with open(out / f"part{part}.log", "a") as log:
        for step in part_steps(part, o, out, work, time.time() + (deadline - start)):
            doc["steps"].append(run_step(step, out, log, deadline))
            _write(out / f"part{part}.json", doc)
    doc.update(seconds=round(time.monotonic() - start, 1), ok=all(s["status"] == "ok" for s in doc["steps"]),
               within_minutes=time.monotonic() - start <= o.minutes * 60)
    _write(out / f"part{part}.json", doc)
    return doc


def _write(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def run_child(name: str, opts: dict) -> int:
    """Inside a step's process: run ``steps.STEPS[name]`` (or write a study file)."""
    sys.path.insert(0, str(HERE))  # the sibling modules of this script, not the repository
    opts = {**opts, "deadline": time.monotonic() + (opts["deadline"] - time.time())}
    out, work = Path(opts["out"]), Path(opts["work"])
    if name in ("profile_study", "search_study"):
        import shutil

        import studyfiles

        path = getattr(studyfiles, name)(opts, work)
        shutil.copy(path, out / path.name)
        return 0
    import steps

    steps.STEPS[name](opts, out)
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="check.py", description=__doc__.split("\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--part", choices=["1", "2", "3", "4", "all"])
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (the CPU test of this script)")
    ap.add_argument("--models", default=None, help="part 2: deit_s, deit_b (default both; builtin with --smoke)")
    ap.add_argument("--batches", default=None, help="part 2: batch sizes (default 1,64,256)")
    ap.add_argument("--ray", action="store_true", help="part 4: also `vitsearch run` (Ray brought along)")
    ap.add_argument("--work", default=None, help="scratch folder, outside OUT (default: a new temporary folder)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--opts", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the part(s); exit 0 when every step ran ok, 1 otherwise, 2 for bad arguments."""
    o = parse(argv)
    if o.child:
        return run_child(o.child, json.loads(o.opts))
    if not o.out or not o.part or not o.minutes > 0:
        print("check.py: give --out OUT, --part 1|2|3|4|all and a positive --minutes", file=sys.stderr)
        return 2
    out = Path(o.out)
    parts = [1, 2, 3, 4] if o.part == "all" else [int(o.part)]
    ok = True
    for p in parts:
        where = out / f"part{p}" if o.part == "all" else out
        where.mkdir(parents=True, exist_ok=True)
        doc = run_part(p, o, where)
        ok &= doc["ok"]
        print(f"part {p}: " + ", ".join(f"{s['name']} {s['status']}" for s in doc["steps"]) + f" ({doc['seconds']} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
