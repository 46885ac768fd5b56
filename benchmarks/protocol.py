"""Interleaved protocol variants side by side: repeatability minutes apart, wall time, agreement.

    .venv/bin/python benchmarks/protocol.py [--n 40] [--plans v1 balanced] [--stress none|memory|cpu]

The default study's space (built-in model, batch 1, one thread, eager), ``--n`` held-out
configs drawn uniformly (seed 4243). Each config is measured once with every plan (the
order rotating config by config), the whole set twice (phase 1, phase 2), so a config's
two measurements with one plan are minutes apart, as in ``predictor-eval``. Per plan:
the share of configs whose two ratios agree within +-5 % (95 % Wilson interval), the
spread of the log difference, the wall time per measurement (warm-up included) and the
interval half-width it claimed; the burst (one run of timed passes, the pre-interleaved
protocol) is timed beside for the cost goal. Per pair of plans: the median ratio between
their measurements of the same config (a change of protocol that moved every ratio would
show here) and the correlation of their phase-2 / phase-1 changes (measured seconds apart:
positive when the ratio itself moved with the machine's state between the phases).

``--rung-int8`` adds the reference-ladder variant "rung-int8": configs with an int8 layer are
timed (default plan) against the uncompressed model quantised to int8 - a rung of their own
kind and cost - and the result is that ratio times the rung's ratio to the uncompressed
model (the geometric mean of three measurements taken at the start); other configs as v1.

``--stress memory`` runs two processes beside the measurement that stream 64 MB arrays in
random on/off bursts (memory-bandwidth neighbours, as on a shared host); ``cpu`` two that
spin in bursts. They are started and stopped (by their own PIDs) by this script.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import random
import statistics
import sys
import time
from pathlib import Path

PLANS = {
    "v1": dict(chunk=4, chunk_ms=0.0, settle=0),             # interleaved-v1: 4 passes a side, no settling
    "balanced": dict(chunk=1, chunk_ms=25.0, settle=1),      # cost-balanced chunks, one settling pass per switch
    "balanced2": dict(chunk=2, chunk_ms=25.0, settle=1),
    "balanced50": dict(chunk=1, chunk_ms=50.0, settle=1),
}


def _stress(kind: str, seed: int) -> None:
    import numpy as np

    rng = random.Random(seed)
    a = np.ones(16_000_000, dtype=np.float32)
    b = np.empty_like(a)
    while True:
        end = time.perf_counter() + rng.uniform(0.05, 0.6)
        x = 0
        while time.perf_counter() < end:
            if kind == "memory":
                np.copyto(b, a)
            else:
                x += 1
        time.sleep(rng.uniform(0.05, 0.6))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--plans", nargs="+", default=["v1", "balanced"], choices=sorted(PLANS))
    ap.add_argument("--stress", default="none", choices=["none", "memory", "cpu"])
    ap.add_argument("--max-seconds", type=float, default=3.0, help="each plan's time cap (the study default: 3)")
    ap.add_argument("--rung-int8", action="store_true", help="add the int8 reference-rung variant")
    ap.add_argument("--out", default=None, help="JSON file for the result")
    args = ap.parse_args()

    from vitsearch.evaluators.latency.stats import wilson
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint
    from vitsearch.evaluators.latency.timing.interleaved import measure_interleaved
    from vitsearch.evaluators.latency.timing.plans import InterleavePlan
    from vitsearch.evaluators.latency.measure import measure_latency
    from vitsearch.evaluators.latency.profile.context import ProfileContext
    from vitsearch.evaluators.latency.profile.sampling import sample_configs
    from vitsearch.search.session import load_session
    from vitsearch.spaces import CompressionConfig, compress

    session = load_session("default")
    lat = session.spec.latency
    ctx = ProfileContext.of(session, Path("/tmp") / "vitsearch-protocol-bench")
    configs = sample_configs(ctx.space, args.n, seed=4243, presets=False)
    models = [compress(session.base, c, calibration=None, device="cpu") for c in configs]
    plans = {p: InterleavePlan(max_seconds=args.max_seconds, **PLANS[p]) for p in args.plans}
    stressors = [mp.Process(target=_stress, args=(args.stress, i), daemon=True)
                 for i in range(2 if args.stress != "none" else 0)]
    for p in stressors:
        p.start()
    rows, started = [], time.time()
    rung, rung_ratio, first = None, None, None
    if args.rung_int8:
        rung = compress(session.base, CompressionConfig.from_dict({"precision": {"attn": "int8", "mlp": "int8"}}),
                        calibration=None, device="cpu")
        first = [measure_interleaved(rung, session.base, session.input_shape, "cpu", threads=1,
                                     plan=InterleavePlan(max_seconds=args.max_seconds)).ratio for _ in range(3)]
        rung_ratio = math.exp(statistics.fmean(math.log(x) for x in first))
        plans["rung-int8"] = InterleavePlan(max_seconds=args.max_seconds)
    try:
        for phase in (1, 2):
            for i, (c, m) in enumerate(zip(configs, models)):
                names = list(plans) + ["burst"]
                k = (i + phase) % len(names)
                for name in names[k:] + names[:k]:
                    t = time.perf_counter()
                    if name == "burst":
                        measure_latency(m, session.input_shape, "cpu", threads=lat.threads, warmup=lat.warmup,
                                        max_runs=lat.max_runs, max_seconds=lat.max_seconds)
                        rows.append(dict(i=i, phase=phase, plan=name, seconds=time.perf_counter() - t))
                        continue
                    via_rung = name == "rung-int8" and "int8" in c.to_json()
                    r = measure_interleaved(m, rung if via_rung else session.base, session.input_shape, "cpu",
                                            threads=1, plan=plans[name])
                    ratio = r.ratio * rung_ratio if via_rung else r.ratio
                    rows.append(dict(i=i, phase=phase, plan=name, seconds=time.perf_counter() - t, ratio=ratio,
                                     halfwidth=r.halfwidth, pairs=r.chunks, stop=r.stop_reason, chunk=r.chunk,
                                     reference_chunk=r.reference_chunk, int8="int8" in c.to_json()))
                print(f"phase {phase} config {i + 1}/{len(configs)}", file=sys.stderr, flush=True)
    finally:
        for p in stressors:
            p.terminate()
            p.join()
    out = {"n": len(configs), "stress": args.stress, "max_seconds": args.max_seconds,
           "plans": {p: PLANS.get(p, "v1 against the int8 rung") for p in plans}, "rung_ratio": rung_ratio,
           "rung_ratios": first, "fingerprint": device_fingerprint("cpu", 1),
           "wall_s": round(time.time() - started, 1), "per_plan": {}, "between_plans": {}, "rows": rows}
    for name in list(plans) + ["burst"]:
        mine = [r for r in rows if r["plan"] == name]
        s = {"seconds_median": statistics.median(r["seconds"] for r in mine),
             "seconds_mean": statistics.fmean(r["seconds"] for r in mine)}
        if name != "burst":
            by = {(r["i"], r["phase"]): r for r in mine}
            d = [math.log(by[(i, 2)]["ratio"] / by[(i, 1)]["ratio"]) for i in range(len(configs))]
            k5 = sum(abs(x) <= math.log(1.05) for x in d)
            s.update(within_5pct=k5 / len(d), within_5pct_ci=wilson(k5, len(d)),
                     sd_log_difference=statistics.pstdev(d),
                     halfwidth_median=statistics.median(r["halfwidth"] for r in mine),
                     stops={x: sum(r["stop"] == x for r in mine) for x in ("target", "max_seconds", "max_pairs")})
            for sel in (True, False):
                dd = [x for x, i in zip(d, range(len(configs))) if by[(i, 1)]["int8"] == sel]
                if dd:
                    s["int8" if sel else "other"] = {
                        "n": len(dd), "within_5pct": sum(abs(x) <= math.log(1.05) for x in dd) / len(dd),
                        "seconds_median": statistics.median(r["seconds"] for r in mine if r["int8"] == sel)}
        out["per_plan"][name] = s
    names = list(plans)
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            ra = {(r["i"], r["phase"]): r["ratio"] for r in rows if r["plan"] == a}
            rb = {(r["i"], r["phase"]): r["ratio"] for r in rows if r["plan"] == b}
            da = [math.log(ra[(i, 2)] / ra[(i, 1)]) for i in range(len(configs))]
            db = [math.log(rb[(i, 2)] / rb[(i, 1)]) for i in range(len(configs))]
            out["between_plans"][f"{b}/{a}"] = {
                "median_ratio": math.exp(statistics.median(math.log(rb[k] / ra[k]) for k in ra)),
                # the two plans' phase-2 / phase-1 changes of a config, measured seconds apart: correlated when
                # the ratio itself moved with the machine's state between the phases (no protocol cancels that)
                "phase_change_correlation": statistics.correlation(da, db)}
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    summary = {k: v for k, v in out.items() if k != "rows"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
