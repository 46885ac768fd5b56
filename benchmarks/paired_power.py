"""How often a variant meets "the paired 95 % upper bound of its test drop is at most X points", by test-set size.

    .venv/bin/python benchmarks/paired_power.py [--bound 1.0] [--n 500 1000 2000 5000] [--out FILE.json]

#24's pick goal asks the exported variant's paired test-accuracy drop against the
uncompressed model to have a 95 % upper bound of at most 1 point. The bound is the one
``pick`` prints (:func:`vitsearch.evaluators.paired.paired_drop`: Tango's score interval,
continuity-corrected), a function of the test images lost ``b`` (right for the
uncompressed model only), gained ``c`` and the test-set size ``n``. This prints

* the bound for each (lost, gained) of a few images on ``n`` = 500 (the built-in data's old
  test split), and
* the exact probability that a variant meets the bound, for variants whose images are
  lost and gained independently at given rates (a multinomial over lost / gained /
  neither, summed over every (b, c) with more than 1e-12 of the mass): the variant's true
  drop is (lost rate - gained rate), its discordance their sum.

No model is run: this is the criterion's own arithmetic. Seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

#: (lost rate, gained rate) per test image: a variant as accurate as the uncompressed model (true drop 0)
#: at three discordance levels, then true drops of 0.2 and 0.4 points; pick's last ORT winners discorded on
#: 1-5 of 500 images (0.2-1 %)
RATES = [(0.002, 0.002), (0.004, 0.004), (0.006, 0.006), (0.003, 0.001), (0.005, 0.003), (0.004, 0.0),
         (0.005, 0.001)]


def upper_bound(b: int, c: int, n: int) -> float:
    """The paired 95 % upper bound, in points, of a drop with ``b`` images lost and ``c`` gained out of ``n``."""
    import numpy as np

    from vitsearch.evaluators.paired import paired_drop

    reference, candidate = np.ones(n, bool), np.ones(n, bool)
    reference[:c] = False
    candidate[c:c + b] = False
    return 100 * paired_drop(reference, candidate).high


def chance_within(bound: float, n: int, lost: float, gained: float, cache: dict) -> float:
    """P(upper bound <= ``bound`` points) for a variant losing / gaining each of ``n`` images at these rates."""
    def log_pmf(b: int, c: int) -> float:
        rest = 1.0 - lost - gained
        return (math.lgamma(n + 1) - math.lgamma(b + 1) - math.lgamma(c + 1) - math.lgamma(n - b - c + 1)
                + (b * math.log(lost) if b else 0.0) + (c * math.log(gained) if c else 0.0)
                + (n - b - c) * math.log(rest))

    def most(rate: float) -> int:  # far enough into the tail that what is left is negligible
        return 0 if rate == 0 else int(n * rate + 12 * math.sqrt(n * rate) + 12)

    total = 0.0
    for b in range(most(lost) + 1):
        for c in range(most(gained) + 1):
            p = math.exp(log_pmf(b, c))
            if p < 1e-12:
                continue
            key = (b, c, n)
            if key not in cache:
                cache[key] = upper_bound(b, c, n)
            total += p * (cache[key] <= bound)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bound", type=float, default=1.0, help="the goal's upper bound, in points")
    ap.add_argument("--n", type=int, nargs="+", default=[500, 1000, 2000, 5000], help="test-set sizes")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cache: dict = {}
    table = {f"{b} lost": {f"{c} gained": round(upper_bound(b, c, 500), 3) for c in range(5)} for b in range(6)}
    print("paired 95 % upper bound (points) on 500 images, by images lost (rows) and gained (columns):")
    for row, cells in table.items():
        print(f"  {row:>7}: " + "  ".join(f"{v:+.2f}" for v in cells.values()))
    chances = []
    for lost, gained in RATES:
        per_n = {str(n): round(chance_within(args.bound, n, lost, gained, cache), 4) for n in args.n}
        chances.append({"lost_rate": lost, "gained_rate": gained, "true_drop_points": round(100 * (lost - gained), 3),
                        "discordant_rate": lost + gained, "chance_within_bound": per_n})
        print(f"lost {100 * lost:.1f} % gained {100 * gained:.1f} % of images (true drop "
              f"{100 * (lost - gained):+.1f} pt): P(upper bound <= {args.bound} pt) "
              + ", ".join(f"{p:.2f} on {n}" for n, p in per_n.items()))
    result = {"bound_points": args.bound, "interval": "paired_drop: Tango score interval, continuity 0.5, 95 %",
              "upper_bound_on_500": table, "chances": chances}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
