"""Do a run's stated 95 % latency intervals cover a re-measurement minutes later? (no device profile)

    .venv/bin/python benchmarks/coverage.py [--study studies/default.yaml] [--n 40] [--out FILE]

As a run without a profile does it: ``--n`` configs of the study's space (seed 4243, drawn
as the profile draws them) are measured once with the study's protocol (the search's
sitting); then the first 8 of them are measured again and their pairs give the spread
between sittings (:func:`vitsearch.search.engine.repeats.pair_spread`, what the run keeps in
summary.json); then all ``--n`` are measured a second time, minutes after the first. Printed
and written to JSON: the share of second measurements inside the first's interval as
measured (one sitting's alone) and widened by the spread, for all configs and for those
not used to estimate it (out of sample), each with its 95 % Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(ROOT / "studies" / "default.yaml"))
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "coverage.json"))
    args = ap.parse_args(argv)

    from vitsearch.evaluators.latency.fingerprint import device_fingerprint
    from vitsearch.evaluators.latency.profile.sampling import sample_configs
    from vitsearch.evaluators.latency.stats import widen, wilson
    from vitsearch.search.engine.repeats import REPEATS, Sitting, pair_coverage, pair_spread
    from vitsearch.search.session import load_session
    from vitsearch.spaces import SearchSpace

    session = load_session(args.study)
    conf = session.spec.latency.interleave.confidence
    configs = sample_configs(SearchSpace.from_spec(session.spec.space, session.base), args.n, seed=4243, presets=False)

    def sitting(config) -> Sitting:
        res = session.pipeline.measure_config(config)
        return Sitting(res.ratio, res.ratio_low, res.ratio_high)

    started = time.time()
    first = [sitting(c) for c in configs]
    print(f"first sitting: {len(first)} configs in {time.time() - started:.0f} s", file=sys.stderr)
    repeats = [(first[i], sitting(configs[i])) for i in range(min(REPEATS, len(configs)))]
    sd = pair_spread(repeats, conf)
    second = [sitting(c) for c in configs]
    print(f"second sitting done at {time.time() - started:.0f} s; spread {sd}", file=sys.stderr)

    def share(pairs, spread):
        cov = pair_coverage(pairs, spread, conf)
        out = {}
        for key in ("within_stated", "within_widened"):
            k, n = cov[key], cov["n"]
            lo, hi = wilson(k, n) if n else (None, None)
            out[key] = {"k": k, "n": n, "share": k / n if n else None, "wilson95": [lo, hi]}
        return out

    pairs = list(zip(first, second))
    result = {
        "question": "coverage of stated 95 % latency intervals by a re-measurement minutes later, no profile",
        "study": args.study, "n": len(configs), "confidence": conf, "sitting_sd": sd, "repeats": len(repeats),
        "all": share(pairs, sd), "out_of_sample": share(pairs[len(repeats):], sd),
        "seconds": round(time.time() - started, 1), "fingerprint": device_fingerprint(session.device),
        "pairs": [{"first": vars(a), "second": vars(b)} for a, b in pairs],
        "widened_half_widths": [widen(a.ratio, a.low, a.high, sd, conf) for a, _ in pairs],
    }
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    for part in ("all", "out_of_sample"):
        s, w = result[part]["within_stated"], result[part]["within_widened"]
        if not s["n"]:
            continue
        print(f"{part}: {s['k']}/{s['n']} inside as measured ({s['share']:.0%}), {w['k']}/{w['n']} widened "
              f"({w['share']:.0%}, Wilson 95 % [{w['wilson95'][0]:.0%}, {w['wilson95'][1]:.0%}])")
    print(f"spread between sittings: {100 * (sd or 0):.2f} % from {len(repeats)} pairs; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
