"""The engine's books: where a run's worker time went, from clocks the workers report.

Every evaluation carries its worker's wall clock (``started_at``/``finished_at``) and the
CPU its thread used; the driver adds its own CPU time and that of Ray's system
processes. From these, :func:`engine_books` splits a run into

* **start-up** - from ``Tuner.fit`` to the first candidate starting (worker processes
  start, import torch, receive the session), paid once per run;
* **steady state** - each worker from its first candidate's start to its last one's end:
  the time in there not spent evaluating is the engine's *per-trial* overhead (Tune's
  trial start/stop between batches, reporting round trips, waiting for the driver);
* **drain** - from the last evaluation's end to ``fit`` returning, once per run.

All figures are measured on this run; nothing is estimated.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), None where unreadable."""
    stat = _cpu_and_start(pid)
    return None if stat is None else stat[0]


def _cpu_and_start(pid: int) -> tuple[float, int] | None:
    """(user + system CPU seconds, start time in clock ticks since boot) of a process from /proc, None where
    unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants_cpu(root: int | None = None) -> dict[str, Any] | None:
    """CPU seconds of the live descendants of ``root`` (default: this process), by kind.

    ``ray_workers``: Ray worker processes (``ray::`` in their command line), whose CPU is
    mostly evaluation; ``ray_system``: the rest (GCS, raylet, log monitor, ...);
    ``processes``: per (pid, start time in clock ticks) its (kind, CPU seconds), the kind None
    for a process whose command line reads empty (exiting, or exited and not yet reaped: its
    CPU is still readable, its command line is not), counted in neither sum. None where /proc
    is not available.
    """
    root = os.getpid() if root is None else root
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    parent: dict[int, int] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    out: dict[str, Any] = {"ray_workers": 0.0, "ray_system": 0.0, "processes": {}}
    stack = list(children[root])
    while stack:
        pid = stack.pop()
        stack.extend(children[pid])
        stat = _cpu_and_start(pid)
        if stat is None:
            continue
        cpu, started = stat
        try:
            cmd = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        kind = None if not cmd else "ray_workers" if cmd.startswith("ray::") else "ray_system"
        out["processes"][(pid, started)] = (kind, cpu)
        if kind is not None:
            out[kind] += cpu
    return out


def system_cpu_between(before: dict[str, Any], after: dict[str, Any]) -> float:
    """CPU seconds Ray's system processes used between two :func:`descendants_cpu` snapshots.

    Process by process (a pid and its start time: a reused pid is another process): each counts
    what it used since ``before`` (all of it when it started after), as its latest readable kind
    (a Ray worker starts as ``python default_worker.py`` and renames itself ``ray::`` once
    connected, so a worker still starting at ``before`` is one). A worker caught exiting by
    ``after`` (its command line empty, its whole CPU still readable) is not a system process;
    read as one, its whole evaluation was booked as Ray's own (an eager run of 459 s on 2 cores
    reported 420 s of Ray system CPU beside 772 s of evaluation: more than the cores had).
    """
    seen = before["processes"]
    total = 0.0
    for key, (kind, cpu) in after["processes"].items():
        was_kind, was_cpu = seen.get(key, (None, 0.0))
        if (kind or was_kind) == "ray_system":
            total += max(0.0, cpu - was_cpu)
    return total


def engine_books(timings: list[dict], fit_start: float, fit_end: float, workers: int) -> dict:
    """Start-up, steady-state and drain figures of one attempt (see the module docstring).

    ``timings``: one dict per evaluated candidate with ``worker``, ``seconds``,
    ``started_at`` and ``finished_at`` (epoch seconds, the worker's clock; workers on
    other machines need synchronised clocks for start-up/drain, not for steady state).
    """
    rows = [t for t in timings if t.get("started_at") is not None and t.get("finished_at") is not None]
    fit = fit_end - fit_start
    if not rows or fit <= 0:
        return {"fit_seconds": round(fit, 2), "evaluations": len(rows)}
    busy = sum(float(t["seconds"]) for t in rows)
    by_worker: dict[str, list[dict]] = defaultdict(list)
    for t in rows:
        by_worker[t["worker"]].append(t)
    span = 0.0
    gaps: list[float] = []
    for items in by_worker.values():
        items.sort(key=lambda t: t["started_at"])
        span += items[-1]["finished_at"] - items[0]["started_at"]
        gaps += [max(0.0, b["started_at"] - a["finished_at"]) for a, b in zip(items, items[1:])]
    first = min(t["started_at"] for t in rows)
    last = max(t["finished_at"] for t in rows)
    return {
        "fit_seconds": round(fit, 2),
        "evaluations": len(rows),
        "evaluation_seconds": round(busy, 2),
        "worker_processes": len(by_worker),
        "startup_seconds": round(max(0.0, first - fit_start), 2),
        "drain_seconds": round(max(0.0, fit_end - last), 2),
        # the per-trial overhead: worker time between its first and last evaluation not spent evaluating
        "steady_overhead_share": round(max(0.0, 1 - busy / span), 4) if span > 0 else None,
        "median_gap_seconds": round(median(gaps), 4) if gaps else None,
        "mean_evaluation_seconds": round(busy / len(rows), 4),
        # everything: start-up, drain and idle slots included
        "engine_overhead_share": round(max(0.0, 1 - busy / (fit * workers)), 4),
    }


def cpu_books(timings: list[dict], driver_cpu: float, settled: int, ray_before: dict | None,
              ray_after: dict | None) -> dict:
    """CPU seconds of the fit: driver, Ray system processes, workers (evaluation vs the rest).

    ``ray_before``/``ray_after``: :func:`descendants_cpu` around the fit (None when this
    driver did not start Ray); ``settled``: trials the driver told, evaluated or not.
    """
    out = {"driver_cpu_seconds": round(driver_cpu, 2),
           # every settled trial costs the driver an ask and a tell, evaluated or not
           "driver_cpu_per_settled_trial": round(driver_cpu / settled, 4) if settled else None}
    if ray_before is not None and ray_after is not None:
        # live processes only: one that exited during the fit took its CPU time with it
        out["ray_system_cpu_seconds"] = round(system_cpu_between(ray_before, ray_after), 2)
    if timings:
        out["evaluation_cpu_seconds"] = round(sum(t.get("cpu_seconds", 0.0) for t in timings), 2)
        last: dict[str, float] = {}
        for t in timings:  # a worker process's CPU so far, as of its latest report
            last[t["worker"]] = max(last.get(t["worker"], 0.0), t.get("process_cpu_seconds", 0.0))
        out["worker_process_cpu_seconds"] = round(sum(last.values()), 2)
    return out
