"""Thread and process hygiene of a measurement: priority, affinity and scheduling per thread.

Why per thread: a process's nice value says little about the threads that do the timed
work. Ray starts its workers niced, torch's intra-op pool threads inherit the nice value
and affinity of the thread that created them (not of the thread timing them now), and a
thread can be re-niced on its own (``setpriority`` on a TID). So the report reads every
thread of the process from ``/proc/self/task/TID/stat`` (nice, scheduling policy) and
``sched_getaffinity(TID)``, groups the threads that share a setting, and says which one
timed the passes. Linux only; elsewhere the report says it is unavailable.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

#: ``/proc/.../stat`` policy numbers (sched.h).
POLICIES = {0: "SCHED_OTHER", 1: "SCHED_FIFO", 2: "SCHED_RR", 3: "SCHED_BATCH", 5: "SCHED_IDLE", 6: "SCHED_DEADLINE"}


def thread_state(tid: int) -> dict[str, Any] | None:
    """Name, nice value, scheduling policy and CPU affinity of thread ``tid`` of this process."""
    try:
        text = Path(f"/proc/self/task/{tid}/stat").read_text()
    except OSError:
        return None
    name = text[text.find("(") + 1:text.rfind(")")]
    rest = text[text.rfind(")") + 2:].split()
    # rest[0] is field 3 of proc(5): nice is field 19, policy field 41
    try:
        affinity = sorted(os.sched_getaffinity(tid))
    except OSError:
        affinity = None
    return {"tid": tid, "name": name, "nice": int(rest[16]), "policy": POLICIES.get(int(rest[38]), rest[38]),
            "affinity": _ranges(affinity) if affinity is not None else None}


def thread_report() -> dict[str, Any]:
    """Every thread of this process, grouped by (nice, policy, affinity); the calling thread named.

    ``warnings`` lists what makes a timing less trustworthy: a niced or non-default
    policy timing thread, threads of one process on different settings (torch's pool
    threads do part of every pass), an affinity narrower than the timing thread count.
    """
    if not Path("/proc/self/task").is_dir():
        return {"available": False, "why": "no /proc/self/task (not Linux)"}
    me = threading.get_native_id()
    states = [s for s in (thread_state(int(t)) for t in os.listdir("/proc/self/task")) if s is not None]
    groups: dict[tuple, dict[str, Any]] = {}
    for s in states:
        key = (s["nice"], s["policy"], s["affinity"])
        g = groups.setdefault(key, {"nice": s["nice"], "policy": s["policy"], "affinity": s["affinity"],
                                    "threads": 0, "names": []})
        g["threads"] += 1
        if s["name"] not in g["names"] and len(g["names"]) < 6:
            g["names"].append(s["name"])
    timing = next((s for s in states if s["tid"] == me), thread_state(me))
    return {"available": True, "pid": os.getpid(), "process_nice": os.getpriority(os.PRIO_PROCESS, 0),
            "timing_thread": timing, "groups": list(groups.values()), "warnings": _warnings(timing, groups)}


def _warnings(timing: dict | None, groups: dict) -> list[str]:
    out = []
    if timing is None:
        return ["timing thread not readable"]
    if timing["nice"] != 0:
        out.append(f"timing thread niced to {timing['nice']} (Ray workers start niced): other work preempts it")
    if timing["policy"] != "SCHED_OTHER":
        out.append(f"timing thread runs under {timing['policy']}")
    nices = {k[0] for k in groups}
    if len(nices) > 1:
        out.append(f"threads of this process run at different nice values {sorted(nices)}")
    return out


def compact(report: dict[str, Any]) -> dict[str, Any]:
    """What a latency record keeps: the timing thread's nice / policy / CPUs, thread count, warnings."""
    if not report or not report.get("available"):
        return {"available": False}
    t = report.get("timing_thread") or {}
    return {"nice": t.get("nice"), "policy": t.get("policy"), "affinity": t.get("affinity"),
            "threads": sum(g["threads"] for g in report["groups"]),
            "nice_values": sorted({g["nice"] for g in report["groups"]}),
            "warnings": list(report.get("warnings") or [])}


def short(report: dict[str, Any]) -> str:
    """One line: the timing thread's nice / policy / CPUs, thread count and any warning."""
    if not report.get("available"):
        return f"thread info unavailable ({report.get('why')})"
    t = report["timing_thread"] or {}
    n = sum(g["threads"] for g in report["groups"])
    warn = f"; WARNING: {'; '.join(report['warnings'])}" if report["warnings"] else ""
    return f"timing thread nice {t.get('nice')}, {t.get('policy')}, CPUs {t.get('affinity')}, {n} threads{warn}"


def _ranges(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    out, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(out)
