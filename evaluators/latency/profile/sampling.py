"""Which configs a profile measures: spread over the space, or around a run's front.

:func:`sample_configs`: the space's presets, then a scrambled Sobol sequence over its
Optuna distributions, deduplicated. :func:`front_neighbours`: each front config moved by
one step of one knob, where a search actually decides.
"""

from __future__ import annotations

import random
from typing import Any

#: The seed of predictor-eval's held-out draw (another than any profile's).
EVAL_SEED = 777


def sample_configs(space: Any, n: int, seed: int = 0, presets: bool = True, exclude: set[str] = frozenset()) -> list:
    """Up to ``n`` distinct configs spread over ``space``: presets, then scrambled Sobol points."""
    from optuna.distributions import IntDistribution
    from scipy.stats import qmc

    dists = space.distributions()
    names = sorted(dists)
    out, seen = [], set(exclude)

    def add(config) -> None:
        key = config.to_json(sort_keys=True)
        if key not in seen and len(out) < n:
            seen.add(key)
            out.append(config)

    if presets:
        for c in space.presets():
            add(c)
    if not names:
        return out
    sobol = qmc.Sobol(len(names), scramble=True, seed=seed)
    tries = 0
    while len(out) < n and tries < 8 * n + 64:
        for u in sobol.random(64):
            params = {}
            for name, x in zip(names, u):
                d = dists[name]
                if isinstance(d, IntDistribution):
                    params[name] = min(d.high, d.low + int(x * (d.high - d.low + 1)))
                else:
                    params[name] = d.choices[min(len(d.choices) - 1, int(x * len(d.choices)))]
            add(space.config_from_params(params))
            tries += 1
    return out


def front_neighbours(space: Any, front: list, n: int, seed: int = EVAL_SEED, exclude: set[str] = frozenset()) -> list:
    """Up to ``n`` distinct configs one knob step away from a ``front`` config (seeded order)."""
    from optuna.distributions import IntDistribution

    dists = space.distributions()
    pool, seen = [], set(exclude) | {c.to_json(sort_keys=True) for c in front}
    for config in front:
        params = space.params_for(config)
        for name, value in params.items():
            d = dists.get(name)
            if d is None:
                continue
            values = list(range(d.low, d.high + 1)) if isinstance(d, IntDistribution) else list(d.choices)
            i = values.index(value) if value in values else None
            for j in ([] if i is None else (i - 1, i + 1)):
                if 0 <= j < len(values):
                    c = space.config_from_params({**params, name: values[j]})
                    key = c.to_json(sort_keys=True)
                    if key not in seen:
                        seen.add(key)
                        pool.append(c)
    random.Random(seed).shuffle(pool)
    return pool[:n]
